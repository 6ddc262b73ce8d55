"""What a classification row asks the model to learn: one label, a set of labels (multi_label) or a number
(regression), and the optional second text of a pair. data/formats.py calls these for the three target formats,
so that each row is checked, its label set discovered and its target rendered in one place."""

from __future__ import annotations

from typing import Any

from llm_tune.recipe.data import DataConfig


def row_labels(value: Any, separator: str) -> list[str] | None:
    """A multi_label cell as its labels: a list of strings, or one string split on the separator; None: neither."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return None


def required_columns(cfg: DataConfig) -> tuple[str, ...]:
    names = cfg.fields
    target = {"classification": names.label, "multi_label": names.labels, "regression": names.score}[cfg.format]
    pair = (names.text_pair,) if names.text_pair else ()
    return (names.text, *pair, target)


def target_problem(row: dict[str, Any], cfg: DataConfig, labels: list[str] | None) -> str | None:
    """Why a row's target cannot be trained on, or None (the required columns are present)."""
    names = cfg.fields
    if names.text_pair and not isinstance(row[names.text_pair], str):
        value = row[names.text_pair]
        return f"'{names.text_pair}' must be text, got {type(value).__name__} {value!r:.40}"
    if cfg.format == "regression":
        score = row[names.score]
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return f"'{names.score}' must be a number, got {type(score).__name__} {score!r:.40}"
        return None
    if cfg.format == "multi_label":
        found = row_labels(row[names.labels], cfg.label_separator)
        if found is None:
            value = row[names.labels]
            return (
                f"'{names.labels}' must be a list of labels or a string of labels separated by"
                f" {cfg.label_separator!r}, got {type(value).__name__} {value!r:.40}"
            )
        if not found:
            return f"'{names.labels}' holds no label"
        unknown = [label for label in found if labels is not None and label not in labels]
        return f"labels {unknown} are not in the label set {labels}" if unknown else None
    if labels is not None and str(row[names.label]) not in labels:
        return f"label {row[names.label]!r} is not one of the labels {labels}"
    return None


def discovered_labels(rows: Any, cfg: DataConfig) -> list[str] | None:
    """The sorted label set of the training rows (None for regression, which has no labels)."""
    if cfg.format == "regression":
        return None
    if cfg.format == "multi_label":
        return sorted({label for value in rows[cfg.fields.labels] for label in row_labels(value, cfg.label_separator)})
    return sorted({str(label) for label in rows[cfg.fields.label]})


def target(row: dict[str, Any], cfg: DataConfig) -> tuple[Any, str]:
    """(the row's target as the `label` column holds it, the answer a generate head would be trained on)."""
    names = cfg.fields
    if cfg.format == "regression":
        score = float(row[names.score])
        return score, f"{score:g}"
    if cfg.format == "multi_label":
        found = row_labels(row[names.labels], cfg.label_separator) or []
        return found, ", ".join(found)
    label = str(row[names.label])
    return label, label


def fill_prompt(cfg: DataConfig, text: str, labels: list[str] | None, text_pair: str | None = None) -> str:
    """The classification prompt of one row: {text}, {labels} and {text_pair} filled in."""
    return cfg.prompt.format(text=text, labels=", ".join(labels or []), text_pair=text_pair or "")
