"""The report's plots of multi_label and regression runs (classification/target_scoring.py writes their data):
prediction against truth for regression; and the reliability diagram of a calibrated single-label run."""

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
    ax.set(
        xlabel="true score",
        ylabel="predicted score",
        title=f"Prediction vs truth{shown}: Pearson {metrics['pearson']:.3f}, Spearman {metrics['spearman']:.3f}",
    )
    return _png(fig, ax)


def reliability_plot(fit: dict[str, Any]) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling (a calibrated model lies on the
    diagonal); dot areas follow the bins' rows."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="#9ca3af", linewidth=1, label="perfect calibration")
    for key, color, name in (
        ("bins_before", EVAL_COLOR, f"before (ECE {fit['ece_before']:.3f})"),
        ("bins_after", TRAIN_COLOR, f"T = {fit['temperature']:.2f} (ECE {fit['ece_after']:.3f})"),
    ):
        bins = fit[key]
        total = sum(b["rows"] for b in bins) or 1
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color=color, linewidth=1.2, label=name)
        ax.scatter(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            color=color,
            s=[12 + 300 * b["rows"] / total for b in bins],
            alpha=0.7,
            linewidths=0,
        )
    ax.set(
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        xlabel="confidence (top probability)",
        ylabel="accuracy",
        title="Reliability (validation)",
    )
    return _png(fig, ax)
