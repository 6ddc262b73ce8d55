"""Reading a recipe: YAML, `inherits:` parents, dotted overrides, then the schema.

Every problem is collected and reported at once, one line each, with the YAML path. Nothing here
imports torch, so `validate` answers in about a second.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llm_tune.errors import UserError
from llm_tune.recipe.preference import PREFERENCE_METHODS
from llm_tune.recipe.schema import STRATEGIES, Recipe

# Sections typed by a tag key: (tag, {tag value: class}, default tag). Changing the tag drops the keys the new
# class does not take, so `preference.method=kto` works on a DPO recipe as `strategy.kind=full` on a LoRA one.
TAGGED = {"strategy": ("kind", STRATEGIES, "lora"), "preference": ("method", PREFERENCE_METHODS, "dpo")}


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """The fully resolved, validated recipe; raises UserError listing every problem. A chained recipe (several
    YAML documents, recipe/chain.py) is refused: only `python -m llm_tune FILE` runs one."""
    path = Path(path)
    documents = read_documents(path)
    if len(documents) > 1:
        raise UserError(
            f"{path}: a chained recipe of {len(documents)} stages (YAML documents); `python -m llm_tune {path}` runs"
            " them in order, and `validate` checks them; this command takes a one-stage recipe (one stage's file)"
        )
    return recipe_from(documents[0], path, overrides, str(path))


def recipe_from(data: dict[str, Any], path: Path, overrides: Sequence[str], where: str) -> Recipe:
    """One document of `path` resolved (its parents, then the overrides) and validated; problems start with
    `where`."""
    raw = with_parents(data, path)
    # A change of strategy kind (preference method) goes first, so that the keys given with it are checked against
    # the new kind.
    tags = tuple(f"{section}.{tag}=" for section, (tag, _, _) in TAGGED.items())
    for override in sorted(overrides, key=lambda o: not o.startswith(tags)):
        _apply_override(raw, override)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(*(f"{where}: {_describe(err)}" for err in exc.errors())) from None


def resolved_yaml(recipe: Recipe, kind: str | None = None) -> str:
    """The recipe as YAML; with `kind`, a first comment line naming the kind of run (validate prints it)."""
    head = f"# a {kind} run: `llm_tune keys` says which keys each kind honours\n" if kind else ""
    return head + str(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        self.key, self.first, self.second = key, first, second


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one
    silently, so a second `training:` section would replace the first."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges; explicit keys may override those
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise _DuplicateKey(key, lines[key], line)
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


def read_documents(path: Path) -> list[dict[str, Any]]:
    """A recipe file's YAML documents, each a mapping (one, unless the file chains stages with `---`)."""
    if not path.is_file():
        raise UserError(
            f"{path}: recipe file not found" if not path.is_dir() else f"{path}: a folder, not a recipe file"
        )
    try:
        loaded = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_UniqueKeys))  # noqa: S506 (safe)
    except _DuplicateKey as dup:
        raise UserError(
            f"{path}: key {dup.key!r} is given twice (lines {dup.first} and {dup.second}); YAML would keep only the"
            " second; merge them into one"
        ) from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    documents = [data for data in loaded if data is not None] or [{}]  # `---` at the top opens no empty stage
    for i, data in enumerate(documents, 1):
        if not isinstance(data, dict):
            stage = f" (document {i})" if len(documents) > 1 else ""
            raise UserError(f"{path}{stage}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return documents


def _read_yaml(path: Path) -> dict[str, Any]:
    """A parent recipe (`inherits:`): one document."""
    documents = read_documents(path)
    if len(documents) > 1:
        raise UserError(f"{path}: inherits: a chained recipe ({len(documents)} stages) cannot be a parent; name one")
    return documents[0]


def with_parents(data: dict[str, Any], path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A document of `path` merged over the parents its `inherits:` names, relative to `path`."""
    seen = seen or (path.resolve(),)
    data = dict(data)
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: inherits: expected a path to a parent recipe, got {parent!r}")
    base = _readwith_parents(path.parent / parent, seen)
    for section, (tag, _, _) in TAGGED.items():
        child = data.get(section)
        if isinstance(child, dict) and isinstance(base.get(section), dict) and tag in child:
            base[section] = _keys_of_kind(base[section], child[tag], section)
    return _deep_merge(base, data)


def _readwith_parents(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise UserError(f"{path}: inherits: circular inheritance ({chain})")
    return with_parents(_read_yaml(path), path, (*seen, resolved))


def _keys_of_kind(values: dict[str, Any], kind: Any, section: str = "strategy") -> dict[str, Any]:
    """An inherited strategy (preference) section when the kind (method) changes: only the keys the new kind has
    (a frozen recipe that inherits a LoRA one does not inherit its rank). Keys written next to the new kind are still
    checked."""
    tag, classes, default = TAGGED[section]
    if kind == values.get(tag, default) or kind not in classes:
        return values
    known = set().union(*(cls.model_fields for cls in classes.values()))
    wanted = classes[kind].model_fields
    return {key: value for key, value in values.items() if key in wanted or key not in known}


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
    if len(parents) == 1 and parents[0] in TAGGED and leaf == TAGGED[parents[0]][0]:
        kept = _keys_of_kind(node, value, parents[0])
        node.clear()
        node.update(kept)
    node[leaf] = value


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err["loc"] if not str(part).startswith("function-after")]
    kind = None
    if loc[:1] and loc[0] in TAGGED and len(loc) > 1 and loc[1] in TAGGED[loc[0]][1]:
        kind = loc.pop(1)  # the discriminated union's tag: not a key the user wrote
    where = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        if kind is not None:
            return f"{where}: {_not_of_kind(loc[-1], kind, loc[0])}"
        return f"{where}: unknown key{_suggestion(err['loc'])}"
    if err["type"] == "union_tag_invalid" and loc[:1] and loc[0] in TAGGED:
        tag, classes, _ = TAGGED[loc[0]]
        got = err["input"].get(tag) if isinstance(err.get("input"), dict) else None
        kinds = [repr(kind) for kind in classes]
        return f"{where}.{tag}: Input should be {', '.join(kinds[:-1])} or {kinds[-1]} (got {got!r})"
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error") and not loc:
        return message
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    if err["type"] == "string_type" and isinstance(got, dict):
        shown = " (the value was read as a YAML mapping: quote a text that holds ': ')"
    return f"{where}: {message}{shown}"


def _not_of_kind(key: str, kind: str, section: str = "strategy") -> str:
    """A strategy (preference) key that the chosen kind (method) does not take: name the kinds that do."""
    tag, classes, _ = TAGGED[section]
    owners = [name for name, cls in classes.items() if key in cls.model_fields]
    takes = ", ".join(k for k in classes[kind].model_fields if k != tag) or "no other keys"
    if owners:
        return f"a key of {section} {tag} {' or '.join(owners)}, not of {tag} {kind} (which takes: {takes})"
    close = difflib.get_close_matches(key, list(classes[kind].model_fields), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"{tag} {kind} takes: {takes}"
    return f"unknown key ({hint})"


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
