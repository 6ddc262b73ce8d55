"""Console output from the main process only (rank 0 under accelerate or torchrun)."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Any

from llm_tune.ranks import rank, world_size

# Libraries whose logs the user can do nothing about (deprecations, load reports, kernel fallbacks).
_CHATTY = ("transformers", "datasets", "accelerate", "trl", "peft", "bitsandbytes", "torch", "huggingface_hub")


def is_main_process() -> bool:
    return rank() == 0


def say(message: str) -> None:
    if is_main_process():
        print(f"[llm_tune] {message}", flush=True)


def on_terminal() -> bool:
    """Progress bars for a person at a terminal; plain lines when stdout goes to a file or a pipe (a SLURM log, CI),
    where a bar's carriage returns make one endless line."""
    return sys.stdout.isatty()


def fail(lines: list[str]) -> None:
    """A user's mistake: one line each on stderr (every rank's error is its own, so all ranks may print)."""
    where = f"rank {rank()}: " if world_size() > 1 else ""
    for line in lines:
        print(f"error: {where}{line}", file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Silence what the libraries say that a user cannot act on; errors still show, and llm_tune's own lines say
    what matters. Called before any of them is imported, since several read their verbosity at import.
    `--verbose` skips this."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # LOAD REPORTs, deprecation notes
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # map/filter bars of a few ms each
    if not on_terminal():  # transformers' and the Hub's bars ("Loading weights") read this at import
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    keep_warnings()


# Warnings known to say nothing about a run's result (deprecations inside the libraries, notes on their own
# defaults): kept in warnings.log, not shown. Matched on the category and the start of the message.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    ("DeprecationWarning", r"`torch\.jit\.script(_method)?` is deprecated"),
    ("FutureWarning", r"The `'keep_end'` truncation mode is deprecated"),
    ("UserWarning", r"None of the inputs have requires_grad=True"),  # activation checkpointing over frozen inputs
    # transformers 5 renamed these; TRL and the Trainer still read the old names internally.
    ("FutureWarning", r"`(is_)?gradient_checkpointing` is deprecated and will be removed in v6"),
)


class WarningLog:
    """Every warning the process raises, one entry per distinct (category, message) with its count and origin.
    Known noise is only kept; anything else is also shown once on stderr. Until the run folder exists the entries
    wait in memory; `write_to` then keeps OUTPUT_DIR/warnings.log up to date."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self.path: Any = None
        self.shown = 0

    def show(
        self, message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        text = str(message).strip()
        key = (category.__name__, text)
        if key in self.entries:
            self.entries[key]["count"] += 1
            return
        noise = any(category.__name__ == name and re.match(pattern, text) for name, pattern in KNOWN_NOISE)
        self.entries[key] = {"category": category.__name__, "message": text, "where": f"{filename}:{lineno}",
                             "count": 1, "shown": not noise}  # fmt: skip
        if not noise and is_main_process():
            self.shown += 1
            print(f"warning: {category.__name__}: {text} ({filename}:{lineno})", file=sys.stderr, flush=True)
        self._write()

    def write_to(self, path: Any) -> None:
        self.path = path
        self._write()

    def _write(self) -> None:
        if self.path is None or not is_main_process():
            return
        lines = [f"{e['category']} x{e['count']}{'' if e['shown'] else ' (known noise, not shown)'}: {e['message']}"
                 f" ({e['where']})" for e in self.entries.values()]  # fmt: skip
        self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def summary(self) -> str:
        total = sum(e["count"] for e in self.entries.values())
        return (f"{total} warnings ({len(self.entries)} distinct, {self.shown} shown above) kept in {self.path}"
                if self.path else f"{total} warnings")  # fmt: skip


WARNINGS = WarningLog()


def keep_warnings() -> None:
    """Route every warning through WARNINGS: each occurrence counted (filter "always"), each distinct one kept."""
    warnings.simplefilter("always")
    warnings.showwarning = WARNINGS.show
