"""A run folder read back for the report: its curves from trainer_state.json's log, its metrics, evaluation,
samples and environment. Nothing here loads a model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, read_json

Series = list[tuple[int, float]]  # (optimizer step, value)
PREDICTIONS_SHOWN = 8
# TRL's reward logs of a preference run (training, then validation): beta x log-ratio of chosen and rejected.
REWARD_KEYS = tuple(f"{prefix}rewards/{name}" for prefix in ("", "eval_") for name in ("chosen", "rejected", "margins"))


@dataclass
class RunData:
    run: RunFolder
    recipe: Recipe
    recipe_text: str
    train_loss: Series
    eval_loss: Series
    learning_rate: Series
    final_eval_loss: tuple[int, float] | None  # a classifier's, scored after training (not in the trainer's log)
    metrics: dict[str, Any]
    evaluation: dict[str, Any] | None  # eval/metrics.json of a classification run
    predictions: list[dict[str, Any]] = field(default_factory=list)  # a few, the mistakes first
    wrong: int = 0
    samples: list[dict[str, str]] = field(default_factory=list)
    environment: dict[str, Any] | None = None
    state_from: Path | None = None  # where the log came from
    label: str | None = None  # set when several runs of the same folder name are compared
    rewards: dict[str, Series] = field(default_factory=dict)  # a preference run's TRL reward curves, by log key
    source_losses: dict[str, Series] = field(default_factory=dict)  # validation loss by source (a list of sources)

    @property
    def name(self) -> str:
        return self.label or self.run.root.resolve().name

    @property
    def classification(self) -> bool:
        return self.recipe.is_classification


def read_run(root: Path) -> RunData:
    run = RunFolder(Path(root))
    if not run.is_run():
        raise UserError(f"{root}: not a run folder (no {run.recipe_file.name}); give the output_dir of a training run")
    recipe = run.read_recipe()
    state_file = _state_file(run)
    log = read_json(state_file)["log_history"] if state_file else []
    metrics = read_json(run.metrics) if run.metrics.is_file() else {}
    evaluation = read_json(run.eval / "metrics.json") if (run.eval / "metrics.json").is_file() else None
    data = RunData(
        run=run,
        recipe=recipe,
        recipe_text=run.recipe_file.read_text(encoding="utf-8"),
        train_loss=_series(log, "loss"),
        eval_loss=_series(log, "eval_loss"),
        learning_rate=_series(log, "learning_rate"),
        final_eval_loss=None,
        metrics=metrics,
        evaluation=evaluation,
        samples=_jsonl(run.samples),
        environment=read_json(run.environment) if run.environment.is_file() else None,
        state_from=state_file,
        rewards={key: _series(log, key) for key in REWARD_KEYS if _series(log, key)},
        source_losses=_source_losses(log, recipe),
    )
    if data.classification and "eval_loss" in metrics:
        data.final_eval_loss = (int(metrics.get("train_steps") or _last_step(log)), float(metrics["eval_loss"]))
    if evaluation is not None and "pearson" not in evaluation:  # regression rows are plotted, not listed
        data.predictions, data.wrong = _shown_predictions(_jsonl(run.eval / "predictions.jsonl"))
    return data


def _source_losses(log: list[dict[str, Any]], recipe: Recipe) -> dict[str, Series]:
    """eval_NAME_loss of each source the validation rows came from (data.validation as a list, or carved from a
    data.train mixture), by source name."""
    data = recipe.data
    sources = data.validation_sources if isinstance(data.validation, list) else data.train_sources if data.mixed else []
    series = {s.label: _series(log, f"eval_{s.label}_loss") for s in sources}
    return {name: points for name, points in series.items() if points}


def _state_file(run: RunFolder) -> Path | None:
    """The finished run's log, else the latest complete checkpoint's (a run stopped or still training; a checkpoint
    cut off mid-save may hold a torn trainer_state.json)."""
    if run.trainer_state.is_file():
        return run.trainer_state
    latest = run.latest_checkpoint()
    return latest / "trainer_state.json" if latest and (latest / "trainer_state.json").is_file() else None


def _series(log: list[dict[str, Any]], key: str) -> Series:
    return [(int(entry["step"]), float(entry[key])) for entry in log if key in entry and "step" in entry]


def _last_step(log: list[dict[str, Any]]) -> int:
    return max((int(entry.get("step", 0)) for entry in log), default=0)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _shown_predictions(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """A few predictions, the wrong ones first (they say the most), and how many were wrong in all."""
    wrong = [r for r in rows if r["prediction"] != r["label"]]
    right = [r for r in rows if r["prediction"] == r["label"]]
    half = PREDICTIONS_SHOWN // 2
    shown = wrong[: max(half, PREDICTIONS_SHOWN - len(right))]
    shown += right[: PREDICTIONS_SHOWN - len(shown)]
    return shown, len(wrong)
