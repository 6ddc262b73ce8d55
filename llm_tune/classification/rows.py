"""The rows a classifier is scored on: a data file's prompts rendered as in training, with their labels and texts.
One function for the single-label scoring, the multi-label/regression scoring and the folded export's check."""

from __future__ import annotations

from typing import Any

from llm_tune.recipe.schema import Recipe


def classification_rows(recipe: Recipe, spec: str, tokenizer: Any) -> Any:
    """Rendered prompts with their labels; a label outside the run's label set is an error naming the row."""
    from llm_tune.data.formats import keep_good_rows, read_rows, render

    cfg = recipe.data.model_copy(update={"skip_bad_rows": False})
    rows = keep_good_rows(read_rows(spec), cfg, spec, recipe.classification.labels, [])
    rendered = render(rows, cfg, recipe.classification.labels, tokenizer.chat_template is not None)
    return rendered.add_column("text", rows[cfg.fields.text])
