"""Training rows streamed from a file larger than memory (data.streaming).

The file is read in passes. Each pass shuffles the rows through a buffer (`data.shuffle_buffer` rows, seeded by
(training.seed, pass)), checks, renders and tokenizes them in chunks with the same code as a loaded file
(`formats.row_problem`, `formats.render_row`, `tokens.encode_rows`), and, with length grouping, sorts windows of 50
global batches longest first (as transformers' length grouping sorts its megabatches). The passes join into one
endless sequence that training.max_steps ends: the Trainer sees one epoch, so when a run resumes it skips the batches
it already trained by reading the same sequence again, in whichever pass they fell.

The first HEAD_ROWS rows are checked before anything is written, like a loaded file; a bad row further on stops the
run naming its line (its checkpoints stay), or is counted under data.skip_bad_rows. What the stream did (rows read,
passes, bad rows, truncated rows) goes into metrics.json and the run's closing lines.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.data.formats import (
    Splits,
    judge_bad_rows,
    read_stream,
    render_row,
    row_problem,
    with_validation,
)
from llm_tune.data.tokens import encode_rows
from llm_tune.errors import UserError
from llm_tune.recipe.data import DataConfig

if TYPE_CHECKING:
    from datasets import IterableDataset

HEAD_ROWS = 1000  # checked before the run writes anything
CHUNK = 256  # rows rendered and tokenized together (the fast tokenizer encodes a batch in parallel)
WINDOW_BATCHES = 50  # length grouping sorts this many global batches at a time (transformers' megabatch)


@dataclass
class StreamCounts:
    """What the stream read in this process (a resumed run re-reads the rows it skips)."""

    file: str
    max_length: int
    rows_read: int = 0
    passes: int = 0
    bad_rows_skipped: int = 0
    truncated: int = 0  # rows longer than data.max_length, cut
    left_out: int = 0  # rows left without a trained token by the cut

    def line(self) -> str:
        return (
            f"{self.file}: streamed {self.rows_read:,} rows in {self.passes} pass{'es' if self.passes != 1 else ''};"
            f" {self.bad_rows_skipped:,} bad rows skipped, {self.truncated:,} truncated to data.max_length="
            f"{self.max_length}, {self.left_out:,} left out (no trained token after truncation)"
        )


@dataclass(frozen=True)
class StreamPlan:
    """Everything a pass needs: the recipe's data section, the tokenizer and how rows are ordered and cut."""

    cfg: DataConfig
    tokenizer: Any
    seed: int
    window: int | None  # rows per length-sorted window; None: no length grouping
    counts: StreamCounts


def load_stream_splits(cfg: DataConfig, tokenizer: Any) -> Splits:
    """Splits for a streamed run: train holds the stream's first rows (checked and rendered: what the opening lines
    describe; training reads the whole file through `streamed_train`), validation is loaded whole."""
    notes: list[str] = []
    conversational = tokenizer.chat_template is not None
    head = [render_row(row, cfg, None, conversational) for row in _checked_head(cfg, notes)]
    from datasets import Dataset

    return with_validation(Splits(Dataset.from_list(head), None, None, notes), cfg, conversational)


def _checked_head(cfg: DataConfig, notes: list[str]) -> list[dict[str, Any]]:
    """The good rows among the first HEAD_ROWS, checked as a loaded file is (bad ones an error, or counted and
    skipped), before anything is written."""
    spec = cfg.train_label
    if Path(spec).is_file() and Path(spec).stat().st_size == 0:
        raise UserError(f"{spec}: no rows (the file is empty)")
    good, bad, read = [], [], 0
    for where, row in itertools.islice(read_stream(spec), HEAD_ROWS):
        read += 1
        problem = row_problem(row, cfg, None)
        if problem:
            bad.append(f"{where}: {problem}")
        else:
            good.append(row)
    if read == 0:
        raise UserError(f"{spec}: no rows")
    if bad:
        judge_bad_rows(spec, bad, read, cfg, notes, of="the first ")
    if not good:
        raise UserError(f"{spec}: the first {read} rows are all bad; check data.format and data.fields")
    return good


def streamed_train(cfg: DataConfig, tokenizer: Any, seed: int, global_batch: int, grouped: bool) -> IterableDataset:
    """The training rows as TRL's SFTTrainer takes them (input_ids/labels, cut to data.max_length), streamed; the
    dataset's `counts` (StreamCounts) fill as it is read."""
    from datasets import Features, IterableDataset, Sequence, Value

    counts = StreamCounts(cfg.train_label, cfg.max_length)
    plan = StreamPlan(cfg, tokenizer, seed, WINDOW_BATCHES * global_batch if grouped else None, counts)
    features = Features({"input_ids": Sequence(Value("int64")), "labels": Sequence(Value("int64"))})
    stream = IterableDataset.from_generator(_token_rows, features=features, gen_kwargs={"plan": plan})
    stream.counts = counts  # type: ignore[attr-defined]
    return stream


def _token_rows(plan: StreamPlan) -> Iterator[dict[str, list[int]]]:
    """The endless sequence of passes. Each iteration starts from the first pass (TRL reads one row when it sets
    up; a resumed run reads what it skips), so the counts start again with it."""
    counts = plan.counts
    counts.rows_read = counts.passes = counts.bad_rows_skipped = counts.truncated = counts.left_out = 0
    for number in itertools.count():
        counts.passes = number + 1
        rows = _shuffled(_rendered(plan), plan.cfg.shuffle_buffer, random.Random(f"{plan.seed}:{number}"))
        tokenized = _tokenized(rows, plan)
        yielded = 0
        for row in _grouped(tokenized, plan.window) if plan.window else tokenized:
            yielded += 1
            yield row
        if yielded == 0:
            raise UserError(f"{counts.file}: no row to train on in a whole pass; see the rows skipped or left out")


def _rendered(plan: StreamPlan) -> Iterator[dict[str, Any]]:
    """Good rows in TRL's format; a bad one is counted (data.skip_bad_rows) or stops the run, naming it."""
    cfg, counts = plan.cfg, plan.counts
    conversational = plan.tokenizer.chat_template is not None
    for where, row in read_stream(counts.file):
        counts.rows_read += 1
        problem = row_problem(row, cfg, None)
        if problem is None:
            yield render_row(row, cfg, None, conversational)
        elif cfg.skip_bad_rows:
            counts.bad_rows_skipped += 1
        else:
            raise UserError(
                f"{where}: {problem}",
                f"{counts.file}: fix this row, or set data.skip_bad_rows: true to skip bad rows; the run stopped"
                " here and its checkpoints stay",
            )


def _shuffled(rows: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Buffer shuffling: once the buffer is full, each new row takes the place of one drawn at random."""
    buffer: list[Any] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        place = rng.randrange(size)
        yield buffer[place]
        buffer[place] = row
    rng.shuffle(buffer)
    yield from buffer


def _tokenized(rows: Iterable[dict[str, Any]], plan: StreamPlan) -> Iterator[dict[str, list[int]]]:
    cfg, counts = plan.cfg, plan.counts
    completion_only = not cfg.train_on_prompt
    assistant_only = cfg.format == "chat" and completion_only
    for chunk in _chunks(rows, CHUNK):
        batch = {key: [row[key] for row in chunk] for key in chunk[0]}
        done = encode_rows(batch, plan.tokenizer, completion_only=completion_only, assistant_only=assistant_only,
                           max_length=cfg.max_length)  # fmt: skip
        counts.truncated += sum(n > cfg.max_length for n in done["length"])
        for ids, labels, trains in zip(done["input_ids"], done["labels"], done["trains"]):
            if trains:
                yield {"input_ids": ids, "labels": labels}
            else:
                counts.left_out += 1


def _grouped(rows: Iterable[dict[str, list[int]]], window: int) -> Iterator[dict[str, list[int]]]:
    """Windows of `window` rows, each sorted longest first: consecutive batches hold rows of similar lengths."""
    for chunk in _chunks(rows, window):
        yield from sorted(chunk, key=lambda row: len(row["input_ids"]), reverse=True)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
