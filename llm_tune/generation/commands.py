"""`generate` (answers to prompts, optionally beside the base model's) and `chat` (interactive, streamed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.generation.session import Session, base_session, locate, open_session, require_base

EXIT = "/exit"


def generate_command(
    path: Path, prompts: list[str], max_new_tokens: int, compare_base: bool, compare: Sequence[Path] = ()
) -> None:
    """Each prompt's answer; beside it the base model's (`compare_base`) and each other run's or export's
    (`compare`: e.g. the SFT run a DPO run started from), every one asked the prompt as its own run renders it."""
    _check_new_tokens(max_new_tokens)
    target = locate(path)
    others = [locate(other) for other in compare]  # every folder checked before any weights load
    if compare_base:
        require_base(target)
    session = open_session(target)
    sessions = [session] + ([base_session(session, target)] if compare_base else [])
    sessions += [replace(open_session(other), label=str(other.path)) for other in others]
    for text in prompts:
        print(f">>> {text}", flush=True)
        for who in sessions:
            answer = who.answer(who.prompt(text), max_new_tokens) or "(empty answer)"
            print(f"[{who.label}]\n{answer}" if len(sessions) > 1 else answer, flush=True)
        print(flush=True)


def chat_command(path: Path, max_new_tokens: int) -> None:
    """Multi-turn chat through the chat template, the reply streamed as it is generated. Reads lines from a
    terminal or a pipe; Ctrl-D (end of input) or /exit ends it."""
    from transformers import TextStreamer

    _check_new_tokens(max_new_tokens)
    target = locate(path)
    if target.recipe is not None and target.recipe.data.format == "completion":
        raise UserError(
            f"{path}: the run trained on raw text (data.format: completion), not on chat turns; use"
            " `python -m llm_tune generate` to continue a text"
        )
    session = open_session(target)
    if session.tokenizer.chat_template is None:
        raise UserError(
            f"{path}: the model has no chat template to keep a conversation in; use `python -m llm_tune generate`"
        )
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    streamer = TextStreamer(session.tokenizer, skip_prompt=True, skip_special_tokens=True)
    say(f"chat with {path} (Ctrl-D or {EXIT} to quit)")
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(flush=True)
            return
        if not interactive:
            print(line, flush=True)  # a piped line is not echoed by a terminal: show what was asked
        text = line.strip()
        if text == EXIT:
            return
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        ids = _fit(session, messages, max_new_tokens)
        print("assistant> ", end="", flush=True)
        messages.append({"role": "assistant", "content": session.answer(ids, max_new_tokens, streamer)})


def _fit(session: Session, messages: list[dict[str, str]], max_new_tokens: int) -> list[int]:
    """The conversation's prompt, dropping the oldest exchanges while it and the reply would not fit the model."""
    limit = getattr(session.model.config, "max_position_embeddings", None)
    while True:
        ids = session.conversation(messages)
        if limit is None or len(ids) + max_new_tokens <= limit or len(messages) <= 1:
            return ids
        del messages[:2]


def _check_new_tokens(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: must be at least 1, got {max_new_tokens}")
