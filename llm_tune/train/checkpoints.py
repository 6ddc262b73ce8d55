"""Checkpoints under OUTPUT_DIR/checkpoints: marking them complete as the Trainer saves them, which one a run
resumes from, removing half-written ones. Which are complete is the run folder's to say (llm_tune.run_folder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llm_tune.console import is_main_process, say
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import COMPLETE, RunFolder, checkpoint_folders, is_complete, latest_complete, write_json


def mark_complete(folder: Path, step: int) -> None:
    files = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE and not p.name.startswith(f".{COMPLETE}")
    }
    write_json(folder / COMPLETE, {"step": step, "files": files})


def resolve_resume(resume: str | None, checkpoints: Path) -> str | None:
    """The checkpoint folder to resume from, or None to start at step 0."""
    if resume is None:
        return None
    if resume == "auto":
        latest = latest_complete(checkpoints)
        if latest is None:
            say(f"training.resume=auto: no complete checkpoint in {checkpoints}; starting from step 0")
            return None
        say(f"training.resume=auto: resuming from {latest}")
        return str(latest)
    folder = Path(resume)
    if not is_complete(folder):
        raise UserError(
            f"training.resume: {folder} is not a complete checkpoint (no valid {COMPLETE}: its save was"
            " interrupted, or it was not written by llm_tune); use training.resume=auto to take the latest complete one"
        )
    say(f"training.resume: resuming from {folder}")
    return str(folder)


def discard_incomplete(checkpoints: Path) -> None:
    """Remove half-written checkpoints, so the run never resumes from one and re-saving a step starts clean."""
    if not is_main_process():
        return
    for folder in checkpoint_folders(checkpoints):
        if not is_complete(folder):
            say(f"removing {folder}: its save did not finish")
            shutil.rmtree(folder, ignore_errors=True)


def completion_marker() -> Any:
    """A TrainerCallback that marks each checkpoint complete once every rank has written its part."""
    from transformers import TrainerCallback

    class CompletionMarker(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            from llm_tune.ranks import barrier

            # Under DeepSpeed and FSDP every rank writes shards; rank 0 must not vouch for them before they exist.
            barrier()
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    mark_complete(folder, state.global_step)
            barrier()

    return CompletionMarker()


# Keys a resumed run may change: they decide what is logged, saved or evaluated, or are fitted after training (a
# finished run's recipe records them), not what is trained.
RESUMABLE_CHANGES = (
    "training.resume", "training.logging_steps", "training.progress_every_s", "training.save_steps", "training.save_total_limit",
    "training.report_to", "training.eval_steps", "training.per_device_eval_batch_size", "output_dir", "export",
    "classification.temperature", "classification.thresholds",
    "data.skip_bad_rows",  # bad rows never train: skipping them on resume trains what the run would have
)  # fmt: skip
# The batch's layout may change while the global batch (per device x accumulation x processes) stays: the training
# order is a function of (seed, epoch, global batch), train/order.py.
LAYOUT = ("training.per_device_train_batch_size", "training.gradient_accumulation_steps")


def check_resumable(out: RunFolder, recipe: Recipe) -> None:
    """Refuse to resume with a recipe, or a process count, that would train differently from the run the
    checkpoints come from."""
    from llm_tune.ranks import world_size
    from llm_tune.recipe.diff import differences

    saved = out.read_recipe()
    processes = _saved_processes(out)
    allowed = RESUMABLE_CHANGES + (LAYOUT if processes is not None else ())
    changed = {key: values for key, values in differences(saved, recipe).items() if not key.startswith(allowed)}
    problems = [
        f"training.resume: {key} was {old!r} in the checkpointed run, now {new!r}"
        for key, (old, new) in changed.items()
    ]
    if processes is not None:
        before, now = _global_batch(saved, processes), _global_batch(recipe, world_size())
        if before[0] != now[0]:
            problems.append(
                f"training.resume: the global batch was {before[0]} ({before[1]}) in the checkpointed run, now {now[0]}"
                f" ({now[1]}): another order, and rows skipped that were never trained; keep per-device batch x"
                " accumulation x processes the same"
            )
    if problems:
        raise UserError(
            *problems,
            "training.resume: resuming would not continue the same training; restore those keys, or start a new run"
            " (drop training.resume, or choose another output_dir)",
        )


def _saved_processes(out: RunFolder) -> int | None:
    """The process count the checkpointed run trained with (its environment.json), None when unknown."""
    import json

    try:
        return int(json.loads(out.environment.read_text(encoding="utf-8"))["processes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _global_batch(recipe: Recipe, processes: int) -> tuple[int, str]:
    t = recipe.training
    size = t.per_device_train_batch_size * t.gradient_accumulation_steps * processes
    return (
        size,
        f"{t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation x {processes} processes",
    )
