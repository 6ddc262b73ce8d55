"""Single-label classification scores from predicted and true label ids: accuracy, macro-F1, per-class precision,
recall and F1, support and the confusion matrix. A few lines of numpy over the confusion matrix; a class never
predicted (or never present) scores 0, as scikit-learn's zero_division=0 does."""

from __future__ import annotations

from typing import Any

import numpy as np


def label_scores(predicted: list[int], truth: list[int], num_labels: int) -> dict[str, Any]:
    """Scores over label ids 0 .. num_labels - 1; the confusion matrix's rows are the true labels."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    hits = np.diag(confusion).astype(np.float64)
    support, called = confusion.sum(axis=1), confusion.sum(axis=0)  # true rows per label, predictions per label
    precision = np.divide(hits, called, out=np.zeros(num_labels), where=called > 0)
    recall = np.divide(hits, support, out=np.zeros(num_labels), where=support > 0)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + true): no 0/0 between precision and recall
    f1 = np.divide(2 * hits, called + support, out=np.zeros(num_labels), where=(called + support) > 0)
    return {
        "accuracy": float(hits.sum() / len(truth)) if len(truth) else 0.0,
        "macro_f1": float(f1.mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "confusion_matrix": confusion.tolist(),
    }
