"""Classification evaluation: predictions, their scores (classification/metrics.py), a table on the console, and
RUN_DIR/eval/{metrics.json, predictions.jsonl}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_tune.classification.evaluation import ScoredRows
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, write_json, write_text_atomic


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
    return evaluate_file(recipe, run.model, run.tokenizer, spec, batch_size, RunFolder(run_dir).eval)


def evaluate_file(recipe: Recipe, model: Any, tokenizer: Any, spec: str, batch_size: int, out: Path) -> dict[str, Any]:
    """Every row of a file scored (a bad row is an error naming it), reported and written to `out`."""
    from llm_tune.classification.evaluation import file_rows
    from llm_tune.classification.problems import problem_of

    problem = problem_of(recipe)
    rows = file_rows(recipe, spec, tokenizer)
    outputs, seconds = problem.raw_outputs(recipe, model, tokenizer, rows.prompts, batch_size)
    return problem.report(recipe, outputs, rows, out, seconds)


def predict_command(
    run_dir: Path, texts: list[str], batch_size: int | None, pairs: list[str] | None = None
) -> list[dict[str, float]]:
    from llm_tune.classification.problems import problem_of
    from llm_tune.data.formats import user_prompt
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
    problem = problem_of(recipe)
    outputs, _ = problem.raw_outputs(recipe, run.model, run.tokenizer, prompts, batch_size)
    results = [problem.prediction(recipe, row) for row in outputs]
    for text, result in zip(texts, results):
        shown = "  ".join(f"{key} {value:.4f}" for key, value in result.items()) or "(no label over its threshold)"
        print(f"{text}\n  {shown}", flush=True)
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
