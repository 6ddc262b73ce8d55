"""The run folder: one class that knows every path of a run, and atomic writes. Only the main process writes;
each file is written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.loading import load_recipe, resolved_yaml
from llm_tune.recipe.schema import Recipe


@dataclass(frozen=True)
class RunFolder:
    """OUTPUT_DIR of one run: what training writes there and where exports and evaluations go."""

    root: Path

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.resolved.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def trainer_state(self) -> Path:
        return self.root / "trainer_state.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def weights(self, recipe: Recipe) -> Path:
        """adapter/ for lora and qlora, model/ for full and frozen."""
        return self.root / ("adapter" if recipe.adapter else "model")

    def export(self, merged: bool) -> Path:
        return self.root / "export" / ("merged" if merged else "adapter")

    def is_run(self) -> bool:
        return self.recipe_file.is_file()

    def read_recipe(self) -> Recipe:
        if not self.is_run():
            raise UserError(f"{self.root}: not a run folder (no {self.recipe_file.name}); give the output_dir of a run")
        return load_recipe(self.recipe_file)

    def write_recipe(self, recipe: Recipe) -> None:
        write_text_atomic(self.recipe_file, resolved_yaml(recipe))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics, metrics)


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
