"""Classification evaluation: predictions, their scores (classification/metrics.py), a table on the console, and
RUN_DIR/eval/{metrics.json, predictions.jsonl}."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llm_tune.classification.rows import classification_rows
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, write_json, write_text_atomic


def evaluate_classifier(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    spec: str,
    batch_size: int,
    out: Path,
    tune: bool = False,
    write: bool = True,
) -> dict:
    """Predict every row of `spec`, print the table and write `out`/metrics.json and predictions.jsonl (`tune`:
    after training, a multi_label run's thresholds are tuned on these rows first). With `write` False only the
    predictions run: the other ranks of a sharded model, whose forward passes gather the weights with rank 0's
    (they return {}); multi-label and regression runs score on rank 0 alone."""
    from llm_tune.classification.calibration import reliability, softmax
    from llm_tune.classification.heads import head_scores
    from llm_tune.model.precision import mixed_precision

    if recipe.data.format != "classification":
        if not write:
            return {}
        from llm_tune.classification.target_scoring import evaluate_targets

        return evaluate_targets(recipe, model, tokenizer, spec, batch_size, out, tune)

    labels = recipe.classification.labels
    rows = classification_rows(recipe, spec, tokenizer)
    started = time.perf_counter()
    scores = head_scores(
        model,
        tokenizer,
        rows["prompt"],
        labels,
        recipe.classification.head,
        batch_size,
        recipe.data.max_length,
        mixed_precision(recipe.model),
    )
    seconds = time.perf_counter() - started
    if not write:
        return {}
    truth = [labels.index(label) for label in rows["label"]]
    calibration = _calibrate(recipe, scores, truth, spec) if tune else None
    probs = softmax(scores, recipe.classification.temperature)
    metrics = {
        "data": spec,
        "rows": len(truth),
        "labels": labels,
        **classification_metrics(probs, truth, labels),
        "ece": reliability(probs, truth)["ece"],
        "temperature": recipe.classification.temperature,
        **({"calibration": calibration} if calibration else {}),
        "rows_per_s": round(len(truth) / seconds, 2),
    }
    predicted = probs.argmax(-1).tolist()
    predictions = [
        {"text": text, "label": labels[t], "prediction": labels[p], "probabilities": dict(zip(labels, map(float, row)))}
        for text, t, p, row in zip(rows["text"], truth, predicted, probs)
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in predictions))
    write_json(out / "metrics.json", metrics)
    print(format_report(metrics), flush=True)
    print(f"scored {len(truth)} rows in {seconds:.1f} s ({metrics['rows_per_s']:.1f} rows/s)", flush=True)
    return metrics


def _calibrate(recipe: Recipe, scores: Any, truth: list[int], spec: str) -> dict[str, Any] | None:
    """After training, with classification.calibrate: the temperature fitted on these rows (set in `recipe`)."""
    from llm_tune.classification.calibration import calibrate

    if not recipe.classification.calibrate or recipe.classification.temperature is not None:
        return None
    fitted = calibrate(scores, truth)
    recipe.classification.temperature = round(fitted["temperature"], 6)
    print(
        f"calibrated on {spec}: temperature {fitted['temperature']:.4f}, expected calibration error"
        f" {fitted['ece_before']:.4f} -> {fitted['ece_after']:.4f} (saved in the run's recipe)",
        flush=True,
    )
    return fitted


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


def eval_command(run_dir: Path, data: str | None, batch_size: int | None) -> dict:
    from llm_tune.model.trained import load_trained

    run = load_trained(run_dir)
    recipe = run.recipe
    if not recipe.is_classification:
        raise UserError(f"{run_dir}: eval scores classification runs; this run's task is {recipe.task}")
    spec = data or recipe.data.validation_label  # one file: recipe/checks.py refuses a list for a classifier
    if spec is None:
        raise UserError(f"{run_dir}: the run has no validation file; pass --data FILE")
    if not Path(spec).is_file():
        raise UserError(f"--data: file not found: {spec}")
    batch_size = batch_size or recipe.training.per_device_eval_batch_size
    return evaluate_classifier(recipe, run.model, run.tokenizer, spec, batch_size, RunFolder(run_dir).eval)


def predict_command(
    run_dir: Path, texts: list[str], batch_size: int | None, pairs: list[str] | None = None
) -> list[dict[str, float]]:
    from llm_tune.classification.heads import label_probabilities
    from llm_tune.data.formats import user_prompt
    from llm_tune.model.precision import mixed_precision
    from llm_tune.model.trained import load_trained

    pairing = _check_pairs(run_dir, texts, pairs)
    run = load_trained(run_dir)
    recipe = run.recipe
    if not recipe.is_classification:
        raise UserError(f"{run_dir}: predict needs a classification run; this run's task is {recipe.task}")
    labels = recipe.classification.labels
    conversational = run.tokenizer.chat_template is not None
    prompts = [user_prompt(t, recipe.data, labels, conversational, p) for t, p in zip(texts, pairing)]
    batch_size = batch_size or recipe.training.per_device_eval_batch_size
    if recipe.data.format != "classification":
        from llm_tune.classification.target_scoring import predict_targets

        return predict_targets(recipe, run.model, run.tokenizer, texts, prompts, batch_size)
    autocast = mixed_precision(recipe.model)
    probs = label_probabilities(run.model, run.tokenizer, prompts, labels, recipe.classification.head, batch_size,
                                recipe.data.max_length, autocast, recipe.classification.temperature)  # fmt: skip
    results = [dict(zip(labels, map(float, row))) for row in probs]
    for text, result in zip(texts, results):
        ranked = sorted(result.items(), key=lambda kv: -kv[1])
        print(f"{text}\n  " + "  ".join(f"{label} {p:.4f}" for label, p in ranked), flush=True)
    return results


def _check_pairs(run_dir: Path, texts: list[str], pairs: list[str] | None) -> list[str | None]:
    """The second text of each text: --text-pair exactly when the run reads pairs, one per --text."""
    from llm_tune.run_folder import RunFolder

    pair_field = RunFolder(run_dir).read_recipe().data.fields.text_pair
    if pair_field and len(pairs or []) != len(texts):
        raise UserError(
            f"--text-pair: {run_dir} classifies text pairs ({pair_field}); give one --text-pair per --text"
            f" ({len(texts)} texts, {len(pairs or [])} pairs)"
        )
    if pairs and not pair_field:
        raise UserError(f"--text-pair: {run_dir} classifies single texts (no data.fields.text_pair); drop --text-pair")
    return list(pairs) if pair_field else [None] * len(texts)
