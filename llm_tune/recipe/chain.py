"""A chained recipe: one YAML file of several documents separated by `---`, each a whole recipe (`inherits:`
included), which `python -m llm_tune FILE` trains in order: SFT, then DPO from the SFT run (the second stage's
`model.from_run` names the first stage's output_dir).

Overrides `KEY=VALUE` apply to every stage; `stageN.KEY=VALUE` to stage N alone (1-based). A stage whose
`model.from_run` names an earlier stage's output_dir as the file writes it follows that stage when an override moves
its output_dir. Every stage is checked before the first one trains, and every problem is reported at once, each
naming its stage. Torch-free, like the rest of recipe/.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from llm_tune.errors import UserError
from llm_tune.recipe.loading import read_documents, recipe_from, with_parents
from llm_tune.recipe.schema import Recipe

STAGE_OVERRIDE = re.compile(r"stage(\d+)\.(.+)", re.DOTALL)


def load_stages(path: str | Path, overrides: Sequence[str] = ()) -> list[Recipe]:
    """The file's stages, resolved and validated (one for a plain recipe); UserError lists every problem."""
    path = Path(path)
    documents = read_documents(path)
    if len(documents) == 1:
        if bad := [o for o in overrides if STAGE_OVERRIDE.match(o)]:
            raise UserError(f"override {bad[0]!r}: {path} is a one-stage recipe; drop the stage prefix")
        return [recipe_from(documents[0], path, overrides, str(path))]
    per_stage = _overrides_by_stage(overrides, len(documents), path)
    stages, problems = [], []
    for i, data in enumerate(documents, 1):
        try:
            stages.append(recipe_from(data, path, per_stage[i], f"{path} (stage {i})"))
        except UserError as exc:
            problems += exc.problems
    if problems:
        raise UserError(*problems)
    _follow_moved_stages(stages, [with_parents(data, path).get("output_dir") for data in documents])
    if problems := chain_problems(stages, path):
        raise UserError(*problems)
    return stages


def load_checked_stages(path: str | Path, overrides: Sequence[str] = ()) -> list[Recipe]:
    """load_stages, then every cross-field rule of every stage (recipe/checks.py), all problems at once."""
    from llm_tune.recipe.checks import check_recipe

    stages = load_stages(path, overrides)
    several = len(stages) > 1
    problems = [f"{path}{f' (stage {i})' if several else ''}: {problem}"
                for i, stage in enumerate(stages, 1) for problem in check_recipe(stage)]  # fmt: skip
    if problems:
        raise UserError(*problems)
    return stages


def _overrides_by_stage(overrides: Sequence[str], count: int, path: Path) -> dict[int, list[str]]:
    by_stage: dict[int, list[str]] = {i: [] for i in range(1, count + 1)}
    for override in overrides:
        found = STAGE_OVERRIDE.match(override)
        if found is None:
            for own in by_stage.values():
                own.append(override)
            continue
        stage = int(found.group(1))
        if stage not in by_stage:
            raise UserError(f"override {override!r}: {path} has stages 1 to {count}; no stage {stage}")
        by_stage[stage].append(found.group(2))
    return by_stage


def _follow_moved_stages(stages: list[Recipe], written: list[str | None]) -> None:
    """A from_run naming an earlier stage's output_dir as the file writes it follows that stage where an override
    moved it."""
    for i, stage in enumerate(stages):
        for earlier, as_written in zip(stages[:i], written):
            source = stage.model.from_run
            if source is None or as_written is None or _same(as_written, earlier.output_dir):
                continue  # nothing to follow, or the earlier stage was not moved
            if _same(source, as_written):
                stage.model.from_run = earlier.output_dir


def chain_problems(stages: list[Recipe], path: Path) -> list[str]:
    """What makes the stages unable to run one after the other, found before the first trains."""
    problems = []
    for i, stage in enumerate(stages, 1):
        where = f"{path} (stage {i})"
        for j, earlier in enumerate(stages[: i - 1], 1):
            if _same(stage.output_dir, earlier.output_dir):
                problems.append(
                    f"{where}: output_dir {stage.output_dir} is stage {j}'s too; each stage needs its own folder"
                )
        source = stage.model.from_run
        later = [k for k, other in enumerate(stages[i:], i + 1) if source and _same(source, other.output_dir)]
        if later:
            problems.append(
                f"{where}: model.from_run {source} is the output_dir of stage {later[0]}, which runs later;"
                " order the stages so a run exists before another starts from it"
            )
    return problems


def _same(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()
