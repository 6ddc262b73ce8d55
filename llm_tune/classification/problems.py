"""The three problems a sequence head solves (transformers' problem_type): single-label classification,
multi-label classification and regression. What a row's target becomes in training, and the run-level values
resolved from the training rows before training (class weights, the regression scale) that the run's recipe
records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe


def resolve_from_training_rows(recipe: Recipe, train: Any) -> None:
    """Fill the recipe's resolved keys from the rendered training rows (their `label` column): the weights of
    `class_weights: balanced`, regression's target mean and std; check the keys that name labels."""
    from llm_tune.classification.weights import resolve_class_weights
    from llm_tune.recipe.target_checks import label_problems

    c = recipe.classification
    if c.labels is not None:
        problems = label_problems(recipe, c.labels)
        if problems:
            raise UserError(*problems)
    if recipe.data.format == "classification" and c.class_weights is not None:
        c.class_weights = resolve_class_weights(c.class_weights, c.labels, train["label"])
    if recipe.data.format == "regression" and c.normalize_targets and c.target_mean is None:
        import numpy as np

        scores = np.asarray(train["label"], dtype=float)
        std = float(scores.std())
        if std == 0:
            raise UserError(
                f"{recipe.data.train}: every row has the score {scores[0]:g}; normalize_targets needs spread"
            )
        c.target_mean, c.target_std = float(scores.mean()), std


def training_target(recipe: Recipe) -> Callable[[Any], Any]:
    """A rendered row's `label` as the sequence head trains on it: a label index, a multi-hot float vector, or the
    (normalized) score."""
    labels, c = recipe.classification.labels, recipe.classification
    if recipe.data.format == "regression":
        mean, std = (c.target_mean, c.target_std) if c.target_mean is not None else (0.0, 1.0)
        return lambda score: (float(score) - mean) / std
    index = {label: i for i, label in enumerate(labels)}
    if recipe.data.format == "multi_label":

        def multi_hot(found: list[str]) -> list[float]:
            vector = [0.0] * len(labels)
            for label in found:
                vector[index[label]] = 1.0
            return vector

        return multi_hot
    return index.__getitem__


def regression_scores(recipe: Recipe, outputs: Any) -> Any:
    """The head's one output per row mapped back to the score's own scale."""
    c = recipe.classification
    values = outputs[:, 0] if outputs.ndim == 2 else outputs
    return values * c.target_std + c.target_mean if c.target_mean is not None else values
