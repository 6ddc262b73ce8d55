"""The time an epoch will take, from a few real optimizer steps of the configured trainer on a sample of the rows."""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

MEASURED_STEPS = 3  # the first one warms up (kernel choice, allocations) and is not timed


@dataclass(frozen=True)
class Measured:
    """A few real optimizer steps on sampled rows: seconds per step and non-padding tokens per second."""

    sampled_rows: int
    steps: int
    seconds_per_step: float
    tokens_per_s: float


@dataclass(frozen=True)
class TimeEstimate(Measured):
    """The measured steps scaled to an epoch and to the whole run."""

    steps_per_epoch: int
    epoch_tokens: int
    epoch_seconds: float
    run_seconds: float
    run: str  # what the run trains for, in words: "N steps" or "N epochs"


def timed_recipe(recipe: Recipe) -> Recipe:
    """The recipe for MEASURED_STEPS steps: no warmup, checkpoint, log lines or logger; never a resume."""
    timed = recipe.model_copy(deep=True)
    timed.training.max_steps = MEASURED_STEPS
    timed.training.warmup_steps = 0
    timed.training.save_steps = 10**9  # never a checkpoint
    timed.training.logging_steps = 10**9
    timed.training.report_to = "none"
    timed.training.resume = None
    return timed


def measure_steps(recipe: Recipe, model: Any, tokenizer: Any, splits: Any, kept: list[int]) -> Measured:
    """Seconds per optimizer step and non-padding tokens per second over steps 2..MEASURED_STEPS, one process, on
    a seeded sample of the rows that keep a trained token (`kept`)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    from llm_tune.data.formats import Splits
    from llm_tune.train.trainer import build_trainer

    t = recipe.training
    timed = timed_recipe(recipe)
    wanted = t.per_device_train_batch_size * t.gradient_accumulation_steps * MEASURED_STEPS
    picked = sorted(random.Random(t.seed).sample(kept, min(wanted, len(kept))))
    sample = Splits(splits.train.select(picked), None, splits.labels)
    marks: list[tuple[float, int]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    with tempfile.TemporaryDirectory(prefix="llm_tune-doctor-") as scratch:
        trainer = build_trainer(timed, model, tokenizer, sample, RunFolder(Path(scratch)))
        trainer.remove_callback(ProgressCallback)  # the report is the output: no bar, no loss lines
        trainer.add_callback(StepClock())
        trainer.train()
    (start, seen), (end, last) = marks[0], marks[-1]
    seconds = (end - start) / max(len(marks) - 1, 1)
    tokens_per_s = (last - seen) / (end - start) if end > start else 0.0
    return Measured(sampled_rows=len(picked), steps=len(marks), seconds_per_step=seconds, tokens_per_s=tokens_per_s)


def epoch_time(measured: Measured, recipe: Recipe, rows: int, epoch_tokens: int) -> TimeEstimate:
    """An epoch's seconds at the measured tokens per second (steps of other lengths scale by their tokens), and the
    whole run's: max_steps steps, or num_train_epochs epochs."""
    t = recipe.training
    steps = max(1, math.ceil(rows / (t.per_device_train_batch_size * t.gradient_accumulation_steps)))
    rate = measured.tokens_per_s
    epoch = epoch_tokens / rate if rate else measured.seconds_per_step * steps
    run = epoch * (t.max_steps / steps if t.max_steps > 0 else t.num_train_epochs)
    return TimeEstimate(
        **vars(measured),
        steps_per_epoch=steps,
        epoch_tokens=epoch_tokens,
        epoch_seconds=epoch,
        run_seconds=run,
        run=f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.num_train_epochs:g} epochs",
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
