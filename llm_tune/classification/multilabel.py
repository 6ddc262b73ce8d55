"""Multi-label classification: one sigmoid per label, per-label decision thresholds tuned on validation rows,
and the metrics of the multi-label literature (micro- and macro-F1, subset accuracy, per-label P/R/F1)."""

from __future__ import annotations

from typing import Any

DEFAULT_THRESHOLD = 0.5
# Candidate thresholds: a fine grid; a label is predicted when its probability is >= its threshold.
GRID = [round(0.01 * i, 2) for i in range(1, 100)]


def multi_hot(rows: list[list[str]], labels: list[str]) -> Any:
    import numpy as np

    index = {label: i for i, label in enumerate(labels)}
    truth = np.zeros((len(rows), len(labels)), dtype=bool)
    for r, found in enumerate(rows):
        truth[r, [index[label] for label in found]] = True
    return truth


def threshold_vector(thresholds: dict[str, float] | None, labels: list[str]) -> Any:
    import numpy as np

    return np.array([(thresholds or {}).get(label, DEFAULT_THRESHOLD) for label in labels])


def tune_thresholds(probs: Any, truth: Any, labels: list[str]) -> dict[str, float]:
    """Per label, the grid threshold with the best F1 on these rows (ties: the one nearest 0.5); a label without
    positive rows keeps 0.5, since F1 cannot rank thresholds for it."""
    import numpy as np

    tuned = {}
    for j, label in enumerate(labels):
        if not truth[:, j].any():
            tuned[label] = DEFAULT_THRESHOLD
            continue
        f1 = np.array([_f1(probs[:, j] >= t, truth[:, j]) for t in GRID])
        best = np.flatnonzero(f1 == f1.max())
        tuned[label] = GRID[min(best, key=lambda i: abs(GRID[i] - DEFAULT_THRESHOLD))]
    return tuned


def _f1(predicted: Any, truth: Any) -> float:
    tp = float((predicted & truth).sum())
    denominator = float(predicted.sum() + truth.sum())
    return 2 * tp / denominator if denominator else 0.0


def multilabel_metrics(probs: Any, truth: Any, thresholds: Any) -> dict[str, Any]:
    """micro_f1 (pooled over every row and label), macro_f1 (the mean of the per-label F1), subset_accuracy (rows
    whose predicted set equals the true set), per-label precision / recall / f1 / support, and `loss`: the mean
    binary cross-entropy over rows and labels (the head's training loss)."""
    import numpy as np

    predicted = probs >= thresholds
    tp = (predicted & truth).sum(0).astype(float)
    fp = (predicted & ~truth).sum(0).astype(float)
    fn = (~predicted & truth).sum(0).astype(float)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    pooled = 2 * tp.sum() + fp.sum() + fn.sum()
    clipped = np.clip(probs, 1e-12, 1 - 1e-12)
    loss = -(truth * np.log(clipped) + (~truth) * np.log(1 - clipped)).mean()
    return {
        "loss": float(loss),
        "micro_f1": float(2 * tp.sum() / pooled) if pooled else 0.0,
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float((predicted == truth).all(1).mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": truth.sum(0).astype(int).tolist(),
    }


def format_multilabel_report(metrics: dict[str, Any], thresholds: Any) -> str:
    labels = metrics["labels"]
    width = max(9, *(len(label) for label in labels))
    lines = [
        f"{metrics['data']}: {metrics['rows']} rows, micro-F1 {metrics['micro_f1']:.4f}, macro-F1"
        f" {metrics['macro_f1']:.4f}, subset accuracy {metrics['subset_accuracy']:.4f}",
        f"{'label':<{width}}  threshold  precision  recall      f1  support",
    ]
    for i, label in enumerate(labels):
        lines.append(
            f"{label:<{width}}  {thresholds[i]:9.2f}  {metrics['precision'][i]:9.4f}  {metrics['recall'][i]:6.4f}  "
            f"{metrics['f1'][i]:6.4f}  {metrics['support'][i]:7d}"
        )
    return "\n".join(lines)
