"""The rows a classifier is scored on: a data file's prompts rendered as in training, with their labels and texts.
One function for the single-label scoring, the multi-label/regression scoring and the folded export's check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_tune.recipe.schema import Recipe


def classification_rows(recipe: Recipe, spec: str, tokenizer: Any, skip_bad_rows: bool = False) -> Any:
    """Rendered prompts with their labels and texts. A bad row (a label outside the run's label set, an empty
    text) is an error naming it, or with `skip_bad_rows` (the run's own validation file, read as training read it)
    skipped and counted on the console."""
    from llm_tune.console import say
    from llm_tune.data.formats import keep_good_rows, read_rows, render

    cfg = recipe.data.model_copy(update={"skip_bad_rows": skip_bad_rows})
    notes: list[str] = []
    rows = keep_good_rows(read_rows(spec), cfg, spec, recipe.classification.labels, notes)
    for note in filter(None, notes):
        say(note)
    rendered = render(rows, cfg, recipe.classification.labels, tokenizer.chat_template is not None)
    return rendered.add_column("text", rows[cfg.fields.text])


@dataclass(frozen=True)
class ScoredRows:
    """Rows a classifier is scored on: their rendered prompts, targets (as the `label` column holds them) and the
    texts predictions.jsonl shows."""

    name: str
    prompts: list[Any]
    truth: list[Any]
    texts: list[str]

    def subset(self, picked: list[int], name: str) -> ScoredRows:
        return ScoredRows(name, [self.prompts[i] for i in picked], [self.truth[i] for i in picked],
                          [self.texts[i] for i in picked])  # fmt: skip
