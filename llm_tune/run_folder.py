"""The run folder's files. Only the main process writes; each file is written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.recipe.loading import resolved_yaml

RESOLVED_RECIPE = "recipe.resolved.yaml"
METRICS = "metrics.json"
ADAPTER = "adapter"
MODEL = "model"
CHECKPOINTS = "checkpoints"


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_recipe(out: Path, recipe: Recipe) -> None:
    write_text_atomic(out / RESOLVED_RECIPE, resolved_yaml(recipe))


def weights_folder(out: Path, strategy_kind: str) -> Path:
    """adapter/ for lora and qlora, model/ for full and frozen."""
    return out / (ADAPTER if strategy_kind in ("lora", "qlora") else MODEL)
