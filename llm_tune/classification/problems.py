"""The three problems a classifier solves (transformers' problem_type): single-label classification, multi-label
classification and regression, one class each. What a row's target becomes in training, the values resolved from
the training rows before training (class weights, the regression scale), what the head's outputs mean and how
they are scored. `problem_of` is the one place that maps a recipe's data format to its problem."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import ClassificationConfig, Recipe

if TYPE_CHECKING:
    from llm_tune.classification.rows import ScoredRows


class SingleLabel:
    """One label a row: softmax over the labels (sequence head) or the label as a completion (generate head)."""

    name = "classification"
    problem_type = "single_label_classification"
    targets = False  # scored by classification/scoring.py (both heads), not target_scoring.py
    folds_to_lm_head = True  # a GGUF export can carry the head as LM-head rows
    named_outputs = True  # one output per label (its row can start from the label token's LM-head row)

    def head_labels(self, recipe: Recipe) -> list[str] | None:
        return recipe.classification.labels

    def resolved(self, recipe: Recipe, train_labels: list[Any], repeats: list[float] | None = None) -> dict[str, Any]:
        """Keys of the classification section resolved from the training rows' `label` column (`repeats`: each
        row's times in an epoch, for a mixture)."""
        from llm_tune.classification.weights import resolve_class_weights

        c = recipe.classification
        if c.class_weights is None:
            return {}
        return {"class_weights": resolve_class_weights(c.class_weights, c.labels or [], train_labels, repeats)}

    def training_target(self, c: ClassificationConfig) -> Callable[[Any], Any]:
        return {label: i for i, label in enumerate(c.labels or [])}.__getitem__

    def raw_outputs(
        self, recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int
    ) -> tuple[Any, float]:
        """(the head's outputs for the rows, seconds): raw label scores here (a temperature applies later)."""
        from llm_tune.classification.scoring import single_label_scores

        started = time.perf_counter()
        scores = single_label_scores(recipe, model, tokenizer, prompts, batch_size)
        return scores, time.perf_counter() - started

    def fits(self, c: ClassificationConfig) -> bool:
        """A value is fitted on validation rows after training (and recorded in the run's recipe)."""
        return c.calibrate and c.temperature is None

    def fit(
        self, c: ClassificationConfig, outputs: Any, truth: list[Any], held: Any, held_truth: list[Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the fitted classification keys, what the fit reports on the held-out rows)."""
        from llm_tune.classification.scoring import fit_temperature_on

        labels = c.labels or []
        return fit_temperature_on(
            outputs, [labels.index(y) for y in truth], held, [labels.index(y) for y in held_truth]
        )

    def fitted_line(self, fitted: dict[str, Any], details: dict[str, Any]) -> str:
        fit = details["calibration"]
        return (
            f"calibrated: temperature {fitted['temperature']:.4f}, expected calibration error on the held-out rows"
            f" {fit['ece_before']:.4f} -> {fit['ece_after']:.4f}"
        )

    def report(self, recipe: Recipe, outputs: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
        from llm_tune.classification.scoring import report_single_label

        return report_single_label(recipe, outputs, rows, out, seconds)

    def metrics(self, c: ClassificationConfig, outputs: Any, truth: list[Any]) -> dict[str, Any]:
        """Accuracy, macro-F1 and the rest (classification/scoring.py) of raw scores against the rows' labels."""
        from llm_tune.classification.calibration import softmax
        from llm_tune.classification.scoring import classification_metrics

        labels = c.labels or []
        return classification_metrics(softmax(outputs, c.temperature), [labels.index(y) for y in truth], labels)

    def prediction(self, recipe: Recipe, output: Any) -> dict[str, float]:
        """One row's prediction as predict prints it: each label's probability, most probable first."""
        from llm_tune.classification.calibration import softmax

        probs = softmax(output, recipe.classification.temperature)
        return dict(sorted(zip(recipe.classification.labels or [], map(float, probs)), key=lambda kv: -kv[1]))


class MultiLabel(SingleLabel):
    """Any number of labels a row: an independent sigmoid per label, a threshold each."""

    name = "multi_label"
    problem_type = "multi_label_classification"
    targets = True
    folds_to_lm_head = False

    def resolved(self, recipe: Recipe, train_labels: list[Any], repeats: list[float] | None = None) -> dict[str, Any]:
        return {}

    def training_target(self, c: ClassificationConfig) -> Callable[[Any], Any]:
        labels = c.labels or []
        index = {label: i for i, label in enumerate(labels)}

        def multi_hot(found: list[str]) -> list[float]:
            vector = [0.0] * len(labels)
            for label in found:
                vector[index[label]] = 1.0
            return vector

        return multi_hot

    def raw_outputs(
        self, recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int
    ) -> tuple[Any, float]:
        """Each label's sigmoid probability."""
        import torch

        from llm_tune.classification.target_scoring import sequence_outputs

        started = time.perf_counter()
        scores = sequence_outputs(recipe, model, tokenizer, prompts, batch_size)
        return torch.sigmoid(scores).numpy(), time.perf_counter() - started

    def fits(self, c: ClassificationConfig) -> bool:
        return c.thresholds is None

    def fit(
        self, c: ClassificationConfig, outputs: Any, truth: list[Any], held: Any, held_truth: list[Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from llm_tune.classification.multilabel import multi_hot, tune_thresholds

        labels = c.labels or []
        return {"thresholds": tune_thresholds(outputs, multi_hot(truth, labels), labels)}, {}

    def fitted_line(self, fitted: dict[str, Any], details: dict[str, Any]) -> str:
        return "multi-label thresholds tuned (best F1 per label)"

    def report(self, recipe: Recipe, outputs: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
        from llm_tune.classification.target_scoring import report_multilabel

        return report_multilabel(recipe, outputs, rows, out, seconds)

    def metrics(self, c: ClassificationConfig, outputs: Any, truth: list[Any]) -> dict[str, Any]:
        from llm_tune.classification.multilabel import multi_hot, multilabel_metrics, threshold_vector

        labels = c.labels or []
        return multilabel_metrics(outputs, multi_hot(truth, labels), threshold_vector(c.thresholds, labels))

    def prediction(self, recipe: Recipe, output: Any) -> dict[str, float]:
        """Every label over its threshold, with its probability, most probable first."""
        from llm_tune.classification.multilabel import threshold_vector

        c = recipe.classification
        labels = c.labels or []
        over = [(labels[j], float(output[j])) for j in (output >= threshold_vector(c.thresholds, labels)).nonzero()[0]]
        return dict(sorted(over, key=lambda kv: -kv[1]))


class Regression(SingleLabel):
    """One number a row: the head's single output, trained by MSE (on a normalised scale with normalize_targets)."""

    name = "regression"
    problem_type = "regression"
    targets = True
    folds_to_lm_head = False
    named_outputs = False

    def head_labels(self, recipe: Recipe) -> list[str] | None:
        return [recipe.data.fields.score]

    def resolved(self, recipe: Recipe, train_labels: list[Any], repeats: list[float] | None = None) -> dict[str, Any]:
        import numpy as np

        c = recipe.classification
        if not c.normalize_targets or c.target_mean is not None:
            return {}
        scores = np.asarray(train_labels, dtype=float)
        std = float(scores.std())
        if std == 0:
            raise UserError(
                f"{recipe.data.train_label}: every row has the score {scores[0]:g}; normalize_targets needs spread"
            )
        return {"target_mean": float(scores.mean()), "target_std": std}

    def training_target(self, c: ClassificationConfig) -> Callable[[Any], Any]:
        mean, std = (c.target_mean, c.target_std) if c.target_mean is not None else (0.0, 1.0)
        assert std is not None
        return lambda score: (float(score) - mean) / std

    def raw_outputs(
        self, recipe: Recipe, model: Any, tokenizer: Any, prompts: list[Any], batch_size: int
    ) -> tuple[Any, float]:
        """The head's one output per row mapped back to the score's own scale."""
        from llm_tune.classification.target_scoring import sequence_outputs

        started = time.perf_counter()
        scores = sequence_outputs(recipe, model, tokenizer, prompts, batch_size)
        return self.on_scale(recipe.classification, scores[:, 0]).numpy(), time.perf_counter() - started

    def on_scale(self, c: ClassificationConfig, values: Any) -> Any:
        """Head outputs (trained on (score - mean) / std with normalize_targets) as scores."""
        return values * c.target_std + c.target_mean if c.target_mean is not None else values

    def fits(self, c: ClassificationConfig) -> bool:
        return False

    def report(self, recipe: Recipe, outputs: Any, rows: ScoredRows, out: Path, seconds: float) -> dict[str, Any]:
        from llm_tune.classification.target_scoring import report_regression

        return report_regression(recipe, outputs, rows, out, seconds)

    def metrics(self, c: ClassificationConfig, outputs: Any, truth: list[Any]) -> dict[str, Any]:
        from llm_tune.classification.regression import regression_metrics

        return regression_metrics(outputs, truth)

    def prediction(self, recipe: Recipe, output: Any) -> dict[str, float]:
        return {recipe.data.fields.score: float(output)}


Problem = SingleLabel  # the base: MultiLabel and Regression override what differs
PROBLEMS: dict[str, Problem] = {
    "classification": SingleLabel(),
    "multi_label": MultiLabel(),
    "regression": Regression(),
}


def problem_of(recipe: Recipe) -> Problem:
    """The problem a classification recipe's rows pose (by data.format)."""
    return PROBLEMS[recipe.data.format]


def resolved_classification(
    recipe: Recipe, labels: list[str] | None, train_labels: list[Any], repeats: list[float] | None = None
) -> Recipe:
    """The recipe with what the training rows resolve: the label set, the weights of `class_weights: balanced`
    (over what an epoch trains: `repeats`), regression's target mean and std. A new recipe: the user's is kept."""
    from llm_tune.recipe.target_checks import label_problems

    c = recipe.classification.model_copy(update={"labels": labels})
    if labels is not None and (problems := label_problems(recipe, labels)):
        raise UserError(*problems)
    staged = recipe.model_copy(update={"classification": c})
    update = problem_of(recipe).resolved(staged, train_labels, repeats)
    return staged.model_copy(update={"classification": c.model_copy(update=update)})
