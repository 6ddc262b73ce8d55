"""Checkpoints under OUTPUT_DIR/checkpoints: marking them complete as the Trainer saves them, which one a run
resumes from, removing half-written ones. Which are complete is the run folder's to say (llm_tune.run_folder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llm_tune.console import is_main_process, say
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import COMPLETE, checkpoint_folders, is_complete, latest_complete, write_json


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


# Keys a resumed run may change: they decide what is logged, saved or evaluated, not what is trained.
RESUMABLE_CHANGES = (
    "training.resume", "training.logging_steps", "training.progress_every_s", "training.save_steps", "training.save_total_limit",
    "training.report_to", "training.eval_steps", "training.per_device_eval_batch_size", "output_dir", "export",
)  # fmt: skip


def check_resumable(saved: Recipe, recipe: Recipe) -> None:
    """Refuse to resume with a recipe that would train differently from the one the checkpoints come from."""
    from llm_tune.recipe.diff import differences

    changed = {
        key: values for key, values in differences(saved, recipe).items() if not key.startswith(RESUMABLE_CHANGES)
    }
    if changed:
        raise UserError(
            *(
                f"training.resume: {key} was {old!r} in the checkpointed run, now {new!r}"
                for key, (old, new) in changed.items()
            ),
            "training.resume: resuming would not continue the same training; restore those keys, or start a new run"
            " (drop training.resume, or choose another output_dir)",
        )
