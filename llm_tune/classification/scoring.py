"""Classification evaluation: predictions, their scores (classification/metrics.py), a table on the console, and
RUN_DIR/eval/{metrics.json, predictions.jsonl}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_tune.classification.rows import ScoredRows
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import write_json, write_text_atomic


def single_label_scores(recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int) -> Any:
    """[rows, labels] raw scores: the sequence head's logits, or the generate head's label log-likelihoods."""
    from llm_tune.classification.heads import head_scores
    from llm_tune.model.precision import mixed_precision

    c = recipe.classification
    return head_scores(model, tokenizer, prompts, c.labels or [], c.head, batch_size, recipe.data.max_length,
                       mixed_precision(recipe.model)).numpy()  # fmt: skip


def report_single_label(recipe: Recipe, scores: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
    """Score the rows' predictions, print the table, write `out`/metrics.json and predictions.jsonl."""
    from llm_tune.classification.calibration import reliability, softmax

    labels = recipe.classification.labels or []
    truth = [labels.index(label) for label in rows.truth]
    probs = softmax(scores, recipe.classification.temperature)
    metrics = {
        "data": rows.name,
        "rows": len(truth),
        "labels": labels,
        **classification_metrics(probs, truth, labels),
        "ece": reliability(probs, truth)["ece"],
        "temperature": recipe.classification.temperature,
        "rows_per_s": round(len(truth) / seconds, 2),
    }
    predicted = probs.argmax(-1).tolist()
    predictions = [
        {"text": text, "label": labels[t], "prediction": labels[p], "probabilities": dict(zip(labels, map(float, row)))}
        for text, t, p, row in zip(rows.texts, truth, predicted, probs)
    ]
    write_report(out, predictions, metrics, format_report(metrics), seconds)
    return metrics


def write_report(
    out: Path, predictions: list[dict[str, Any]], metrics: dict[str, Any], report: str, seconds: float
) -> None:
    """`out`/predictions.jsonl and metrics.json, and the report on the console."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in predictions))
    write_json(out / "metrics.json", metrics)
    print(report, flush=True)
    print(f"scored {metrics['rows']} rows in {seconds:.1f} s ({metrics['rows_per_s']:.1f} rows/s)", flush=True)


def fit_temperature_on(
    fit_scores: Any, fit_truth: list[int], held_scores: Any, held_truth: list[int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """classification.calibrate: the temperature fitted on some rows; ECE before and after on the held-out ones."""
    from llm_tune.classification.calibration import calibrate

    fitted = calibrate(fit_scores, fit_truth, held_scores, held_truth)
    return {"temperature": round(fitted["temperature"], 6)}, {"calibration": fitted}


def classification_metrics(probs: Any, truth: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision / recall / F1 and the confusion matrix, and `loss`: the cross-entropy
    of the true labels' probabilities, which is the sequence head's own loss and the generate head's loss over the
    label set."""
    import numpy as np

    from llm_tune.classification.metrics import label_scores

    scores = label_scores(probs.argmax(-1).tolist(), truth, len(labels))
    loss = float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None)).mean())
    return {"loss": loss, **scores}


def format_report(metrics: dict[str, Any]) -> str:
    labels = metrics["labels"]
    width = max(9, *(len(label) for label in labels))
    lines = [
        f"{metrics['data']}: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}",
        f"{'label':<{width}}  precision  recall      f1  support",
    ]
    for i, label in enumerate(labels):
        lines.append(
            f"{label:<{width}}  {metrics['precision'][i]:9.4f}  {metrics['recall'][i]:6.4f}  "
            f"{metrics['f1'][i]:6.4f}  {metrics['support'][i]:7d}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "  " + "  ".join(f"{label:>{width}}" for label in labels))
    for label, counts in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>{width}d}" for c in counts))
    return "\n".join(lines)
