"""Cross-field rules of the classification keys (torch-free, before any model loads): which data formats go with
which head, class weights, thresholds, text pairs and the regression target scale."""

from __future__ import annotations

from llm_tune.recipe.schema import Recipe


def target_problems(recipe: Recipe) -> list[str]:
    data, c = recipe.data, recipe.classification
    problems = []
    if recipe.task == "classification" and not data.labelled:
        problems.append(
            f"data.format: task classification needs data.format classification, multi_label or regression, not"
            f" {data.format}"
        )
    if recipe.task == "classification" and data.format in ("multi_label", "regression") and c.head != "sequence":
        problems.append(
            f"classification.head: data.format {data.format} trains a sequence head (sigmoid or one-number outputs);"
            " set classification.head: sequence"
        )
    if c.class_weights is not None and recipe.training.packing:
        problems.append(
            "classification.class_weights: weigh whole rows; packed rows mix labels, set training.packing: false"
        )
    if isinstance(c.class_weights, dict):
        bad = {label: w for label, w in c.class_weights.items() if not w > 0}
        if bad:
            problems.append(f"classification.class_weights: weights must be positive, got {bad}")
    if c.thresholds is not None:
        bad = {label: t for label, t in c.thresholds.items() if not 0.0 < t < 1.0}
        if bad:
            problems.append(f"classification.thresholds: each must lie between 0 and 1, got {bad}")
    if c.calibrate and data.validation is None and data.validation_fraction is None:
        problems.append(
            "classification.calibrate: fits on validation rows; set data.validation or data.validation_fraction"
        )
    metric = recipe.training.metric_for_best_model
    if data.format == "regression" and metric != "eval_loss":
        problems.append(f"training.metric_for_best_model: {metric} is not defined for regression; use eval_loss (MSE)")
    if (c.target_mean is None) != (c.target_std is None):
        problems.append("classification.target_mean and target_std: set both (normalize_targets sets them) or neither")
    return problems + _pair_problems(recipe)


def _pair_problems(recipe: Recipe) -> list[str]:
    data = recipe.data
    placed = "{text_pair}" in data.prompt
    if data.fields.text_pair and not placed:
        return [
            f"data.prompt: data.fields.text_pair is {data.fields.text_pair!r}, but the prompt has no {{text_pair}};"
            " place the second text, e.g. 'Sentence 1: {text}\\nSentence 2: {text_pair}'"
        ]
    if placed and not data.fields.text_pair:
        return ["data.fields.text_pair: the prompt has {text_pair}; name the column that holds it (e.g. text_pair)"]
    return []


def label_problems(recipe: Recipe, labels: list[str]) -> list[str]:
    """Keys that name labels, checked once the label set is known (after discovery from the training file)."""
    c = recipe.classification
    problems = []
    for key, named in (("class_weights", c.class_weights), ("thresholds", c.thresholds)):
        unknown = sorted(set(named) - set(labels)) if isinstance(named, dict) else []
        if unknown:
            problems.append(f"classification.{key}: {unknown} are not labels of this run; the labels are {labels}")
    return problems
