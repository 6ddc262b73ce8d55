"""`llm_tune compare RUN_DIR ...`: one table of the runs' recipe keys that differ and their metrics."""

from __future__ import annotations

from pathlib import Path

from llm_tune.errors import UserError
from llm_tune.recipe.diff import differing
from llm_tune.run_folder import RunFolder, read_json
from llm_tune.sweep.table import cell, print_table

# metrics.json keys worth a row, in this order, when any run has them.
METRICS = (
    "eval_accuracy", "eval_macro_f1", "eval_loss", "best_metric", "best_step", "stopped_early", "train_loss",
    "train_steps", "train_runtime_s", "tokens_per_s", "trainable_params",
)  # fmt: skip


def compare_rows(run_dirs: list[Path]) -> tuple[list[str], list[list[str]]]:
    """(column names, rows): one row per differing recipe key, then one per metric."""
    folders = [RunFolder(Path(d)) for d in run_dirs]
    recipes = [folder.read_recipe() for folder in folders]  # a folder that is no run: one error line
    metrics = [read_json(f.metrics) if f.metrics.is_file() else {} for f in folders]
    names = [f.root.name for f in folders]
    if len(set(names)) < len(names):
        names = [str(f.root) for f in folders]
    rows = [[key, *map(cell, values)] for key, values in differing(recipes, ignore=frozenset({"output_dir"})).items()]
    rows += [[key, *(cell(m.get(key)) for m in metrics)] for key in METRICS if any(key in m for m in metrics)]
    return ["key", *names], rows


def compare_command(run_dirs: list[Path]) -> None:
    missing = [str(d) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        raise UserError(f"compare: run folder not found: {missing[0]}")
    print_table(*compare_rows(run_dirs))
