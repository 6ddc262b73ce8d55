"""How two resolved recipes differ, key by key (dotted paths), for resume checks and run comparisons."""

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


def differences(old: Recipe, new: Recipe) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} for every key whose value differs (a key only one side has: None there)."""
    a, b = flat(old), flat(new)
    return {key: (a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)}
