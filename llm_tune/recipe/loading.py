"""Reading a recipe: YAML, `inherits:` parents, dotted overrides, then the schema.

Every problem is collected and reported at once, one line each, with the YAML path. Nothing here
imports torch, so `validate` answers in about a second.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llm_tune.recipe.schema import Recipe
from llm_tune.errors import UserError


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """The fully resolved, validated recipe; raises UserError listing every problem."""
    path = Path(path)
    raw = _read_with_parents(path, seen=())
    for override in overrides:
        _apply_override(raw, override)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(*(f"{path}: {_describe(err)}" for err in exc.errors())) from None


def resolved_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def _read_with_parents(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise UserError(f"{path}: inherits: circular inheritance ({chain})")
    data = _read_yaml(path)
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: inherits: expected a path to a parent recipe, got {parent!r}")
    base = _read_with_parents(path.parent / parent, (*seen, resolved))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {override!r}: expected key.path=value, e.g. training.learning_rate=1e-4")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"override {override!r}: {part} is a value, not a section")
        node = child
    node[leaf] = value


def _describe(err: dict[str, Any]) -> str:
    loc = [str(part) for part in err["loc"] if not str(part).startswith("function-after")]
    where = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key{_suggestion(err['loc'])}"
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error") and not loc:
        return message
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{where}: {message}{shown}"


def _suggestion(loc: tuple[Any, ...]) -> str:
    section: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        field = section.model_fields.get(str(part)) if section else None
        section = _section_type(field.annotation) if field else None
    if section is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(section.model_fields)}"


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
