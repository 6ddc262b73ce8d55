"""What the console shows while a run trains: one progress bar (steps, loss, learning rate, tokens/s) and one line per
evaluation, instead of a Python dict per logging step; and the few lines that open and close a run."""

from __future__ import annotations

import time
from typing import Any

from transformers.trainer_callback import ProgressCallback

from llm_tune.console import say


class TrainingProgress(ProgressCallback):
    """transformers' progress bar, with the logged loss, rate and throughput in its postfix and evaluations as lines."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        self.started, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen
        if self.training_bar is not None:
            self.training_bar.set_description("training")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:
            seconds = time.perf_counter() - self.started
            rate = (state.num_input_tokens_seen - self.tokens_at_start) / seconds if seconds else 0.0
            self.training_bar.set_postfix_str(
                f"loss {logs['loss']:.4g}, lr {logs.get('learning_rate', 0):.2e}, {rate:.0f} tokens/s", refresh=True
            )
        scores = {k.removeprefix("eval_"): v for k, v in logs.items() if k.startswith("eval_") and _is_score(k)}
        if scores:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
            self.training_bar.write(f"[llm_tune] step {state.global_step}: validation {shown}")


def _is_score(key: str) -> bool:
    return not key.endswith(("_runtime", "_per_second", "model_preparation_time"))


def use_progress(trainer: Any) -> None:
    """Swap the trainer's default progress callback for TrainingProgress."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress())


def run_summary(recipe: Any, trainer: Any, splits: Any, trainable: int, total: int) -> None:
    """The lines that open a run: model and device, strategy, data, schedule."""
    from llm_tune.model.loading import describe_device, idle_cores_warning

    t, data = recipe.training, recipe.data
    columns = trainer.train_dataset.column_names
    # Preference trainers keep prompt and answers in columns of their own: no single token count to show.
    tokens = f", {sum(len(ids) for ids in trainer.train_dataset['input_ids']):,} tokens" if "input_ids" in columns else ""
    validation = f", {len(splits.validation):,} validation" if splits.validation is not None else ""
    head = f" ({recipe.classification.head} head)" if recipe.task == "classification" else ""
    world = trainer.args.world_size
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * world
    steps = trainer.args.max_steps if trainer.args.max_steps > 0 else None
    length = f"{steps} steps" if steps else f"{t.num_train_epochs:g} epochs"
    processes = f" x {world} processes" if world > 1 else ""
    say(f"model     {recipe.model.name_or_path}, {describe_device(recipe.model)}")
    say(f"strategy  {recipe.strategy.kind}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
    say(f"data      {len(splits.train):,} {data.format} rows{head}{tokens}{validation}")
    say(f"training  {length}, batch {batch} ({t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation"
        f"{processes}), learning rate {t.learning_rate:g} {t.lr_scheduler_type}, into {recipe.output_dir}")
    for note in splits.notes:  # truncated or skipped rows, the head's initialisation
        say(note)
    if warning := idle_cores_warning(world):
        say(warning)


# What a finished run folder holds, in the order a user looks for it.
_CONTENTS = (
    ("adapter", "adapter/ (the trained adapter)"), ("model", "model/ (the trained model)"),
    ("metrics.json", "metrics.json"), ("eval", "eval/ (predictions and metrics)"), ("report.html", "report.html"),
    ("export", "export/"), ("trainer_state.json", "trainer_state.json (every logged step)"),
    ("logs", "logs/ (TensorBoard)"), ("checkpoints", "checkpoints/"),
)  # fmt: skip


def run_ending(out: Any, metrics: dict[str, Any]) -> None:
    """The lines that close a run: how it went, and where everything went."""
    scores = [f"{k} {metrics[k]:.4g}" for k in ("train_loss", "eval_loss", "eval_accuracy") if metrics.get(k) is not None]
    if metrics.get("best_step") is not None:
        scores.append(f"best checkpoint: step {metrics['best_step']}")
    say(f"done: {metrics['train_steps']} steps in {metrics['train_runtime_s']:.1f} s ({metrics['tokens_per_s']:.0f}"
        f" tokens/s); {', '.join(scores)}")
    found = [text for name, text in _CONTENTS if (out.root / name).exists()]
    say(f"run folder {out.root}: {', '.join(found)}")
