"""`llm_tune sweep RECIPE --vary key=[a,b] ...`: trials as ordinary run folders OUTPUT_DIR/trial-K, ranked on the
recipe's validation metric, in a table and OUTPUT_DIR/sweep.csv.

A grid runs every combination in order; `--search random` lets Optuna sample (lists and ranges), pruning trials
whose intermediate evaluations trail the others. Trials run one after another in this process. A stopped sweep
resumes when run again: a grid skips the trials whose folders hold a finished run of the same recipe (and resumes
an interrupted one from its last checkpoint); a random search continues its Optuna study (OUTPUT_DIR/sweep-optuna.log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.recipe.checks import load_checked
from llm_tune.recipe.diff import differences
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder, read_json
from llm_tune.sweep.space import Dimension, as_overrides, grid, parse_space
from llm_tune.sweep.table import Trial, print_ranking, write_csv

SEARCHES = ("grid", "random")


def sweep_command(
    recipe_path: Path, overrides: list[str], varies: list[str], search: str, trials: int | None, seed: int
) -> list[Trial]:
    space = parse_space(varies)
    base = load_checked(recipe_path, overrides)
    if base.data.validation is None and base.data.validation_fraction is None:
        raise UserError(
            f"{recipe_path}: sweep ranks trials on validation rows; set data.validation or data.validation_fraction"
        )
    if search not in SEARCHES:
        raise UserError(f"--search: expected one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "random" and (trials is None or trials < 1):
        raise UserError("--trials: --search random needs the number of trials, e.g. --trials 8")
    root = Path(base.output_dir)
    make = _recipe_maker(recipe_path, overrides, root)
    if search == "grid":
        if trials is not None:
            raise UserError("--trials: a grid runs every combination; drop --trials, or use --search random")
        results = _run_grid(grid(space), make, base)
    else:
        _check_endpoints(space, make)
        results = _run_random(space, trials, seed, make, base, root)
    print_ranking(results, space, base.training.metric_for_best_model, base.training.greater_is_better)
    csv = write_csv(root / "sweep.csv", results, space, base.training.metric_for_best_model)
    say(f"wrote {csv}")
    return results


def _recipe_maker(recipe_path: Path, overrides: list[str], root: Path):
    def make(values: dict[str, Any], number: int) -> Recipe:
        return load_checked(recipe_path, [*overrides, *as_overrides(values), f"output_dir={root / f'trial-{number}'}"])

    return make


def _check_endpoints(space: list[Dimension], make) -> None:
    """Every value a dimension can take at its ends is a valid recipe, before the first trial starts."""
    first = {d.key: d.endpoints()[0] for d in space}
    problems: list[str] = []
    for dim in space:
        for value in dim.endpoints():
            try:
                make({**first, dim.key: value}, 0)
            except UserError as exc:
                problems += [f"--vary {dim.key}={value!r}: {p}" for p in exc.problems]
    if problems:
        raise UserError(*dict.fromkeys(problems))


def _run_grid(combos: list[dict[str, Any]], make, base: Recipe) -> list[Trial]:
    recipes, problems = [], []
    for number, values in enumerate(combos):  # every trial's recipe is valid before the first starts
        try:
            recipes.append(make(values, number))
        except UserError as exc:
            problems += [f"trial-{number} {values}: {p}" for p in exc.problems]
    if problems:
        raise UserError(*problems)
    results = []
    for number, (values, recipe) in enumerate(zip(combos, recipes)):
        folder = RunFolder(Path(recipe.output_dir))
        if _finished(folder, recipe):
            say(f"trial-{number} {values}: finished before, skipped")
        else:
            if (folder.checkpoints).is_dir():  # interrupted: carry on from its last complete checkpoint
                recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"resume": "auto"})})
            say(f"trial-{number} of {len(combos)}: {values}")
            _train(recipe)
        results.append(_trial(number, values, folder, base, "finished"))
    return results


def _finished(folder: RunFolder, recipe: Recipe) -> bool:
    """A finished run of this same recipe (the labels a run resolves and the resume key aside)."""
    if not folder.is_run() or not folder.metrics.is_file():
        return False
    ignored = ("classification.labels", "training.resume")
    return not [key for key in differences(folder.read_recipe(), recipe) if key not in ignored]


def _train(recipe: Recipe, callbacks: list[Any] = ()) -> dict[str, Any]:
    from llm_tune.pipeline import train

    return train(recipe, list(callbacks))


def _trial(number: int, values: dict[str, Any], folder: RunFolder, base: Recipe, status: str) -> Trial:
    metrics = read_json(folder.metrics) if folder.metrics.is_file() else {}
    metric = base.training.metric_for_best_model
    value = metrics.get("best_metric") if metrics.get("best_metric") is not None else metrics.get(metric)
    return Trial(
        number, values, value, metrics.get("best_step"), metrics.get("train_runtime_s"), status, str(folder.root)
    )


def _run_random(space: list[Dimension], trials: int, seed: int, make, base: Recipe, root: Path) -> list[Trial]:
    from llm_tune.sweep.search import run_study

    def objective(values: dict[str, Any], number: int, callbacks: list[Any]) -> RunFolder:
        recipe = make(values, number)
        say(f"trial-{number}: {values}")
        _train(recipe, callbacks)
        return RunFolder(Path(recipe.output_dir))

    finished = run_study(space, trials, seed, base.training, root, objective)
    return [_trial(n, values, RunFolder(root / f"trial-{n}"), base, status) for n, values, status in finished]
