"""A classifier's evaluation after training, on its validation rows (a file, or the rows data.validation_fraction
carved out of train): the same report whichever they are.

What the recipe asks to fit after training (multi_label thresholds, single-label temperature scaling) is fitted on a
seeded part of the validation rows (FIT_SHARE, drawn with data.validation_seed) and every figure is reported on the
rest: no score comes from the rows a value was tuned on. The fitted values come back to the caller (the saved
recipe records them); the recipe given is not changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune.classification.rows import ScoredRows
from llm_tune.console import say
from llm_tune.recipe.schema import Recipe

FIT_SHARE = 0.5  # of the validation rows fit thresholds or the temperature; the other half reports


def file_rows(recipe: Recipe, spec: str, tokenizer: Any, skip_bad_rows: bool = False) -> ScoredRows:
    """A data file's rows rendered as in training (classification/rows.py)."""
    from llm_tune.classification.rows import classification_rows

    rows = classification_rows(recipe, spec, tokenizer, skip_bad_rows)
    return ScoredRows(spec, list(rows["prompt"]), list(rows["label"]), list(rows["text"]))


def validation_rows(recipe: Recipe, splits: Any, tokenizer: Any) -> ScoredRows:
    """The run's own validation rows: its file (bad rows skipped as training skipped them, with data.skip_bad_rows),
    or the carved ones."""
    if recipe.data.validation is not None:
        return file_rows(recipe, recipe.data.validation_label or "", tokenizer, recipe.data.skip_bad_rows)
    v = splits.validation
    name = f"{v.num_rows} rows carved from {recipe.data.train_label} (data.validation_fraction)"
    return ScoredRows(name, list(v["prompt"]), list(v["label"]), [_shown_text(p) for p in v["prompt"]])


def _shown_text(prompt: Any) -> str:
    """A rendered prompt as predictions.jsonl shows it: the user's turn of a conversation, or the text itself."""
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return str(prompt)


def fit_split(rows: int, seed: int) -> tuple[list[int], list[int]]:
    """(rows that fit, rows that report): a seeded FIT_SHARE of the rows, and the rest, each in file order."""
    import random

    order = list(range(rows))
    random.Random(seed).shuffle(order)
    cut = int(round(rows * FIT_SHARE))
    return sorted(order[:cut]), sorted(order[cut:])


def evaluate_after_training(
    recipe: Recipe, model: Any, tokenizer: Any, rows: ScoredRows, batch_size: int, out: Path, write: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, fitted classification keys). With `write` False (the other ranks of a sharded model) only the
    forward passes run: they gather the weights with rank 0's."""
    from llm_tune.classification.problems import problem_of

    problem = problem_of(recipe)
    c = recipe.classification
    outputs, seconds = problem.raw_outputs(recipe, model, tokenizer, rows.prompts, batch_size)
    if not write:
        return {}, {}
    if not problem.fits(c):
        return problem.report(recipe, outputs, rows, out, seconds), {}
    fit, keep = fit_split(len(rows.truth), recipe.data.validation_seed)
    if not fit or not keep:
        from llm_tune.errors import UserError

        raise UserError(f"{rows.name}: {len(rows.truth)} validation rows cannot be split to fit and to report")
    held = rows.subset(keep, f"{rows.name}, the {len(keep)} rows not used to fit")
    fitted, details = problem.fit(c, outputs[fit], [rows.truth[i] for i in fit], outputs[keep], held.truth)
    say(f"{problem.fitted_line(fitted, details)}: fitted on {len(fit)} of the {len(rows.truth)} validation rows"
        f" (seed {recipe.data.validation_seed}), reported on the other {len(keep)}; saved in the run's recipe")  # fmt: skip
    tuned = recipe.model_copy(update={"classification": c.model_copy(update=fitted)})
    metrics = problem.report(tuned, outputs[keep], held, out, seconds)
    return {**metrics, **details}, fitted
