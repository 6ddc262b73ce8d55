"""Console output from the main process only (rank 0 under accelerate or torchrun)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Libraries whose logs the user can do nothing about (deprecations, load reports, kernel fallbacks).
_CHATTY = ("transformers", "datasets", "accelerate", "trl", "peft", "bitsandbytes", "torch", "huggingface_hub")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


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
    where = f"rank {rank()}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
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
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=rf"({'|'.join(_CHATTY)})(\.|$)")
