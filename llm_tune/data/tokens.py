"""Rows to the token sequences TRL's SFTTrainer trains on, computed once, in batches.

TRL 1.16 tokenizes one row at a time (two chat-template calls per prompt/completion row), then builds labels,
truncates and drops fully masked rows in three more passes, and drops those rows without a count. Here the same
sequences come from batched calls (the fast tokenizer encodes a batch in parallel), in one pass, with the lengths
before truncation kept for the truncation count and `doctor`. `tests/test_data_tokens.py` checks the result equals
TRL's own preparation, token for token, for every row shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # the label of a token that does not train (transformers' and TRL's convention)
RENDERED = ("prompt", "completion", "messages", "text", "label")  # what data/formats.py renders a row into
ROWS_PER_PROCESS = 20_000  # below this a worker process costs more than it saves (bench/data.py)


@dataclass(frozen=True)
class Tokenized:
    """A split as input_ids/labels, truncated to max_length (unless packing), and what that did to it."""

    dataset: Dataset
    rows: int  # rows in, before any was dropped
    truncated: int  # rows longer than max_length
    emptied: int  # rows left without a trained token by truncation (dropped)
    lengths: list[int]  # tokens per row before truncation, in row order


def tokenize_sft(
    split: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    completion_only: bool,
    assistant_only: bool,
    max_length: int | None,
    packing: bool,
    cut_prompt: Callable[[list[int]], list[int]] | None = None,
) -> Tokenized:
    """Prompt/completion, messages or text rows as TRL's SFTTrainer prepares them (keep_start truncation).
    `cut_prompt` (a generate-head classifier): prompt/completion rows lose the start of their prompt instead, as
    the function cuts it, so training sees the tokens that eval and predict score; the answer stays whole."""

    encode = partial(encode_rows, tokenizer=tokenizer, completion_only=completion_only, assistant_only=assistant_only,
                     max_length=None if packing else max_length, cut_prompt=cut_prompt)  # fmt: skip
    workers = min(os.cpu_count() or 1, len(split) // ROWS_PER_PROCESS) or None
    rendered = [c for c in split.column_names if c in RENDERED]  # others pass through (doctor's row numbers)
    done = split.map(encode, batched=True, remove_columns=rendered, num_proc=workers, desc="Tokenizing")
    facts = done.select_columns(["length", "trains"]).to_dict()
    dataset = done.remove_columns(["length", "trains"])
    keep = [i for i, trains in enumerate(facts["trains"]) if trains]
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    lengths = facts["length"]
    over = sum(n > max_length for n in lengths) if max_length is not None and not packing else 0
    return Tokenized(dataset, len(split), over, len(done) - len(keep), lengths)


def encode_rows(
    batch: dict[str, list[Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    completion_only: bool,
    assistant_only: bool,
    max_length: int | None,
    cut_prompt: Callable[[list[int]], list[int]] | None = None,
) -> dict[str, list[Any]]:
    """A batch of rendered rows of one shape as input_ids/labels cut to `max_length` (None: whole, as packing wants),
    with each row's length before the cut and whether it keeps a trained token (a streamed chunk too)."""
    ids, labels, prompt_ends = _encode(batch, tokenizer, completion_only, assistant_only)
    lengths = [len(row) for row in ids]
    if cut_prompt is not None:
        drops = [end - len(cut_prompt(row[:end])) for row, end in zip(ids, prompt_ends)]
        ids, labels = [row[d:] for row, d in zip(ids, drops)], [row[d:] for row, d in zip(labels, drops)]
    if max_length is not None:
        ids, labels = [row[:max_length] for row in ids], [row[:max_length] for row in labels]
    trains = [any(x != IGNORE for x in row) for row in labels]
    return {"input_ids": ids, "labels": labels, "length": lengths, "trains": trains}


def _encode(
    batch: dict[str, list[Any]], tokenizer: Any, completion_only: bool, assistant_only: bool
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Token ids, labels (IGNORE where a token does not train) and where each prompt ends (0 for rows without
    one) for a batch of rows of one shape."""
    if "prompt" in batch:
        prompts, completions = batch["prompt"], batch["completion"]
        if isinstance(prompts[0], list):  # conversational
            prompt_ids = _chat(tokenizer, prompts, add_generation_prompt=True)["input_ids"]
            full = _chat(tokenizer, [p + c for p, c in zip(prompts, completions)],
                         return_assistant_tokens_mask=assistant_only)  # fmt: skip
        else:
            eos = tokenizer.eos_token
            ends = [c if c.endswith(eos) else c + eos for c in completions]
            prompt_ids = tokenizer(prompts)["input_ids"]
            full = tokenizer([p + c for p, c in zip(prompts, ends)])
        ids = full["input_ids"]
        ends = [_common_prefix(p, f) for p, f in zip(prompt_ids, ids)]
        labels = [[IGNORE] * (e if completion_only else 0) + row[e if completion_only else 0 :]
                  for e, row in zip(ends, ids)]  # fmt: skip
        if assistant_only:
            labels = _masked(labels, full["assistant_masks"])
        return ids, labels, ends
    if "messages" in batch:
        done = _chat(tokenizer, batch["messages"], return_assistant_tokens_mask=assistant_only)
        ids = done["input_ids"]
        labels = _masked(ids, done["assistant_masks"]) if assistant_only else [list(row) for row in ids]
        return ids, labels, [0] * len(ids)
    eos = tokenizer.eos_token
    ids = tokenizer([t if t.endswith(eos) else t + eos for t in batch["text"]])["input_ids"]
    return ids, [list(row) for row in ids], [0] * len(ids)


def _masked(labels: list[list[int]], masks: list[list[int]]) -> list[list[int]]:
    return [[t if m else IGNORE for t, m in zip(row, mask)] for row, mask in zip(labels, masks)]


def _chat(tokenizer: Any, conversations: list[Any], **kwargs: Any) -> dict[str, list[Any]]:
    return tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True, **kwargs)


def _common_prefix(ids: list[int], other: list[int]) -> int:
    """Where the completion starts: the tokens the prompt alone and prompt+completion share (TRL's rule)."""
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


def truncation_note(name: str, tokenized: Tokenized, max_length: int) -> str:
    """What truncation did to a split, for the run's opening lines ('' when nothing)."""
    said = [over_length_note(name, tokenized.truncated, tokenized.rows, max_length)] if tokenized.truncated else []
    if tokenized.emptied:
        said.append(f"{name}: {tokenized.emptied} rows keep no trained token after truncation to data.max_length="
                    f"{max_length} and are left out")  # fmt: skip
    return "; ".join(said)


def over_length_note(name: str, over: int, rows: int, max_length: int) -> str:
    return f"{name}: {over} of {rows} rows are longer than data.max_length={max_length} and are truncated"
