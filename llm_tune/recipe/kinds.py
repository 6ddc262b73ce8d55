"""The kinds of run, and the keys each honours: one table. A key set away from its default in a run whose kind does
not honour it is an error naming the key and the kind (checked with every recipe, before anything loads), so no
key is accepted and then ignored. Keys not in the table are honoured by every kind; tests/test_keys.py checks,
for every kind and every key, that a non-default value changes what the run does or is refused here.

The tasks (llm_tune/tasks/) are the kinds' behaviour; this module only names them, torch-free, so that `validate`
and `keys` can answer in a fraction of a second."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llm_tune.recipe.schema import Recipe

SFT, SFT_LABELLED = "sft", "sft:labelled"  # labelled rows (a label, labels or a score) trained as answers
GENERATE, SEQUENCE = "classification:generate", "classification:sequence"
MULTI_LABEL, REGRESSION, PREFERENCE = "multi_label", "regression", "preference"
KINDS = (SFT, SFT_LABELLED, GENERATE, SEQUENCE, MULTI_LABEL, REGRESSION, PREFERENCE)
CLASSIFIERS = (GENERATE, SEQUENCE, MULTI_LABEL, REGRESSION)
SINGLE_LABEL = (GENERATE, SEQUENCE)
LANGUAGE_MODELS = (SFT, SFT_LABELLED, GENERATE)  # trained by TRL's SFTTrainer on token sequences
OWN_TRAINERS = (SFT, SFT_LABELLED, *CLASSIFIERS)  # llm_tune's trainers (train/trainers.py), not TRL's preference ones


def kind_of(recipe: Recipe) -> str:
    """The run's kind: its task, and for a classifier its problem and head."""
    if recipe.is_preference:
        return PREFERENCE
    if not recipe.is_classification:
        return SFT_LABELLED if recipe.data.labelled else SFT
    if recipe.data.format in (MULTI_LABEL, REGRESSION):
        return recipe.data.format
    return SEQUENCE if recipe.sequence_head else GENERATE


@dataclass(frozen=True)
class Honoured:
    kinds: tuple[str, ...]
    what: str  # what the key does, for the error line


HONOURED: dict[str, Honoured] = {
    "model.from_run": Honoured((PREFERENCE,), "starts a preference run from a finished run"),
    "strategy.unfreeze_every_steps": Honoured(OWN_TRAINERS, "unfreezes blocks gradually in llm_tune's SFT and classifier trainers"),
    "classification.head": Honoured(CLASSIFIERS, "picks a classifier's head"),
    "classification.labels": Honoured((SFT_LABELLED, GENERATE, SEQUENCE, MULTI_LABEL), "names the labels of labelled rows"),
    "classification.init_head_from_labels": Honoured((SEQUENCE, MULTI_LABEL), "starts a sequence head's label rows"),
    "classification.class_weights": Honoured(SINGLE_LABEL, "weighs single-label classifier rows"),
    "classification.thresholds": Honoured((MULTI_LABEL,), "sets multi-label thresholds"),
    "classification.calibrate": Honoured(SINGLE_LABEL, "fits a single-label classifier's temperature"),
    "classification.temperature": Honoured(SINGLE_LABEL, "scales single-label probabilities"),
    "classification.normalize_targets": Honoured((REGRESSION,), "scales regression targets"),
    "classification.target_mean": Honoured((REGRESSION,), "scales regression targets"),
    "classification.target_std": Honoured((REGRESSION,), "scales regression targets"),
    "preference": Honoured((PREFERENCE,), "configures preference tuning"),
    "data.streaming": Honoured((SFT,), "streams SFT rows"),
    "data.shuffle_buffer": Honoured((SFT,), "shuffles a stream of SFT rows"),
    "data.train_on_prompt": Honoured(LANGUAGE_MODELS, "trains the prompt tokens of a causal LM too"),
    "data.prompt": Honoured((SFT_LABELLED, *CLASSIFIERS), "wraps a labelled row's text"),
    "training.packing": Honoured(LANGUAGE_MODELS, "packs token sequences for TRL's SFTTrainer"),
    "training.layerwise_lr_decay": Honoured(OWN_TRAINERS, "sets layer-wise rates in llm_tune's SFT and classifier trainers"),
    "training.group_by_length": Honoured(OWN_TRAINERS, "groups SFT and classifier rows by length (preference rows are shuffled plainly)"),
}  # fmt: skip

# Column names and row-reading keys by data.format (the rows a format reads; a preference row's columns are TRL's).
LABELLED_FORMATS = ("classification", "multi_label", "regression")
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "data.fields.instruction": ("alpaca",),
    "data.fields.input": ("alpaca",),
    "data.fields.output": ("alpaca",),
    "data.fields.messages": ("chat",),
    "data.fields.text": ("completion", *LABELLED_FORMATS),
    "data.fields.label": ("classification",),
    "data.fields.labels": ("multi_label",),
    "data.fields.score": ("regression",),
    "data.fields.text_pair": LABELLED_FORMATS,
    "data.label_separator": ("multi_label",),
    "data.system_prompt": ("alpaca", "chat", *LABELLED_FORMATS, "preference"),
    "data.chat_template": ("chat",),  # the {% generation %} markers of assistant-only loss on chat rows
}


def value_at(model: BaseModel, key: str) -> Any:
    value: Any = model
    for part in key.split("."):
        value = getattr(value, part)
    return value


def default_at(key: str, recipe: Recipe) -> Any:
    """The schema's default of a key, in the section class this recipe has there (a strategy kind, a method)."""
    *path, name = key.split(".")
    section: Any = recipe
    for part in path:
        section = getattr(section, part)
    if not path:  # a whole top-level section: its default value
        return Recipe.model_fields[name].default
    return type(section).model_fields[name].default


def unhonoured_keys(recipe: Recipe) -> list[str]:
    """One line per key set away from its default that this run's kind, or its data format, does not honour."""
    kind, problems = kind_of(recipe), []
    for key, rule in HONOURED.items():
        if kind in rule.kinds or not _has(recipe, key):
            continue
        if value_at(recipe, key) != default_at(key, recipe):
            problems.append(
                f"{key}: {_shown(value_at(recipe, key))} is not honoured by a {kind} run (it {rule.what}: {', '.join(rule.kinds)});"
                " remove it, or change the task"
            )  # fmt: skip
    for key, formats in FORMAT_KEYS.items():
        if recipe.data.format not in formats and value_at(recipe, key) != default_at(key, recipe):
            problems.append(
                f"{key}: {_shown(value_at(recipe, key))} is not read by data.format {recipe.data.format} (it applies to"
                f" {', '.join(formats)}); remove it"
            )
    return problems


def honoured_by(kind: str, key: str) -> bool:
    """Whether runs of `kind` honour a key (recipe keys only; data formats aside)."""
    rule = HONOURED.get(key) or next((r for k, r in HONOURED.items() if key.startswith(k + ".")), None)
    return rule is None or kind in rule.kinds


def _has(recipe: Recipe, key: str) -> bool:
    """The key exists in this recipe's sections (strategy.unfreeze_every_steps only in the frozen strategy)."""
    try:
        value_at(recipe, key)
    except AttributeError:
        return False
    return True


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return repr(value.model_dump(mode="json", exclude_unset=True) or value.model_dump(mode="json"))
    return repr(value)
