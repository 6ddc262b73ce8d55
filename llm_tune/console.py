"""Console output from the main process only (rank 0 under accelerate or torchrun)."""

from __future__ import annotations

import os
import sys


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def say(message: str) -> None:
    if is_main_process():
        print(f"[llm_tune] {message}", flush=True)


def fail(lines: list[str]) -> None:
    """A user's mistake: one line each on stderr (every rank's error is its own, so all ranks may print)."""
    where = f"rank {rank()}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    for line in lines:
        print(f"error: {where}{line}", file=sys.stderr, flush=True)
