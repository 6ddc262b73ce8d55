"""The report's plots of multi_label and regression runs (classification/target_scoring.py writes their data):
prediction against truth for regression."""

from __future__ import annotations

from typing import Any

from llm_tune.report.plots import EVAL_COLOR, TRAIN_COLOR, _figure, _png

POINTS_DRAWN = 5000  # a scatter of more points only darkens; the first rows are drawn


def scatter_plot(predictions: list[dict[str, Any]], metrics: dict[str, Any]) -> bytes | None:
    """Predicted against true score, one dot per row, with the line where they are equal."""
    if not predictions:
        return None
    rows = predictions[:POINTS_DRAWN]
    truth, predicted = [r["label"] for r in rows], [r["prediction"] for r in rows]
    fig, ax = _figure()
    ax.scatter(truth, predicted, s=8, alpha=0.4, color=TRAIN_COLOR, linewidths=0, label="validation rows")
    low, high = min(truth + predicted), max(truth + predicted)
    ax.plot([low, high], [low, high], color=EVAL_COLOR, linewidth=1.2, label="prediction = truth")
    shown = f" (first {POINTS_DRAWN})" if len(predictions) > POINTS_DRAWN else ""
    ax.set(xlabel="true score", ylabel="predicted score",
           title=f"Prediction vs truth{shown}: Pearson {metrics['pearson']:.3f}, Spearman {metrics['spearman']:.3f}")
    return _png(fig, ax)
