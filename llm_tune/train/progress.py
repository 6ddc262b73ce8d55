"""What the console shows while a run trains: on a terminal one progress bar (steps, loss, learning rate, tokens/s),
elsewhere (a SLURM log, CI, a pipe) plain lines at most every `training.progress_every_s`; one line per evaluation
either way, instead of a Python dict per logging step; and the few lines that open and close a run."""

from __future__ import annotations

import time
from typing import Any

from transformers.trainer_callback import ProgressCallback, TrainerCallback

from llm_tune.console import WARNINGS, on_terminal, say


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
        if scores := _scores(logs):
            self.training_bar.write(f"[llm_tune] step {state.global_step}: validation {scores}")


class PlainProgress(TrainerCallback):
    """Progress as whole lines for a reader of a log file (`tail`, `grep`): no carriage returns, no cursor codes.
    A line at a logging step once `every_s` seconds have passed since the last one, and at the last step."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen
        self.steps_at_start, self.last_line = state.global_step, float("-inf")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        last_step = state.global_step >= state.max_steps
        if "loss" in logs and (now - self.last_line >= self.every_s or last_step):
            self.last_line = now
            say(self.line(state, logs, now - self.started))
        if scores := _scores(logs):
            say(f"step {state.global_step}: validation {scores}")

    def line(self, state: Any, logs: dict[str, Any], seconds: float) -> str:
        step, total = state.global_step, state.max_steps
        rate = (state.num_input_tokens_seen - self.tokens_at_start) / seconds if seconds else 0.0
        done = step - self.steps_at_start
        eta = (total - step) * seconds / done if done else 0.0
        return (
            f"step {step}/{total} ({100 * step / total:.0f}%), loss {logs['loss']:.4g}, lr"
            f" {logs.get('learning_rate', 0):.2e}, {rate:.0f} tokens/s, elapsed {_clock(seconds)}, ETA {_clock(eta)}"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _scores(logs: dict[str, Any]) -> str:
    scores = {k.removeprefix("eval_"): v for k, v in logs.items() if k.startswith("eval_") and _is_score(k)}
    return ", ".join(f"{k} {v:.4g}" for k, v in scores.items())


def _is_score(key: str) -> bool:
    return not key.endswith(("_runtime", "_per_second", "model_preparation_time"))


def use_progress(trainer: Any, every_s: float) -> None:
    """Swap the trainer's default progress callback (and its evaluation bars) for ours."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress() if on_terminal() else PlainProgress(every_s))


def run_summary(recipe: Any, trainer: Any, splits: Any, trainable: int, total: int, kind: str) -> None:
    """The lines that open a run: model and device, strategy, data, schedule."""
    from llm_tune.model.loading import idle_cores_warning
    from llm_tune.model.precision import describe_device

    t, data = recipe.training, recipe.data
    # Preference trainers keep prompt and answers in columns of their own: no single token count to show.
    streamed = hasattr(trainer.train_dataset, "counts")  # no length, no token count: data/stream.py
    counted = "input_ids" in trainer.train_dataset.column_names and not streamed
    tokens = f", {_token_count(trainer.train_dataset):,} tokens" if counted else ""
    validation = f", {len(splits.validation):,} validation" if splits.validation is not None else ""
    world = trainer.args.world_size
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * world
    steps = trainer.args.max_steps if trainer.args.max_steps > 0 else None
    length = f"{steps} steps" if steps else f"{t.num_train_epochs:g} epochs"
    processes = f" x {world} processes" if world > 1 else ""
    say(f"model     {recipe.model.name_or_path}, {describe_device(recipe.model)}")
    say(
        f"strategy  {recipe.strategy.kind}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)"
    )
    if streamed:
        say(f"data      {data.train_label}: {data.format} rows streamed, shuffled {data.shuffle_buffer:,} at a time;"
            f" the first {len(splits.train):,} checked{validation}")  # fmt: skip
    else:
        say(f"data      {len(splits.train):,} {data.format} rows, {kind}{tokens}{validation}")
    say(
        f"training  {length}, batch {batch} ({t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation"
        f"{processes}), learning rate {t.learning_rate:g} {t.lr_scheduler_type}, into {recipe.output_dir}"
    )
    for note in splits.notes:  # truncated or skipped rows, the head's initialisation
        say(note)
    if warning := idle_cores_warning(world):
        say(warning)


def _token_count(dataset: Any) -> int:
    """Tokens in a tokenized split, summed by Arrow (a Python loop over 200,000 rows takes seconds)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(dataset.with_format("arrow")["input_ids"])).as_py() or 0)


# What a finished run folder holds, in the order a user looks for it.
_CONTENTS = (
    ("adapter", "adapter/ (the trained adapter)"), ("model", "model/ (the trained model)"),
    ("metrics.json", "metrics.json"), ("eval", "eval/ (predictions and metrics)"), ("report.html", "report.html"),
    ("export", "export/"), ("trainer_state.json", "trainer_state.json (every logged step)"),
    ("logs", "logs/ (TensorBoard)"), ("checkpoints", "checkpoints/"), ("warnings.log", "warnings.log"),
)  # fmt: skip


def run_ending(out: Any, metrics: dict[str, Any]) -> None:
    """The lines that close a run: how it went, and where everything went."""
    scores = [
        f"{k} {metrics[k]:.4g}" for k in ("train_loss", "eval_loss", "eval_accuracy") if metrics.get(k) is not None
    ]
    if metrics.get("best_step") is not None:
        scores.append(f"best checkpoint: step {metrics['best_step']}")
    rate = metrics.get("tokens_per_s")  # None: the trainer's batches carry no token count (KTO, ORPO, SimPO)
    speed = f" ({rate:.0f} tokens/s)" if rate is not None else ""
    say(f"done: {metrics['train_steps']} steps in {metrics['train_runtime_s']:.1f} s{speed}; {', '.join(scores)}")
    if stream := metrics.get("streaming"):
        from llm_tune.data.stream import StreamCounts

        say(StreamCounts(**stream).line())
    say(WARNINGS.summary())
    found = [text for name, text in _CONTENTS if (out.root / name).exists()]
    say(f"run folder {out.root}: {', '.join(found)}")
