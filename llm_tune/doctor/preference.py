"""`doctor` for a preference recipe: the pairs as the run will read them (checked and counted, lengths of the prompt
and of prompt + answer), the reference in words, and the memory and time of real optimizer steps of the method's
TRL trainer. The memory is measured, not modelled: the first step trains on the longest rows (two answers a row
for DPO, the reference's forward pass, TRL's logits) and the process's peak is read after it; later steps on a
seeded sample give the time. tests/test_doctor.py checks the peak against a real run's."""

from __future__ import annotations

import random
import resource
import tempfile
from pathlib import Path
from typing import Any

from llm_tune.doctor.checks import Findings, length_stats, truncation_findings
from llm_tune.doctor.estimate import GIB, Device
from llm_tune.doctor.report import MeasuredMemory, PreferenceReport, publish
from llm_tune.doctor.timing import MEASURED_STEPS, TimeEstimate, epoch_time, timed_recipe
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

ANSWERS = ("chosen", "rejected", "completion")  # the answer columns of TRL's preference forms


def preference_doctor(recipe: Recipe, recipe_path: Path, json_path: Path | None, device: Device) -> PreferenceReport:
    from llm_tune.tasks import task_for

    found = Findings()
    task = task_for(recipe)
    prepared = task.prepare()
    recipe, tokenizer, splits = prepared.recipe, prepared.tokenizer, prepared.splits  # as the run resolves it
    model, (trainable, total) = task.model(prepared)
    parts = {name: s for name, s in (("train", splits.train), ("validation", splits.validation)) if s is not None}
    lengths = {name: _lengths(tokenizer, split) for name, split in parts.items()}
    max_length = recipe.data.max_length
    tokens = {name: length_stats([full for _, full in rows], max_length) for name, rows in lengths.items()}
    truncation_findings(tokens, found)
    memory, time = _measure(recipe, model, tokenizer, splits, [full for _, full in lengths["train"]], device)
    if memory.peak_bytes > device.memory_available:
        found.warnings.append(
            f"memory: the measured peak {memory.peak_bytes / GIB:.2f} GiB is more than the"
            f" {device.memory_available / GIB:.2f} GiB available now; lower training.per_device_train_batch_size or"
            " data.max_length, or set training.gradient_checkpointing: true"
        )
    report = PreferenceReport(
        recipe=str(recipe_path), model=recipe.model.name_or_path, strategy=recipe.strategy.kind,
        method=recipe.preference.method, reference=reference_in_words(recipe), trainable_params=trainable,
        total_params=total, device=device, rows={name: len(split) for name, split in parts.items()},
        notes=list(splits.notes),
        prompt_tokens={name: length_stats([p for p, _ in rows], max_length) for name, rows in lengths.items()},
        tokens=tokens, memory=memory, time=time, warnings=found.warnings, errors=found.errors,
    )  # fmt: skip
    from llm_tune.doctor.text import preference_lines

    publish(preference_lines(report), report.as_json(), json_path, found.errors)
    return report


def reference_in_words(recipe: Recipe) -> str:
    from llm_tune.recipe.methods import method_of

    method, source = method_of(recipe), recipe.model.from_run
    if not method.reference:
        return f"none: {method.name} is reference-free"
    if getattr(recipe.preference, "precompute_ref_log_probs", False):
        return "log-probabilities precomputed once before training (no reference model in memory during steps)"
    if source is not None and getattr(recipe.preference, "reference", "start") == "start":
        return f"the SFT policy of {source}: a frozen copy of its adapter ('ref'), or its full model loaded again"
    if recipe.adapter:
        return "the base model: the same weights with the adapter disabled (no second copy)"
    return "the starting model: a second full copy of the weights, frozen"


def _lengths(tokenizer: Any, split: Any) -> list[tuple[int, int]]:
    """(prompt tokens, prompt + longest answer tokens) per row, through the chat template as TRL renders them."""
    from llm_tune.data.prompts import prompt_ids

    answers = [key for key in ANSWERS if key in split.column_names]
    out = []
    for row in split:
        prompt = row["prompt"]
        longest = 0
        for key in answers:
            if isinstance(prompt, list):
                ids = tokenizer.apply_chat_template(prompt + row[key], tokenize=True, return_dict=True)["input_ids"]
            else:
                ids = tokenizer(prompt + row[key])["input_ids"]
            longest = max(longest, len(ids))
        out.append((len(prompt_ids(tokenizer, prompt)), longest))
    return out


def _measure(
    recipe: Recipe, model: Any, tokenizer: Any, splits: Any, lengths: list[int], device: Device
) -> tuple[MeasuredMemory, TimeEstimate]:
    """MEASURED_STEPS real optimizer steps, in order: the first on the longest rows (the memory peak, read after
    it), the others on a seeded sample (their time scales to an epoch)."""
    import time

    import torch
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    from llm_tune.data.formats import Splits
    from llm_tune.doctor.timing import Measured
    from llm_tune.preference.trainer import build_preference_trainer

    t = recipe.training
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    by_length = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    longest = by_length[:per_step]
    rest = [i for i in range(len(lengths)) if i not in set(longest)]
    sampled = random.Random(t.seed).sample(rest, min(per_step * (MEASURED_STEPS - 1), len(rest)))
    rows = longest + sampled
    marks: list[tuple[float, int]] = []
    peak: list[int] = []
    if device.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not peak:  # the longest rows' step
                cuda = device.device == "cuda"
                peak.append(torch.cuda.max_memory_allocated() if cuda else _peak_rss())
            marks.append((time.perf_counter(), state.global_step))

    with tempfile.TemporaryDirectory(prefix="llm_tune-doctor-") as scratch:
        timed = timed_recipe(recipe)
        sample = Splits(splits.train.select(rows), None, None)
        trainer = build_preference_trainer(timed, model, tokenizer, sample, RunFolder(Path(scratch)), ordered=True)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StepClock())
        trainer.train()
    (start, _), (end, _) = marks[0], marks[-1]
    # Seconds per step scale to an epoch's steps (a preference step's tokens are two answers a row, which the
    # trainers count differently or not at all).
    measured = Measured(sampled_rows=len(sampled), steps=len(marks),
                        seconds_per_step=(end - start) / max(len(marks) - 1, 1), tokens_per_s=0.0)  # fmt: skip
    where = "GPU memory allocated by torch" if device.device == "cuda" else "this process's peak resident memory"
    memory = MeasuredMemory(
        peak_bytes=peak[0], rows=len(longest), tokens=lengths[longest[0]] if longest else 0,
        how=f"{where}, through a real step on the {len(longest)} longest rows (weights, reference, optimizer,"
        " activations and logits as the trainer allocates them)",
    )  # fmt: skip
    return memory, epoch_time(measured, recipe, len(lengths), 0)


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
