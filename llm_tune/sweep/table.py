"""A sweep's results: the ranked table on the console and OUTPUT_DIR/sweep.csv (one row per trial)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.run_folder import write_text_atomic
from llm_tune.sweep.space import Dimension


@dataclass
class Trial:
    number: int
    values: dict[str, Any]
    metric: float | None
    best_step: int | None
    runtime_s: float | None
    status: str  # finished | pruned
    folder: str


def ranked(trials: list[Trial], greater_is_better: bool) -> list[Trial]:
    """Best first; trials without a metric last."""

    def key(t: Trial) -> tuple[bool, float]:
        missing = t.metric is None or math.isnan(t.metric)
        return missing, 0.0 if missing else (-t.metric if greater_is_better else t.metric)

    return sorted(trials, key=key)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(width) for c, width in zip(row, widths)).rstrip(), flush=True)


def print_ranking(trials: list[Trial], space: list[Dimension], metric: str, greater_is_better: bool) -> None:
    header = ["rank", "trial", *(d.key for d in space), metric, "best_step", "runtime_s", "status"]
    rows = [
        [str(rank), f"trial-{t.number}", *(cell(t.values.get(d.key)) for d in space), cell(t.metric),
         cell(t.best_step), cell(t.runtime_s), t.status]
        for rank, t in enumerate(ranked(trials, greater_is_better), start=1)
    ]  # fmt: skip
    direction = "higher" if greater_is_better else "lower"
    print(f"sweep: {len(trials)} trials ranked by {metric} ({direction} is better)", flush=True)
    print_table(header, rows)


def write_csv(path: Path, trials: list[Trial], space: list[Dimension], metric: str) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *(d.key for d in space), metric, "best_step", "runtime_s", "status", "run_dir"])
    for t in sorted(trials, key=lambda t: t.number):
        writer.writerow([f"trial-{t.number}", *(t.values.get(d.key) for d in space), t.metric, t.best_step,
                         t.runtime_s, t.status, t.folder])  # fmt: skip
    write_text_atomic(path, buffer.getvalue())
    return path
