"""`eval` and `predict` for the sequence head's multi_label and regression runs (scoring.py hands them over):
one scoring pass over the rows, thresholds tuned after training, RUN_DIR/eval/{metrics.json, predictions.jsonl}."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import write_json, write_text_atomic


def head_outputs(recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int) -> Any:
    """Per row: each label's sigmoid probability (multi_label) or the score on its own scale (regression)."""
    import torch

    from llm_tune.classification.heads import head_scores
    from llm_tune.classification.problems import regression_scores
    from llm_tune.model.precision import mixed_precision

    labels = recipe.head_labels
    scores = head_scores(model, tokenizer, prompts, labels, "sequence", batch_size, recipe.data.max_length,
                         mixed_precision(recipe.model))  # fmt: skip
    if recipe.data.format == "regression":
        return regression_scores(recipe, scores).numpy()
    return torch.sigmoid(scores).numpy()


def target_metrics(recipe: Recipe, outputs: Any, truth: list[Any]) -> dict[str, Any]:
    """The problem's metrics of `outputs` (head_outputs) against the rows' `label` column."""
    from llm_tune.classification.multilabel import multi_hot, multilabel_metrics, threshold_vector
    from llm_tune.classification.regression import regression_metrics

    if recipe.data.format == "regression":
        return regression_metrics(outputs, truth)
    labels = recipe.classification.labels
    return multilabel_metrics(
        outputs, multi_hot(truth, labels), threshold_vector(recipe.classification.thresholds, labels)
    )


def evaluate_targets(
    recipe: Recipe, model: Any, tokenizer: Any, spec: str, batch_size: int, out: Path, tune: bool = False
) -> dict[str, Any]:
    """Score every row of `spec`, print the report, write `out`/metrics.json and predictions.jsonl. `tune`: a
    multi_label run without thresholds gets them tuned on these rows first (set in `recipe`)."""
    from llm_tune.classification.multilabel import (
        format_multilabel_report,
        multi_hot,
        threshold_vector,
        tune_thresholds,
    )
    from llm_tune.classification.regression import format_regression_report
    from llm_tune.classification.rows import classification_rows

    rows = classification_rows(recipe, spec, tokenizer)
    started = time.perf_counter()
    outputs = head_outputs(recipe, model, tokenizer, rows["prompt"], batch_size)
    seconds = time.perf_counter() - started
    c, truth = recipe.classification, rows["label"]
    if tune and recipe.data.format == "multi_label" and c.thresholds is None:
        c.thresholds = tune_thresholds(outputs, multi_hot(truth, c.labels), c.labels)
        print(f"multi-label thresholds tuned on {spec} (best F1 per label), saved in the run's recipe", flush=True)
    metrics = {
        "data": spec,
        "rows": len(truth),
        **({"labels": c.labels} if c.labels else {}),
        **target_metrics(recipe, outputs, truth),
        "rows_per_s": round(len(truth) / seconds, 2),
    }
    if recipe.data.format == "regression":
        predictions = [{"text": t, "label": y, "prediction": float(p)} for t, y, p in zip(rows["text"], truth, outputs)]
        report = format_regression_report(metrics)
    else:
        thresholds = threshold_vector(c.thresholds, c.labels)
        metrics["thresholds"] = dict(zip(c.labels, thresholds.tolist()))
        predictions = [
            {
                "text": t,
                "label": y,
                "prediction": [c.labels[j] for j in (p >= thresholds).nonzero()[0]],
                "probabilities": dict(zip(c.labels, map(float, p))),
            }
            for t, y, p in zip(rows["text"], truth, outputs)
        ]
        report = format_multilabel_report(metrics, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in predictions))
    write_json(out / "metrics.json", metrics)
    print(report, flush=True)
    print(f"scored {len(truth)} rows in {seconds:.1f} s ({metrics['rows_per_s']:.1f} rows/s)", flush=True)
    return metrics


def predict_targets(
    recipe: Recipe, model: Any, tokenizer: Any, texts: list[str], prompts: list[Any], batch_size: int
) -> list[dict[str, Any]]:
    """Print and return, per text: every label over its threshold with its probability (multi_label), or the score."""
    from llm_tune.classification.multilabel import threshold_vector

    outputs = head_outputs(recipe, model, tokenizer, prompts, batch_size)
    results = []
    for text, row in zip(texts, outputs):
        if recipe.data.format == "regression":
            results.append({recipe.data.fields.score: float(row)})
            print(f"{text}\n  {recipe.data.fields.score} {float(row):.4f}", flush=True)
            continue
        labels = recipe.classification.labels
        over = [
            (labels[j], float(row[j]))
            for j in (row >= threshold_vector(recipe.classification.thresholds, labels)).nonzero()[0]
        ]
        over.sort(key=lambda kv: -kv[1])
        results.append(dict(over))
        shown = "  ".join(f"{label} {p:.4f}" for label, p in over) or "(no label over its threshold)"
        print(f"{text}\n  {shown}", flush=True)
    return results
