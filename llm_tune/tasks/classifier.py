"""A classifier: one label a row, several (multi_label) or a number (regression), read by a sequence head or, for
one label a row, generated as the answer (the generate head). Before training the training rows resolve the label
set, balanced class weights and the regression scale; after it, the validation rows (a file or the carved ones)
get the full evaluation, with thresholds or a temperature fitted on a seeded part and reported on the rest."""

from __future__ import annotations

from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, write_json
from llm_tune.tasks.base import Learned, Prepared
from llm_tune.tasks.sft import SftTask, strategy_model

# eval/metrics.json keys that metrics.json repeats as eval_KEY.
EVAL_SUMMARY = (
    "loss",
    "accuracy",
    "macro_f1",
    "micro_f1",
    "subset_accuracy",
    "pearson",
    "spearman",
    "mse",
    "mae",
    "ece",
)
CALIBRATION_FILE = "calibration.json"  # temperature scaling's fit: ECE and reliability bins before and after


def epoch_repeats(recipe: Recipe, splits: Any, tokenizer: Any) -> list[float] | None:
    """How many times each training row trains in an epoch of a mixture (a source's epoch rows over its rows:
    data/mixture.py), so class weights balance what the epoch trains; None for one source."""
    if "train" not in splits.source_names:
        return None
    from llm_tune.data.formats import token_lengths
    from llm_tune.data.mixture import SOURCE, epoch_shares

    data, train = recipe.data, splits.train
    lengths = [1] * len(train)
    if data.mix_by == "tokens":  # each row's tokens as the trainer counts them: the cut prompt, or prompt and answer
        from llm_tune.classification.heads import classifier_prompt_ids

        lengths = (
            [len(classifier_prompt_ids(tokenizer, p, data.max_length)) for p in train["prompt"]]
            if recipe.sequence_head
            else [min(n, data.max_length) for n in token_lengths(train, tokenizer)]
        )
    weights = [source.weight for source in data.train_sources]
    shares = epoch_shares(splits.source_names["train"], weights, lengths, train[SOURCE], data.mix_by)
    return [shares[s].epoch_rows / max(shares[s].rows, 1) for s in train[SOURCE]]


class ClassifierTask(SftTask):
    writes_samples = False

    @property
    def kind(self) -> str:  # type: ignore[override]
        from llm_tune.classification.problems import problem_of

        name = problem_of(self.recipe).name
        return f"{name}:{self.recipe.classification.head}" if name == "classification" else name

    def describe(self) -> str:
        from llm_tune.classification.problems import problem_of

        return (
            f"{problem_of(self.recipe).name.replace('_', '-')} classification ({self.recipe.classification.head} head)"
        )

    def data(self, recipe: Recipe, tokenizer: Any) -> tuple[Any, Recipe]:
        from llm_tune.classification.problems import resolved_classification
        from llm_tune.data.formats import load_splits

        splits = load_splits(recipe.data, recipe.classification.labels, tokenizer)
        repeats = epoch_repeats(recipe, splits, tokenizer) if recipe.classification.class_weights else None
        return splits, resolved_classification(recipe, splits.labels, list(splits.train["label"]), repeats)

    def model(self, prepared: Prepared) -> tuple[Any, tuple[int, int]]:
        recipe, notes = prepared.recipe, prepared.splits.notes
        if not recipe.sequence_head:
            return strategy_model(recipe, prepared.tokenizer)
        from llm_tune.classification.heads import init_head_from_label_tokens
        from llm_tune.classification.problems import problem_of

        problem = problem_of(recipe)

        def head(model: Any) -> None:
            model.config.problem_type = problem.problem_type  # the loss transformers' head computes
            labels = recipe.classification.labels
            if recipe.classification.init_head_from_labels and labels is not None and problem.named_outputs:
                if init_head_from_label_tokens(model, prepared.tokenizer, labels):
                    notes.append("classification head initialised from the label tokens' LM-head rows")

        return strategy_model(recipe, prepared.tokenizer, head)

    def trainer(self, prepared: Prepared, model: Any, args: Any, out: RunFolder) -> Any:
        from llm_tune.train.monitor import label_rows
        from llm_tune.train.trainer import build_trainer

        recipe, splits = prepared.recipe, prepared.splits
        rows = None
        if splits.validation is not None:
            rows = label_rows(recipe, splits.validation, splits.source_names.get("validation"))
        return build_trainer(recipe, model, prepared.tokenizer, splits, out, args, label_rows=rows)

    def after_training(self, trainer: Any, prepared: Prepared, out: RunFolder) -> Learned:
        """The validation rows scored as `eval` scores them, into OUTPUT_DIR/eval/ (every rank runs the forward
        passes: a sharded model's gather the weights; rank 0 writes)."""
        from llm_tune.classification.evaluation import evaluate_after_training, validation_rows
        from llm_tune.console import is_main_process

        recipe = prepared.recipe
        if prepared.splits.validation is None:
            return Learned()
        rows = validation_rows(recipe, prepared.splits, prepared.tokenizer)
        batch, main = recipe.training.per_device_eval_batch_size, is_main_process()
        scores, fitted = evaluate_after_training(recipe, trainer.model, prepared.tokenizer, rows, batch, out.eval, main)
        if not main:
            return Learned()
        metrics = {f"eval_{key}": scores[key] for key in EVAL_SUMMARY if key in scores}
        if "calibration" in scores:  # fitted now; `eval` later rewrites eval/, so the fit keeps its own file
            metrics.update(eval_ece_before=scores["calibration"]["ece_before"], temperature=fitted["temperature"])
            write_json(out.root / CALIBRATION_FILE, scores["calibration"])
        return Learned(classification=fitted, metrics=metrics)
