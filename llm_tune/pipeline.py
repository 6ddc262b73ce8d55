"""The application layer: one run, top to bottom.

recipe -> task -> prepare (tokenizer, data) -> model + strategy -> trainer -> train -> evaluate -> save -> report
-> export. What differs between kinds of runs is the task's (llm_tune/tasks/); `train/` only trains. This module
decides what every run does before and after, and never asks which kind of run it drives."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_tune.console import WARNINGS, is_main_process, say
from llm_tune.errors import UserError
from llm_tune.extras import installed, missing
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, write_json
from llm_tune.tasks import Task, task_for
from llm_tune.tasks.base import EVAL_METRICS, Learned, Prepared


def train(recipe: Recipe, callbacks: list[Any] = ()) -> dict[str, Any]:
    """Train the recipe into its output_dir; `callbacks` (TrainerCallbacks) watch the run (a sweep's pruning)."""
    out = RunFolder(Path(recipe.output_dir))
    with out.lock():  # a second run into the same folder is refused while this one lives
        return _train(task_for(recipe), out, callbacks)


def _train(task: Task, out: RunFolder, callbacks: list[Any]) -> dict[str, Any]:
    from llm_tune.train.monitor import early_stop_summary
    from llm_tune.train.progress import run_summary, use_progress

    prepared = task.prepare()  # the resolved recipe, tokenizer and data: before anything is written
    recipe, existed = prepared.recipe, out.root.exists()  # the trainer creates its checkpoints folder there
    resume_from = _resume_point(recipe, out)
    # The arguments (and with them the process group and the DeepSpeed/FSDP settings) before the model, so that
    # ZeRO-3 builds it sharded and FSDP loads it once in CPU memory (train/trainer.py: training_arguments).
    args = task.arguments(prepared, out)
    model, (trainable, total) = task.model(prepared)
    with _nothing_left_on_error(out, existed):  # the trainer makes its folder; a mistake found now leaves none
        trainer = _trainer(task, prepared, model, args, out)
        step0 = task.before_training(trainer, prepared) if resume_from is None else None  # step 0 not behind it
    for callback in callbacks:
        trainer.add_callback(callback)
    use_progress(trainer, recipe.training.progress_every_s)
    run_summary(recipe, trainer, prepared.splits, trainable, total, task.describe())
    _prepare_output_dir(out, recipe, task.describe(), replacing=existed)
    if step0 is not None and trainer.eval_dataset is not None:  # logs (TensorBoard): after the folder is in place
        _step_zero_evaluation(trainer, step0)
    started = time.perf_counter()
    result = _train_resumably(trainer, out, resume_from)
    metrics = _metrics(trainer, result, time.perf_counter() - started, trainable, total)
    metrics.update(early_stop_summary(trainer, recipe.training), **({"step0": step0} if step0 is not None else {}))
    metrics.update(_data_counts(trainer))
    # Collectives first, on every rank: the evaluation's forward passes gather a sharded model's weights, and
    # under FSDP FULL_STATE_DICT or ZeRO-3 saving gathers them from all ranks; a rank left out would hang the others.
    learned = task.after_training(trainer, prepared, out)
    metrics.update(learned.metrics)
    prepared.tokenizer.chat_template = prepared.stock_template  # exports carry the stock template: it renders alike
    _save_run(trainer, prepared, out, metrics, learned)
    trainer.accelerator.wait_for_everyone()
    if is_main_process():  # what is left reads the saved files and writes: rank 0's alone
        _finish(trainer, task, prepared.tokenizer, learned.applied(recipe), out, metrics)
    return metrics


def _trainer(task: Task, prepared: Prepared, model: Any, args: Any, out: RunFolder) -> Any:
    trainer = task.trainer(prepared, model, args, out)  # tokenizes (main, then cached)
    if not prepared.recipe.data.streaming and len(trainer.train_dataset) == 0:
        raise UserError(
            f"{prepared.recipe.data.train_label}: no row keeps a trained token after truncation; raise data.max_length"
        )
    return trainer


def _resume_point(recipe: Recipe, out: RunFolder) -> str | None:
    """The checkpoint this run resumes from, or None when it starts at step 0 (no training.resume, or auto with no
    complete checkpoint yet); a resume that would not continue the same training is refused first."""
    from llm_tune.train.checkpoints import check_resumable, resolve_resume

    if recipe.training.resume is None:
        return None
    if out.is_run():
        check_resumable(out, recipe)
    return resolve_resume(recipe.training.resume, out.checkpoints)


@contextlib.contextmanager
def _nothing_left_on_error(out: RunFolder, existed: bool) -> Iterator[None]:
    """A UserError inside removes the run folder the block created (rank 0's to remove)."""
    try:
        yield
    except UserError:
        if not existed and is_main_process():
            shutil.rmtree(out.root, ignore_errors=True)
        raise


def _step_zero_evaluation(trainer: Any, step0: dict[str, Any]) -> None:
    """The validation scores before the first step, into step0 (TRL's names)."""
    scores = trainer.evaluate()
    step0.update({k: v for k, v in scores.items() if k in EVAL_METRICS})
    say("step 0    validation: " + ", ".join(f"{k} {v:.6g}" for k, v in scores.items() if k in EVAL_METRICS))


def _prepare_output_dir(out: RunFolder, recipe: Recipe, kind: str, replacing: bool) -> None:
    """A new run replaces a finished one in the same folder; resuming keeps it, less any half-written checkpoint."""
    from llm_tune.report.environment import environment
    from llm_tune.train.checkpoints import discard_incomplete

    if not is_main_process():
        return
    if recipe.training.resume is None and replacing:
        say(f"{out.root} exists: replacing the previous run there")
        shutil.rmtree(out.root)
    if recipe.training.resume is not None:
        discard_incomplete(out.checkpoints)
    out.root.mkdir(parents=True, exist_ok=True)
    WARNINGS.write_to(out.root / "warnings.log")  # the warnings so far, then each new one as it comes
    out.write_recipe(recipe)
    write_json(out.environment, environment(recipe, kind))


def _train_resumably(trainer: Any, out: RunFolder, resume_from: str | None) -> Any:
    """trainer.train(), with checkpoints marked complete and a signal turned into a checkpoint and a clean exit."""
    from llm_tune.train.checkpoints import completion_marker
    from llm_tune.train.interrupt import GracefulStop

    trainer.add_callback(completion_marker())
    with GracefulStop() as stop:
        trainer.add_callback(stop.callback())
        result = trainer.train(resume_from_checkpoint=resume_from)
    stop.exit_if_stopped(out.checkpoints)
    return result


def _metrics(trainer: Any, result: Any, runtime: float, trainable: int, total: int) -> dict[str, Any]:
    import torch

    counted = trainer.args.include_num_input_tokens_seen not in ("no", False)  # preference batches may carry none
    tokens = int(trainer.state.num_input_tokens_seen) if counted else None
    # A resumed run restores the count of the steps it did not train: the rate is over what this run trained in
    # its runtime (the Trainer notes the restored count when it starts training).
    run_tokens = (
        tokens - int(getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0) if tokens is not None else None
    )
    metrics = {
        "train_loss": result.training_loss,
        "train_runtime_s": round(runtime, 3),
        "train_steps": trainer.state.global_step,
        "train_examples": _examples(trainer),
        "train_tokens": tokens,
        "run_tokens": run_tokens,
        "tokens_per_s": round(run_tokens / runtime, 2) if run_tokens is not None and runtime else None,
        "trainable_params": trainable,
        "total_params": total,
    }
    if torch.cuda.is_available():  # rank 0's peak GPU memory, model loading included
        metrics["cuda_max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return metrics


def _examples(trainer: Any) -> int:
    """Rows trained on, repeats counted: whole epochs of the rows an epoch trains (a mixture's drawn rows, not the
    rows loaded), then the current epoch's steps x the global batch; a stream (no length): steps x global batch."""
    import math

    args, state = trainer.args, trainer.state
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if not hasattr(trainer.train_dataset, "__len__"):
        return state.global_step * batch
    mixture = getattr(trainer, "mixture", None)
    rows = sum(share.epoch_rows for share in mixture) if mixture else len(trainer.train_dataset)
    per_epoch = max(1, math.ceil(rows / batch))
    epochs, steps = divmod(state.global_step, per_epoch)
    return epochs * rows + min(steps * batch, rows)


def _data_counts(trainer: Any) -> dict[str, Any]:
    """A stream's counts (what it read, skipped and cut) and a mixture's shares (each source's rows, tokens and
    epoch share), for metrics.json."""
    counts: dict[str, Any] = {}
    if stream := getattr(trainer.train_dataset, "counts", None):
        counts["streaming"] = dataclasses.asdict(stream)
    if mixture := getattr(trainer, "mixture", None):
        counts["mixture"] = [dataclasses.asdict(share) for share in mixture]
    return counts


def _save_run(trainer: Any, prepared: Prepared, out: RunFolder, metrics: dict[str, Any], learned: Learned) -> None:
    """Every rank calls save_model (a collective when the weights are sharded); the Trainer writes on rank 0 only,
    and the rest is rank 0's: the weights, tokenizer, state, metrics, and the recipe with what the run learned."""
    weights = out.weights(prepared.recipe)
    trainer.model.config.use_cache = True
    trainer.save_model(str(weights))
    if not is_main_process():
        return
    prepared.tokenizer.save_pretrained(str(weights))
    trainer.state.save_to_json(str(out.trainer_state))
    out.write_metrics(metrics)
    if learned.classification:  # fitted after training (thresholds, a temperature): recorded once
        out.write_recipe(learned.applied(prepared.recipe))


def _finish(trainer: Any, task: Task, tokenizer: Any, recipe: Recipe, out: RunFolder, metrics: dict[str, Any]) -> None:
    """A few greedy samples of a text generator (a sharded model has its weights on every rank, not here:
    skipped), report.html from what the run folder now holds, the export, and the closing lines."""
    from llm_tune.report.page import write_run_report
    from llm_tune.train.progress import run_ending

    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if task.writes_samples and not sharded:
        from llm_tune.generation.samples import write_samples

        write_samples(trainer.model, tokenizer, recipe, out.samples)
    if installed("matplotlib"):  # an optional extra: the run is complete without its page
        say(f"report written to {write_run_report(out.root)}")
    else:
        say(
            f"report.html not written: {missing('matplotlib', 'the run report')}, then python -m llm_tune report {out.root}"
        )
    if recipe.export is not None:
        from llm_tune.export.exporter import export_after_training

        export_after_training(out.root, recipe)
    run_ending(out, metrics)
