"""How resolved recipes differ, key by key (dotted paths): resume checks, sweeps, `compare` and the comparison page
all ask here."""

from __future__ import annotations

from typing import Any

from llm_tune.recipe.schema import Recipe


def flat(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as {dotted.key: value}; lists stay whole values."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(recipe.model_dump(mode="json"), "")
    return out


def differing(recipes: list[Recipe], ignore: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """{key: [each recipe's value]} for every key (outside `ignore`) whose values are not all equal, in key order;
    a key a recipe lacks is None there."""
    flats = [flat(r) for r in recipes]
    keys = sorted(set().union(*flats) - ignore)
    values = {key: [f.get(key) for f in flats] for key in keys}
    return {key: vals for key, vals in values.items() if any(v != vals[0] for v in vals[1:])}


def differences(old: Recipe, new: Recipe) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} for every key whose value differs (a key only one side has: None there)."""
    return {key: (a, b) for key, (a, b) in differing([old, new]).items()}
