"""The data checks: token lengths and truncation, which tokens train (rendered rows, EOS and pad), label balance,
duplicates and train/validation overlap. Each returns a JSON-able section plus its problems and risks."""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100
HEAVY_TRUNCATION = 0.05  # share of rows cut by max_length above which a run is at risk (answers lose their ends)
IMBALANCE = 3.0  # largest label over smallest label, in training rows
SHOWN_CHARS = 400  # an untrained part of a rendered row longer than this is shortened in the middle
EXAMPLES = 3


@dataclass
class Findings:
    """What a check found: errors stop the run before it starts, warnings are risks worth a look."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LengthStats:
    """Tokens per row of one split, and how many rows max_length truncates."""

    rows: int
    min: int
    median: float
    p95: int  # nearest-rank percentile
    max: int
    truncated: int
    max_length: int


def length_stats(lengths: list[int], max_length: int) -> LengthStats:
    ordered = sorted(lengths)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    over = sum(n > max_length for n in ordered)
    return LengthStats(rows=len(ordered), min=ordered[0], median=statistics.median(ordered), p95=p95,
                       max=ordered[-1], truncated=over, max_length=max_length)  # fmt: skip


def truncation_findings(stats: dict[str, LengthStats], found: Findings) -> None:
    for split, s in stats.items():
        if s.truncated and s.truncated / s.rows > HEAVY_TRUNCATION:
            found.warnings.append(
                f"{split}: {s.truncated} of {s.rows} rows ({100 * s.truncated / s.rows:.0f}%) are longer"
                f" than data.max_length={s.max_length} and lose their end (the longest has {s.max} tokens);"
                f" raise data.max_length or shorten the rows"
            )


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of trained tokens (label != -100) in a tokenized training row."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


def row_segments(tokenizer: Any, input_ids: list[int], spans: list[tuple[int, int]]) -> list[tuple[str, bool]]:
    """The row as (text, trained) pieces in order, long untrained pieces shortened in the middle."""
    pieces, at = [], 0
    for start, end in spans:
        pieces += [
            (_shorten(tokenizer.decode(input_ids[at:start])), False),
            (tokenizer.decode(input_ids[start:end]), True),
        ]
        at = end
    pieces.append((_shorten(tokenizer.decode(input_ids[at:])), False))
    return [(text, trained) for text, trained in pieces if text]


def marked(segments: list[tuple[str, bool]], visible_newlines: bool = False) -> str:
    """The row as text with each trained piece wrapped in [[...]]. With `visible_newlines` a line break inside a
    trained piece is written \\n before it breaks, so that a trained end-of-line (and the one after EOS) is seen."""

    def wrap(text: str) -> str:
        if visible_newlines:
            text = text.replace("\n", "\\n\n").removesuffix("\n")
        return f"[[{text}]]"

    return "".join(wrap(text) if trained else text for text, trained in segments)


def _shorten(text: str) -> str:
    if len(text) <= SHOWN_CHARS:
        return text
    half = SHOWN_CHARS // 2
    return f"{text[:half]}[... {len(text) - 2 * half} characters ...]{text[-half:]}"


def eos_findings(tokenizer: Any, rows: list[dict[str, Any]], truncated: set[int], found: Findings) -> dict[str, Any]:
    """Pad must not be EOS (it would be masked out of the labels) and every answer of a row that max_length keeps
    whole must end with a trained EOS (or the model never learns to stop)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    section: dict[str, Any] = {
        "eos": {"token": tokenizer.eos_token, "id": eos}, "pad": {"token": tokenizer.pad_token, "id": pad},
    }  # fmt: skip
    if pad is None or pad == eos:
        found.errors.append(
            f"tokenizer: the pad token {tokenizer.pad_token!r} is the EOS token, so EOS would be masked out of the"
            " labels; add a distinct pad token to the model's tokenizer (tokenizer.add_special_tokens)"
        )
    whitespace = {i for i in set().union(*(r["input_ids"] for r in rows)) if not tokenizer.decode([i]).strip()}
    checked = ended = 0
    missing: list[int] = []
    for row in rows:
        if row["row"] in truncated:
            continue
        for start, end in trained_spans(row["labels"]):
            last = end - 1
            while last > start and row["input_ids"][last] in whitespace:  # the template's newline after EOS
                last -= 1
            checked += 1
            if row["input_ids"][last] == eos:
                ended += 1
            elif len(missing) < EXAMPLES and row["row"] + 1 not in missing:
                missing.append(row["row"] + 1)
    section.update(answers_checked=checked, answers_ending_with_eos=ended)
    if checked > ended:
        found.errors.append(
            f"data.train: {checked - ended} of {checked} answers do not end with a trained EOS {tokenizer.eos_token!r}"
            f" (rows {', '.join(map(str, missing))}), so the model would not learn to stop; with data.format chat give"
            " a data.chat_template whose {% generation %} block ends with the end-of-turn token"
        )
    return section


def dropped_row_findings(kept: list[int], rows: int, prompt_lengths: dict[int, int], max_length: int,
                         found: Findings) -> int:  # fmt: skip
    """Rows TRL drops because truncation left no trained token: the data the user gave would silently not train."""
    dropped = sorted(set(range(rows)) - set(kept))
    if dropped:
        needed = max(prompt_lengths.get(i, max_length) for i in dropped) + 1
        shown = ", ".join(str(i + 1) for i in dropped[:EXAMPLES]) + (" ..." if len(dropped) > EXAMPLES else "")
        found.errors.append(
            f"data.train: {len(dropped)} of {rows} rows keep no trained token after truncation to"
            f" data.max_length={max_length} ({'rows' if len(dropped) > 1 else 'row'} {shown}: the prompt fills it);"
            " raise data.max_length to at least"
            f" {needed}, or shorten {'those prompts' if len(dropped) > 1 else 'that prompt'}"
        )
    return len(dropped)


def label_findings(train: list[str], validation: list[str] | None, labels: list[str], found: Findings) -> dict:
    """Rows per label in each split; a label no training row has cannot be learned."""
    counts = {"train": Counter(train), "validation": Counter(validation) if validation is not None else None}
    section = {split: {label: c[label] for label in labels} for split, c in counts.items() if c is not None}
    unseen = [label for label in labels if counts["train"][label] == 0]
    if unseen:
        where = " (validation has some)" if validation and any(counts["validation"][u] for u in unseen) else ""
        found.errors.append(
            f"data.train: no training row has the label {', '.join(map(repr, unseen))}{where}; add rows of it, or"
            " drop it from classification.labels"
        )
    present = [n for n in section["train"].values() if n]
    if len(present) > 1 and max(present) / min(present) >= IMBALANCE:
        largest = max(section["train"], key=section["train"].get)
        smallest = min((k for k, v in section["train"].items() if v), key=section["train"].get)
        found.warnings.append(
            f"data.train: labels are imbalanced: {largest!r} has {section['train'][largest]} rows, {smallest!r}"
            f" {section['train'][smallest]}; a classifier may learn to favour {largest!r} (balance the rows, or"
            " judge it by macro-F1)"
        )
    return section


def normalise(text: str) -> str:
    """Text compared for near duplicates: Unicode-folded, lower case, punctuation dropped, spacing collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def row_key(row: dict[str, Any], classification: bool) -> tuple[str, str]:
    """(text, label) of a rendered row: what a duplicate repeats. A classifier's text is its prompt alone."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"]), ""
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        prompt_text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        answer = completion if isinstance(completion, str) else "\n".join(m["content"] for m in completion)
        return (prompt_text, answer) if classification else (f"{prompt_text}\n{answer}", "")
    return row["text"], ""


@dataclass(frozen=True)
class DuplicateCounts:
    exact_duplicates: int
    near_duplicates: int  # the same text up to case, punctuation and spacing
    conflicting_labels: int  # texts that appear with more than one label


@dataclass(frozen=True)
class Duplicates:
    train: DuplicateCounts
    validation: DuplicateCounts | None = None  # None: no validation rows
    train_validation_overlap: int | None = None  # validation rows also in train (leakage)


def duplicate_findings(train: list[tuple[str, str]], validation: list[tuple[str, str]] | None,
                       found: Findings) -> Duplicates:  # fmt: skip
    """Exact and near (normalised) duplicates within each split, and validation rows also in train (leakage)."""
    counts: dict[str, DuplicateCounts] = {}
    for split, keys in (("train", train), ("validation", validation)):
        if keys is None:
            continue
        exact, near, conflicting, example = _duplicates(keys)
        counts[split] = DuplicateCounts(exact, near, conflicting)
        if exact or near:
            found.warnings.append(
                f"data.{split}: {exact} exact and {near} near-duplicate rows (same text up to case, punctuation and"
                f" spacing), e.g. {example!r}; they weigh more in training than the rest: remove the repeats"
            )
        if conflicting:
            found.warnings.append(f"data.{split}: {conflicting} texts appear with different labels; fix their labels")
    if validation is None:
        return Duplicates(counts["train"])
    seen = {normalise(text) for text, _ in train}
    leaked = [text for text, _ in validation if normalise(text) in seen]
    if leaked:
        found.warnings.append(
            f"data.validation: {len(leaked)} of {len(validation)} rows also appear in data.train (after"
            f" normalising), e.g. {_clip(leaked[0])!r}; validation scores overstate the model: remove them"
        )
    return Duplicates(counts["train"], counts["validation"], len(leaked))


def _duplicates(keys: list[tuple[str, str]]) -> tuple[int, int, int, str]:
    exact_seen: set[str] = set()
    near_seen: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    exact = near = 0
    example = ""
    for text, label in keys:
        norm = normalise(text)
        labels.setdefault(norm, set()).add(label)
        if text in exact_seen:
            exact += 1
            example = example or _clip(text)
        elif norm in near_seen:
            near += 1
            example = example or _clip(text)
        exact_seen.add(text)
        near_seen.setdefault(norm, text)
    conflicting = sum(len(v) > 1 for v in labels.values())
    return exact, near, conflicting, example


def _clip(text: str, size: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 3] + "..."
