"""`eval` and `predict`: a finished classifier run (its recipe, weights and tokenizer) scored on a file or on texts
given on the command line, read by its problem (classification/problems.py) as the end of training read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


def eval_command(run_dir: Path, data: str | None, batch_size: int | None) -> dict:
    from llm_tune.model.trained import load_trained

    run = load_trained(run_dir)
    recipe = run.recipe
    if not recipe.is_classification:
        raise UserError(f"{run_dir}: eval scores classification runs; this run's task is {recipe.task}")
    spec = data or recipe.data.validation_label  # one file: recipe/checks.py refuses a list for a classifier
    if spec is None:
        raise UserError(f"{run_dir}: the run has no validation file; pass --data FILE")
    if not Path(spec).is_file():
        raise UserError(f"--data: file not found: {spec}")
    batch_size = batch_size or recipe.training.per_device_eval_batch_size
    return evaluate_file(recipe, run.model, run.tokenizer, spec, batch_size, RunFolder(run_dir).eval)


def evaluate_file(recipe: Recipe, model: Any, tokenizer: Any, spec: str, batch_size: int, out: Path) -> dict[str, Any]:
    """Every row of a file scored (a bad row is an error naming it), reported and written to `out`."""
    from llm_tune.classification.evaluation import file_rows
    from llm_tune.classification.problems import problem_of

    problem = problem_of(recipe)
    rows = file_rows(recipe, spec, tokenizer)
    outputs, seconds = problem.raw_outputs(recipe, model, tokenizer, rows.prompts, batch_size)
    return problem.report(recipe, outputs, rows, out, seconds)


def predict_command(
    run_dir: Path, texts: list[str], batch_size: int | None, pairs: list[str] | None = None
) -> list[dict[str, float]]:
    from llm_tune.classification.problems import problem_of
    from llm_tune.data.formats import user_prompt
    from llm_tune.model.trained import load_trained

    pairing = _check_pairs(run_dir, texts, pairs)
    run = load_trained(run_dir)
    recipe = run.recipe
    if not recipe.is_classification:
        raise UserError(f"{run_dir}: predict needs a classification run; this run's task is {recipe.task}")
    labels = recipe.classification.labels
    conversational = run.tokenizer.chat_template is not None
    prompts = [user_prompt(t, recipe.data, labels, conversational, p) for t, p in zip(texts, pairing)]
    batch_size = batch_size or recipe.training.per_device_eval_batch_size
    problem = problem_of(recipe)
    outputs, _ = problem.raw_outputs(recipe, run.model, run.tokenizer, prompts, batch_size)
    results = [problem.prediction(recipe, row) for row in outputs]
    for text, result in zip(texts, results):
        shown = "  ".join(f"{key} {value:.4f}" for key, value in result.items()) or "(no label over its threshold)"
        print(f"{text}\n  {shown}", flush=True)
    return results


def _check_pairs(run_dir: Path, texts: list[str], pairs: list[str] | None) -> list[str | None]:
    """The second text of each text: --text-pair exactly when the run reads pairs, one per --text."""
    from llm_tune.run_folder import RunFolder

    pair_field = RunFolder(run_dir).read_recipe().data.fields.text_pair
    if pair_field and len(pairs or []) != len(texts):
        raise UserError(
            f"--text-pair: {run_dir} classifies text pairs ({pair_field}); give one --text-pair per --text"
            f" ({len(texts)} texts, {len(pairs or [])} pairs)"
        )
    if pairs and not pair_field:
        raise UserError(f"--text-pair: {run_dir} classifies single texts (no data.fields.text_pair); drop --text-pair")
    return list(pairs) if pair_field else [None] * len(texts)
