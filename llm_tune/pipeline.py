"""The application layer: one run, top to bottom.

recipe -> tokenizer -> data -> model + strategy -> trainer -> train -> evaluate -> save -> report -> export.
`train/` only trains; this module decides what a run does before and after. The preparation steps are public
because `doctor` runs them without training."""

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

# eval/metrics.json keys that metrics.json repeats as eval_KEY: single-label, multi_label and regression runs.
CALIBRATION_FILE = "calibration.json"  # temperature scaling's fit: ECE and reliability bins before and after
EVAL_SUMMARY = (
    "loss",
    "accuracy",
    "macro_f1",
    "micro_f1",
    "subset_accuracy",
    "pearson",
    "spearman",
    "mse",
    "mae",
    "ece",
)


def train(recipe: Recipe, callbacks: list[Any] = ()) -> dict[str, Any]:
    """Train the recipe into its output_dir; `callbacks` (TrainerCallbacks) watch the run (a sweep's pruning)."""
    out = RunFolder(Path(recipe.output_dir))
    with out.lock():  # a second run into the same folder is refused while this one lives
        return _train(recipe, out, callbacks)


def _train(recipe: Recipe, out: RunFolder, callbacks: list[Any]) -> dict[str, Any]:
    from llm_tune.preference.start import from_run_problems
    from llm_tune.train.monitor import early_stop_summary
    from llm_tune.train.progress import run_ending, run_summary, use_progress
    from llm_tune.train.trainer import build_trainer, training_arguments

    if problems := from_run_problems(recipe):  # model.from_run: checked before any weights load
        raise UserError(*problems)
    tokenizer, stock_template = training_tokenizer(recipe)
    splits = training_data(recipe, tokenizer)
    if recipe.training.resume is not None and out.is_run():
        from llm_tune.train.checkpoints import check_resumable

        check_resumable(out.read_recipe(), recipe)
    existed = out.root.exists()  # the trainer creates its checkpoints folder there
    # The arguments (and with them the process group and the DeepSpeed/FSDP settings) before the model, so that
    # ZeRO-3 builds it sharded and FSDP loads it once in CPU memory (train/trainer.py: training_arguments).
    preference = recipe.task == "preference"  # TRL's preference trainers make their own config
    args = None if preference else training_arguments(recipe, out, splits.validation is not None)
    model, (trainable, total) = training_model(recipe, tokenizer, splits.labels, splits.notes)
    with _nothing_left_on_error(out, existed):  # the trainer makes its folder; a mistake found now leaves none
        if preference:
            from llm_tune.preference.trainer import build_preference_trainer

            trainer = build_preference_trainer(recipe, model, tokenizer, splits, out)
        else:
            trainer = build_trainer(recipe, model, tokenizer, splits, out, args)  # tokenizes (main, then cached)
        if not recipe.data.streaming and len(trainer.train_dataset) == 0:
            raise UserError(
                f"{recipe.data.train_label}: no row keeps a trained token after truncation; raise data.max_length"
            )
    for callback in callbacks:
        trainer.add_callback(callback)
    use_progress(trainer, recipe.training.progress_every_s)

    run_summary(recipe, trainer, splits, trainable, total)
    step0 = _step_zero(trainer, recipe, out, existed)
    _prepare_output_dir(out, recipe, replacing=existed)
    if step0 is not None and trainer.eval_dataset is not None:  # logs (TensorBoard): after the folder is in place
        _step_zero_evaluation(trainer, step0)
    started = time.perf_counter()
    result = _train_resumably(trainer, recipe, out)
    metrics = _metrics(trainer, result, time.perf_counter() - started, trainable, total)
    metrics.update(early_stop_summary(trainer, recipe.training))
    if step0 is not None:
        metrics["step0"] = step0
    classifier_eval = recipe.is_classification and recipe.data.validation is not None
    by_source = {f"eval_{name}_loss" for name in splits.source_names.get("validation", [])}
    if splits.validation is not None and not classifier_eval:  # a classifier's file gets the full report below
        scores = _evaluation_at_the_end(trainer)
        metrics.update({k: v for k, v in scores.items() if k in EVAL_METRICS or k in by_source})
    if counts := getattr(trainer.train_dataset, "counts", None):  # a stream: what it read, skipped and cut
        metrics["streaming"] = dataclasses.asdict(counts)
    if getattr(trainer, "mixture", None):  # data.train as a list: each source's rows, tokens and epoch share
        metrics["mixture"] = [dataclasses.asdict(share) for share in trainer.mixture]
    tokenizer.chat_template = stock_template  # exports carry the stock template, which renders identically
    # Collectives first, on every rank: under FSDP FULL_STATE_DICT or ZeRO-3 saving gathers the weights from all
    # ranks, and a sharded model's forward pass gathers each block's; a rank left out would hang the others.
    _save_run(trainer, tokenizer, recipe, out, metrics)
    if classifier_eval:
        _evaluate_classifier(trainer.model, tokenizer, recipe, out, metrics)
    trainer.accelerator.wait_for_everyone()
    if not is_main_process():  # what is left reads the saved files and writes: rank 0's alone
        return metrics
    _report(trainer, tokenizer, recipe, out)
    if recipe.export is not None:
        from llm_tune.export.exporter import export_after_training

        export_after_training(out.root, recipe)
    run_ending(out, metrics)
    return metrics


# End-of-run evaluation values metrics.json keeps (TRL's names for preference runs).
EVAL_METRICS = (
    "eval_loss",
    "eval_accuracy",
    "eval_macro_f1",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
)


@contextlib.contextmanager
def _nothing_left_on_error(out: RunFolder, existed: bool) -> Iterator[None]:
    """A UserError inside removes the run folder the block created (rank 0's to remove)."""
    try:
        yield
    except UserError:
        if not existed and is_main_process():
            shutil.rmtree(out.root, ignore_errors=True)
        raise


def _step_zero(trainer: Any, recipe: Recipe, out: RunFolder, existed: bool) -> dict[str, Any] | None:
    """A preference run's step-0 gate (not on resume: step 0 is behind it); a failed gate leaves no run folder
    behind."""
    if recipe.task != "preference" or recipe.training.resume is not None:
        return None
    from llm_tune.preference.gate import check_step_zero

    with _nothing_left_on_error(out, existed):
        return check_step_zero(trainer, recipe)


def _evaluation_at_the_end(trainer: Any) -> dict[str, Any]:
    """The final model's validation scores: those of an evaluation the last step already ran (eval_steps dividing
    max_steps), else a new one. Not reused when the best checkpoint was loaded back: that is another model."""
    state = trainer.state
    last = next((entry for entry in reversed(state.log_history) if "eval_loss" in entry), {})
    if last.get("step") == state.global_step and not trainer.args.load_best_model_at_end:
        return last
    return trainer.evaluate()


def _step_zero_evaluation(trainer: Any, step0: dict[str, Any]) -> None:
    """The validation scores before the first step, into step0 (TRL's names)."""
    scores = trainer.evaluate()
    step0.update({k: v for k, v in scores.items() if k in EVAL_METRICS})
    say("step 0    validation: " + ", ".join(f"{k} {v:.6g}" for k, v in scores.items() if k in EVAL_METRICS))


def training_tokenizer(recipe: Recipe) -> tuple[Any, Any]:
    """The tokenizer to train with (a chat template with generation markers for assistant-only loss), and
    its stock chat template."""
    from llm_tune.data.chat_templates import training_chat_template
    from llm_tune.model.loading import load_tokenizer

    tokenizer = load_tokenizer(recipe.model)
    stock_template = tokenizer.chat_template
    if recipe.data.format == "chat" and not recipe.data.train_on_prompt:
        tokenizer.chat_template = training_chat_template(tokenizer, recipe.data.chat_template)
        if tokenizer.chat_template is None:
            raise UserError(
                "data.chat_template: the model's chat template has no {% generation %} markers and none is known;"
                " give a .jinja file with them, or set data.train_on_prompt: true"
            )
    return tokenizer, stock_template


def training_data(recipe: Recipe, tokenizer: Any) -> Any:
    from llm_tune.data.formats import load_splits

    if recipe.task == "preference":
        from llm_tune.data.preference import load_preference_splits

        return load_preference_splits(recipe.data, tokenizer, recipe.preference.method, recipe.training.seed)
    if recipe.data.streaming:  # the first rows now; the trainer streams the file (data/stream.py)
        from llm_tune.data.stream import load_stream_splits

        return load_stream_splits(recipe.data, tokenizer)
    classifying = recipe.reads_labels
    splits = load_splits(recipe.data, recipe.classification.labels if classifying else None, tokenizer)
    if classifying:
        from llm_tune.classification.problems import resolve_from_training_rows

        recipe.classification.labels = splits.labels  # the resolved recipe records the label set
        resolve_from_training_rows(recipe, splits.train)
    return splits


def training_model(
    recipe: Recipe, tokenizer: Any, labels: list[str] | None, notes: list[str]
) -> tuple[Any, tuple[int, int]]:
    """The base model with the strategy applied, and its (trainable, total) parameter counts; what the console
    should hear about it goes to `notes`."""
    from transformers import set_seed

    from llm_tune.classification.heads import init_head_from_label_tokens
    from llm_tune.model.loading import load_model
    from llm_tune.model.strategies import apply_strategy, parameter_counts

    if recipe.task == "preference":
        from llm_tune.preference.start import starting_model

        model = starting_model(recipe, tokenizer)
        return model, parameter_counts(model)
    # Fresh weights (LoRA A matrices, a new head) must be the same in every run and on every rank, or neither
    # resuming nor comparing batch layouts can be exact.
    set_seed(recipe.training.seed)
    sequence_head = recipe.sequence_head
    model = load_model(recipe.model, tokenizer, labels=recipe.head_labels, four_bit=recipe.four_bit)
    if sequence_head:  # the loss transformers' head computes: cross-entropy, BCE over sigmoids, or MSE
        model.config.problem_type = recipe.problem_type
    if sequence_head and recipe.classification.init_head_from_labels and recipe.data.format != "regression":
        if init_head_from_label_tokens(model, tokenizer, labels):
            notes.append("classification head initialised from the label tokens' LM-head rows")
    gradient_checkpointing = recipe.training.gradient_checkpointing
    model = apply_strategy(
        model, recipe.strategy, classifier=sequence_head, gradient_checkpointing=gradient_checkpointing
    )
    return model, parameter_counts(model)


def _evaluate_classifier(model: Any, tokenizer: Any, recipe: Recipe, out: RunFolder, metrics: dict[str, Any]) -> None:
    from llm_tune.classification.scoring import evaluate_classifier

    batch = recipe.training.per_device_eval_batch_size
    main = is_main_process()
    scores = evaluate_classifier(
        recipe, model, tokenizer, recipe.data.validation_label, batch, out.eval, tune=True, write=main
    )
    if not main:
        return
    metrics.update({f"eval_{key}": scores[key] for key in EVAL_SUMMARY if key in scores})
    if "calibration" in scores:  # fitted now; `eval` later rewrites eval/, so the fit keeps its own file
        metrics.update(eval_ece_before=scores["calibration"]["ece_before"], temperature=scores["temperature"])
        write_json(out.root / CALIBRATION_FILE, scores["calibration"])
    out.write_metrics(metrics)
    out.write_recipe(recipe)  # with what evaluation resolved (a multi_label run's tuned thresholds)


def _report(trainer: Any, tokenizer: Any, recipe: Recipe, out: RunFolder) -> None:
    """A few greedy samples of an SFT model (a sharded one has its weights on every rank, not here: skipped),
    then report.html from what the run folder now holds."""
    from llm_tune.report.page import write_run_report

    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if not recipe.is_classification and not sharded:
        from llm_tune.generation.samples import write_samples

        write_samples(trainer.model, tokenizer, recipe, out.samples)
    if not installed("matplotlib"):  # an optional extra: the run is complete without its page
        say(
            f"report.html not written: {missing('matplotlib', 'the run report')}, then python -m llm_tune report {out.root}"
        )
        return
    say(f"report written to {write_run_report(out.root)}")


def _prepare_output_dir(out: RunFolder, recipe: Recipe, replacing: bool) -> None:
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
    write_json(out.environment, environment(recipe))


def _resume_from(recipe: Recipe, out: RunFolder) -> str | None:
    from llm_tune.train.checkpoints import resolve_resume

    return resolve_resume(recipe.training.resume, out.checkpoints)


def _train_resumably(trainer: Any, recipe: Recipe, out: RunFolder) -> Any:
    """trainer.train(), with checkpoints marked complete and a signal turned into a checkpoint and a clean exit."""
    from llm_tune.train.checkpoints import completion_marker
    from llm_tune.train.interrupt import GracefulStop

    trainer.add_callback(completion_marker())
    resume_from = _resume_from(recipe, out)
    with GracefulStop() as stop:
        trainer.add_callback(stop.callback())
        result = trainer.train(resume_from_checkpoint=resume_from)
    stop.exit_if_stopped(out.checkpoints)
    return result


def _metrics(trainer: Any, result: Any, runtime: float, trainable: int, total: int) -> dict[str, Any]:
    import torch

    tokens = int(trainer.state.num_input_tokens_seen)
    # A resumed run restores the count of the steps it did not train: the rate is over what this run trained in
    # its runtime (the Trainer notes the restored count when it starts training).
    run_tokens = tokens - int(getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0)
    metrics = {
        "train_loss": result.training_loss,
        "train_runtime_s": round(runtime, 3),
        "train_steps": trainer.state.global_step,
        "train_examples": _examples(trainer),
        "train_tokens": tokens,
        "run_tokens": run_tokens,
        "tokens_per_s": round(run_tokens / runtime, 2) if runtime else 0.0,
        "trainable_params": trainable,
        "total_params": total,
    }
    if torch.cuda.is_available():  # rank 0's peak GPU memory, model loading included
        metrics["cuda_max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return metrics


def _examples(trainer: Any) -> int:
    """Rows trained on, repeats counted: epochs x rows, or for a stream (no length) steps x the global batch."""
    args, state = trainer.args, trainer.state
    if not hasattr(trainer.train_dataset, "__len__"):
        return state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return round((state.epoch or 0) * len(trainer.train_dataset))


def _save_run(trainer: Any, tokenizer: Any, recipe: Recipe, out: RunFolder, metrics: dict[str, Any]) -> None:
    """Every rank calls save_model (a collective when the weights are sharded); the Trainer writes on rank 0 only,
    and the rest is rank 0's."""
    weights = out.weights(recipe)
    trainer.model.config.use_cache = True
    trainer.save_model(str(weights))
    if not is_main_process():
        return
    tokenizer.save_pretrained(str(weights))
    trainer.state.save_to_json(str(out.trainer_state))
    out.write_metrics(metrics)
