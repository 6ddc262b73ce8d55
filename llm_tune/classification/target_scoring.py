"""Reports of the sequence head's multi_label and regression runs (classification/problems.py hands them over):
the problem's metrics, the console report, RUN_DIR/eval/{metrics.json, predictions.jsonl}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune.classification.rows import ScoredRows
from llm_tune.recipe.schema import Recipe


def sequence_outputs(recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int) -> Any:
    """[rows, outputs] raw logits of the sequence head, in the rows' order."""
    from llm_tune.classification.heads import head_scores
    from llm_tune.model.precision import mixed_precision

    labels = [recipe.data.fields.score] if recipe.classification.labels is None else recipe.classification.labels
    return head_scores(model, tokenizer, prompts, labels, "sequence", batch_size, recipe.data.max_length,
                       mixed_precision(recipe.model))  # fmt: skip


def report_multilabel(recipe: Recipe, outputs: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
    from llm_tune.classification.multilabel import (
        format_multilabel_report,
        multi_hot,
        multilabel_metrics,
        threshold_vector,
    )
    from llm_tune.classification.scoring import write_report

    c = recipe.classification
    labels = c.labels or []
    thresholds = threshold_vector(c.thresholds, labels)
    metrics = _opening(rows, seconds, labels) | multilabel_metrics(outputs, multi_hot(rows.truth, labels), thresholds)
    metrics["thresholds"] = dict(zip(labels, thresholds.tolist()))
    predictions = [
        {
            "text": t,
            "label": y,
            "prediction": [labels[j] for j in (p >= thresholds).nonzero()[0]],
            "probabilities": dict(zip(labels, map(float, p))),
        }
        for t, y, p in zip(rows.texts, rows.truth, outputs)
    ]
    write_report(out, predictions, metrics, format_multilabel_report(metrics, thresholds), seconds)
    return metrics


def report_regression(recipe: Recipe, outputs: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
    from llm_tune.classification.regression import format_regression_report, regression_metrics
    from llm_tune.classification.scoring import write_report

    metrics = _opening(rows, seconds) | regression_metrics(outputs, rows.truth)
    predictions = [{"text": t, "label": y, "prediction": float(p)} for t, y, p in zip(rows.texts, rows.truth, outputs)]
    write_report(out, predictions, metrics, format_regression_report(metrics), seconds)
    return metrics


def _opening(rows: ScoredRows, seconds: float, labels: list[str] | None = None) -> dict[str, Any]:
    return {
        "data": rows.name,
        "rows": len(rows.truth),
        **({"labels": labels} if labels else {}),
        "rows_per_s": round(len(rows.truth) / seconds, 2) if seconds else 0.0,
    }
