"""What a classification row asks the model to learn: one label, a set of labels (multi_label) or a number
(regression), and the optional second text of a pair. data/formats.py calls these for the three target formats,
so that each row is checked, its label set discovered and its target rendered in one place."""

from __future__ import annotations

import math
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.data import DataConfig


def label_name(value: Any, labels: list[str] | None) -> str | None:
    """A label cell as the name of its label, in every shape users' tools write one: a string as it is; a boolean as
    true or false; an integer (or a float with no fraction: a column with gaps) as the label of that name when the
    label set has one, else as an index into the label set (a `datasets` ClassLabel column, names in
    classification.labels), or as its digits when the set is still to be discovered. None: not a label."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if labels is None or str(value) in labels:
            return str(value)
        return labels[value] if 0 <= value < len(labels) else None
    return value if isinstance(value, str) else None


def sorted_labels(names: set[str]) -> list[str]:
    """A discovered label set in order: integers by value (2 before 10), anything else alphabetically."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def row_labels(value: Any, separator: str, labels: list[str] | None = None) -> list[str] | None:
    """A multi_label cell as its labels: a list of labels (each as label_name reads it), or one string split on the
    separator; None: neither."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if isinstance(value, list):
        names = [label_name(v, labels) for v in value]
        return None if None in names else [str(name).strip() for name in names]
    return None


def score_value(value: Any) -> float | None:
    """A regression cell as a finite number: a number, or a string that spells one (a CSV or a hand-written file)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
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
        if score_value(score) is None:
            return f"'{names.score}' must be a finite number, got {type(score).__name__} {score!r:.40}"
        return None
    if cfg.format == "multi_label":
        found = row_labels(row[names.labels], cfg.label_separator, labels)
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
    name = label_name(row[names.label], labels)
    if name is None and labels is not None and isinstance(row[names.label], (int, float)):
        return (
            f"label {row[names.label]!r} is neither a label of {labels} nor an index into them (0 to {len(labels) - 1})"
        )
    if name is None:
        return f"'{names.label}' must be a label (text, an integer or true/false), got {type(row[names.label]).__name__} {row[names.label]!r:.40}"
    if labels is not None and name not in labels:
        return f"label {row[names.label]!r} is not one of the labels {labels}"
    return None


def discovered_labels(rows: Any, cfg: DataConfig) -> list[str] | None:
    """The sorted label set of the training rows (None for regression, which has no labels)."""
    if cfg.format == "regression":
        return None
    if cfg.format == "multi_label":
        found = (row_labels(value, cfg.label_separator) or [] for value in rows[cfg.fields.labels])
        return sorted_labels({label for names in found for label in names})
    return sorted_labels({str(label_name(value, None)) for value in rows[cfg.fields.label]})


def target(row: dict[str, Any], cfg: DataConfig, labels: list[str] | None) -> tuple[Any, str]:
    """(the row's target as the `label` column holds it, the answer a generate head would be trained on)."""
    names = cfg.fields
    if cfg.format == "regression":
        score = score_value(row[names.score]) or 0.0
        return score, f"{score:g}"
    if cfg.format == "multi_label":
        found = row_labels(row[names.labels], cfg.label_separator, labels) or []
        return found, ", ".join(found)
    label = str(label_name(row[names.label], labels))
    return label, label


def class_label_names(rows: Any, cfg: DataConfig) -> list[str] | None:
    """The label names a `datasets` ClassLabel column carries (a Hub dataset, or a parquet file written by
    `datasets`), single-label or as a sequence of them (multi_label); None when the column has none."""
    column = {"classification": cfg.fields.label, "multi_label": cfg.fields.labels}.get(cfg.format)
    feature = getattr(rows, "features", {}).get(column) if column else None
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def check_separator(cfg: DataConfig, parts: list[Any]) -> None:
    """data.label_separator splits a labels cell that is one string; set on rows whose cells are all lists, it would
    do nothing."""
    if cfg.format != "multi_label" or cfg.label_separator == DataConfig.model_fields["label_separator"].default:
        return
    column = cfg.fields.labels
    if not any(isinstance(v, str) for part in parts if column in part.column_names for v in part[column]):
        raise UserError(
            f"data.label_separator: {cfg.label_separator!r} splits a labels cell written as one string, and every"
            f" '{column}' cell of {cfg.train_label} is a list; remove it"
        )


def fill_prompt(cfg: DataConfig, text: str, labels: list[str] | None, text_pair: str | None = None) -> str:
    """The classification prompt of one row: {text}, {labels} and {text_pair} filled in."""
    return cfg.prompt.format(text=text, labels=", ".join(labels or []), text_pair=text_pair or "")
