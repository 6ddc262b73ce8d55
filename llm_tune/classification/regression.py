"""Regression: one output per row, and the metrics of STS-style tasks (Pearson and Spearman correlation, MSE, MAE)."""

from __future__ import annotations

from typing import Any


def regression_metrics(predicted: Any, truth: Any) -> dict[str, float]:
    """pearson, spearman (Pearson of the average ranks, ties shared), mse, mae; `loss` is the MSE."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    constant = predicted.std() == 0 or truth.std() == 0  # correlation is undefined: report 0, not NaN
    pearson = 0.0 if constant else float(pearsonr(predicted, truth).statistic)
    spearman = 0.0 if constant else float(spearmanr(predicted, truth).statistic)
    mse = float(((predicted - truth) ** 2).mean())
    return {
        "loss": mse,
        "pearson": pearson,
        "spearman": spearman,
        "mse": mse,
        "mae": float(abs(predicted - truth).mean()),
    }


def format_regression_report(metrics: dict[str, Any]) -> str:
    return (
        f"{metrics['data']}: {metrics['rows']} rows, Pearson {metrics['pearson']:.4f}, Spearman"
        f" {metrics['spearman']:.4f}, MSE {metrics['mse']:.4f}, MAE {metrics['mae']:.4f}"
    )
