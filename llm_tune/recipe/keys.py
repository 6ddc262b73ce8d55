"""`python -m llm_tune keys [SECTION]`: every recipe key with its type, default and description, read from the
schema itself, so the documentation cannot drift from what the recipe accepts."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from llm_tune.errors import UserError
from llm_tune.recipe.loading import TAGGED
from llm_tune.recipe.schema import Recipe
from llm_tune.recipe.section import Section


def key_lines(section: str | None = None) -> list[str]:
    """One line per key: `path  type  default  description`, for one top-level section or all of them; a key that
    only some kinds of run (data formats) honour says which, and is refused in the others (recipe/kinds.py)."""
    rows = [_with_kinds(row) for row in _rows(Recipe, "") if section is None or row[0].split(".")[0] == section]
    if not rows:
        known = ", ".join(Recipe.model_fields)
        raise UserError(f"keys: no section {section!r}; sections: {known}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{p:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {text}".rstrip() for p, t, d, text in rows]


def _rows(section: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in section.model_fields.items():
        path = f"{prefix}{name}"
        if path in TAGGED:
            rows += _tagged_rows(path)
            continue
        nested = _section_of(info.annotation)
        if nested is not None:
            rows += _rows(nested, f"{path}.")
            continue
        rows.append((path, _type_name(info.annotation), _default(info), info.description or ""))
        item = _list_item_section(info.annotation)
        if item is not None:  # a list of sections (data.train's sources): each item's keys
            rows += _rows(item, f"{path}[].")
    return rows


def _with_kinds(row: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    from llm_tune.recipe.kinds import FORMAT_KEYS, HONOURED

    path, kind, default, text = row
    rule = HONOURED.get(path) or next((r for k, r in HONOURED.items() if path.startswith(k + ".")), None)
    if rule is not None:
        text = f"{text} (runs: {', '.join(rule.kinds)})"
    if path in FORMAT_KEYS:
        text = f"{text} (data.format: {', '.join(FORMAT_KEYS[path])})"
    return path, kind, default, text


def _list_item_section(annotation: Any) -> type[Section] | None:
    for candidate in typing.get_args(annotation):
        if typing.get_origin(candidate) is list:
            return _section_of(typing.get_args(candidate)[0])
    return None


def _tagged_rows(section: str) -> list[tuple[str, str, str, str]]:
    """The strategy (preference) section's keys, each once, with the kinds (methods) that take it."""
    tag, classes, default = TAGGED[section]
    owners: dict[str, list[str]] = {}
    infos: dict[str, FieldInfo] = {}
    for kind, cls in classes.items():
        for name, info in cls.model_fields.items():
            owners.setdefault(name, []).append(kind)
            infos.setdefault(name, info)
    rows = []
    for name, kinds in owners.items():
        info = infos[name]
        if name == tag:
            what = "which weights train" if section == "strategy" else "the preference method"
            rows.append((f"{section}.{tag}", " | ".join(classes), default, what))
            continue
        text = f"[{', '.join(kinds)}] {info.description or ''}"
        rows.append((f"{section}.{name}", _type_name(info.annotation), _default(info), text))
    return rows


def _section_of(annotation: Any) -> type[Section] | None:
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined:
        return "(required)"
    value = info.default
    if isinstance(value, BaseModel):
        return "{...}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if ("\n" in value or " " in value or not value) else value
    return str(value)
