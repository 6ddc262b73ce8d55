"""How a user turn and its answer become a prompt and a completion, with the recipe's system prompt: the one
rendering that SFT, classification and preference rows share."""

from __future__ import annotations

from typing import Any


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The messages with the recipe's system prompt first (unless they bring their own)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    # "" is an empty system turn: the template then adds no default system prompt of its own.
    if system is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def instruction_pair(user: str, answer: str, system: str | None, conversational: bool) -> dict[str, Any]:
    """A user turn and its answer as TRL's prompt/completion: chat turns under a chat template, else the
    alpaca layout (what a model without a template is trained and asked with)."""
    if conversational:
        prompt = with_system([{"role": "user", "content": user}], system)
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}
    header = f"{system}\n\n" if system else ""
    return {"prompt": f"{header}### Instruction:\n{user}\n\n### Response:\n", "completion": answer}
