"""Watching validation during training: classification runs scored as `eval` scores them, the best checkpoint and
early stopping (transformers' own machinery), and a warning when the run starts to overfit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback

from llm_tune.console import say
from llm_tune.recipe.schema import Recipe, TrainingConfig

# Consecutive evaluations with validation loss up and training loss down before the run says it overfits.
OVERFIT_EVALUATIONS = 3


@dataclass
class LabelRows:
    """The validation rows a classifier is scored on during training: rendered prompts and their targets (the
    `label` column: labels, label lists or scores)."""

    recipe: Recipe
    prompts: list[Any]
    truth: list[Any]
    batch_size: int
    sources: list[int] | None = None  # validation from a list of sources: each row's source index
    source_names: list[str] | None = None


class ClassifierEvaluation:
    """A mixin over Trainer / SFTTrainer for classification runs: `evaluate` scores the validation rows as `eval`
    does (one pass; accuracy, macro-F1 or the problem's metrics, and their loss as eval_loss) in place of the
    token-loss loop, so that the best checkpoint and early stopping can follow accuracy as well as loss. Without
    `label_rows` it is transformers' evaluate."""

    def __init__(self, *args: Any, label_rows: LabelRows | None = None, **kwargs: Any) -> None:
        self.label_rows = label_rows
        super().__init__(*args, **kwargs)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        if self.label_rows is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        from llm_tune.classification.problems import problem_of

        rows, started = self.label_rows, time.perf_counter()
        problem = problem_of(rows.recipe)
        c = rows.recipe.classification.model_copy(update={"temperature": None})  # the model's own probabilities
        outputs, _ = problem.raw_outputs(rows.recipe, self.model, self.processing_class, rows.prompts, rows.batch_size)
        scores = problem.metrics(c, outputs, rows.truth)
        scores.setdefault("accuracy", scores.get("subset_accuracy"))  # multi_label: the whole set right
        by_source = _source_losses(rows, lambda i: problem.metrics(c, outputs[i], [rows.truth[j] for j in i]))
        seconds = time.perf_counter() - started
        summary = ("loss", "accuracy", "macro_f1", "micro_f1", "pearson", "spearman")
        metrics = {
            **{f"{metric_key_prefix}_{key}": scores[key] for key in summary if scores.get(key) is not None},
            **{f"{metric_key_prefix}_{name}_loss": loss for name, loss in by_source.items()},
            f"{metric_key_prefix}_runtime": round(seconds, 3),
            f"{metric_key_prefix}_samples_per_second": round(len(rows.truth) / seconds, 3),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _source_losses(rows: LabelRows, score: Any) -> dict[str, float]:
    """Each validation source's loss: `score` (the same metrics) over that source's rows alone."""
    if rows.sources is None or rows.source_names is None:
        return {}
    losses = {}
    for index, name in enumerate(rows.source_names):
        members = [i for i, s in enumerate(rows.sources) if s == index]
        if members:
            losses[name] = float(score(members)["loss"])
    return losses


def label_rows(recipe: Recipe, validation: Any, source_names: list[str] | None = None) -> LabelRows:
    from llm_tune.data.mixture import SOURCE

    return LabelRows(
        recipe=recipe,
        prompts=validation["prompt"],
        truth=list(validation["label"]),
        batch_size=recipe.training.per_device_eval_batch_size,
        sources=list(validation[SOURCE]) if source_names else None,
        source_names=source_names,
    )


def best_model_arguments(t: TrainingConfig) -> dict[str, Any]:
    """TrainingArguments that keep the best checkpoint: one is saved at every evaluation, so the best one exists."""
    if not t.keeps_best:
        return {"load_best_model_at_end": False}
    return dict(
        load_best_model_at_end=True,
        metric_for_best_model=t.metric_for_best_model,
        greater_is_better=t.greater_is_better,
        save_steps=t.eval_steps,
        # The early-stopping counter lives in a callback; it is saved in each checkpoint and restored on resume.
        restore_callback_states_from_checkpoint=True,
    )


def watch_callbacks(t: TrainingConfig) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [OverfitWarning()]
    if t.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold or 0.0))
    return callbacks


def early_stop_summary(trainer: Any, t: TrainingConfig) -> dict[str, Any]:
    """best_step, best_metric and stopped_early for metrics.json, and the console line that says why it stopped."""
    state = trainer.state
    best_step = getattr(state, "best_global_step", None) if t.keeps_best else None
    best = state.best_metric if t.keeps_best else None
    stopper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
    stopped = stopper is not None and stopper.early_stopping_patience_counter >= stopper.early_stopping_patience
    if stopped:
        say(
            f"stopped early at step {state.global_step} of {state.max_steps}: {t.metric_for_best_model} did not improve"
            f" on its best {best:.4g} (step {best_step}) for {t.early_stopping_patience} evaluations"
        )
    if best_step is not None:
        say(f"kept the best checkpoint: step {best_step}, {t.metric_for_best_model} {best:.4g}")
    return {"best_step": best_step, "best_metric": best, "stopped_early": stopped}


class OverfitWarning(TrainerCallback):
    """Says once, in one line, when validation loss has risen while training loss fell for OVERFIT_EVALUATIONS
    evaluations in a row."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []  # (step, training loss, validation loss)
        self.warned = False

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any):
        train_losses = [e["loss"] for e in state.log_history if "loss" in e]
        if not metrics or "eval_loss" not in metrics or not train_losses:
            return
        self.points.append((state.global_step, sum(train_losses[-3:]) / len(train_losses[-3:]), metrics["eval_loss"]))
        recent = self.points[-(OVERFIT_EVALUATIONS + 1) :]
        rising = len(recent) == OVERFIT_EVALUATIONS + 1 and all(
            b[2] > a[2] and b[1] < a[1] for a, b in zip(recent, recent[1:])
        )
        if rising and not self.warned and state.is_world_process_zero:
            self.warned = True
            steps = ", ".join(str(p[0]) for p in recent)
            say(
                f"warning: overfitting: validation loss rose ({recent[0][2]:.4g} -> {recent[-1][2]:.4g}) while"
                f" training loss fell ({recent[0][1]:.4g} -> {recent[-1][1]:.4g}) over steps {steps}; consider"
                " training.early_stopping_patience, fewer epochs or a lower learning rate"
            )
