"""Temperature scaling (Guo et al., 2017): one number T divides a single-label classifier's scores before the
softmax, fitted on validation rows by minimising their negative log-likelihood. Predictions (the argmax) never
change; the probabilities become honest. Expected calibration error (ECE) and a reliability table say how honest."""

from __future__ import annotations

from typing import Any

BINS = 15  # equal-width confidence bins, the usual count for ECE


def fit_temperature(scores: Any, truth: list[int]) -> float:
    """The T > 0 that minimises the mean cross-entropy of softmax(scores / T) on these rows (LBFGS over log T)."""
    import torch
    import torch.nn.functional as F

    logits = torch.as_tensor(scores, dtype=torch.float64)
    target = torch.as_tensor(truth, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability(probs: Any, truth: list[int], bins: int = BINS) -> dict[str, Any]:
    """ECE (the row-weighted mean gap between confidence and accuracy over the bins) and, per non-empty bin, its
    range, rows, mean confidence and accuracy."""
    import numpy as np

    confidence = probs.max(-1)
    right = probs.argmax(-1) == np.asarray(truth)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        rows = which == b
        if not rows.any():
            continue
        conf, acc = float(confidence[rows].mean()), float(right[rows].mean())
        ece += rows.sum() / len(confidence) * abs(conf - acc)
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "rows": int(rows.sum()),
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {"ece": float(ece), "bins": table}


def softmax(scores: Any, temperature: float | None) -> Any:
    import torch

    scores = torch.as_tensor(scores)
    return torch.softmax(scores / (temperature or 1.0), dim=-1).numpy()


def calibrate(scores: Any, truth: list[int], held: Any, held_truth: list[int]) -> dict[str, Any]:
    """Fit T on (scores, truth); the reliability before (T = 1) and after on the held-out rows, which the fit did
    not see."""
    temperature = fit_temperature(scores, truth)
    before = reliability(softmax(held, None), held_truth)
    after = reliability(softmax(held, temperature), held_truth)
    return {
        "temperature": temperature,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "bins_before": before["bins"],
        "bins_after": after["bins"],
    }
