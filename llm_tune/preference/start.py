"""Where a preference run starts: the base with the recipe's strategy, or a finished SFT run (model.from_run).

An adapter run continues: its adapter loads trainable on the base it trained on, and TRL copies it into a frozen
`ref` adapter, so the reference is the SFT policy. A full or frozen run's saved model becomes the model the
recipe's strategy applies to (and TRL's reference, loaded from the same folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


def from_run_problems(recipe: Recipe) -> list[str]:
    """What is wrong with model.from_run, found without loading weights."""
    source = recipe.model.from_run
    if source is None:
        return []
    run = RunFolder(Path(source))
    if not run.is_run():
        return [f"model.from_run: {source} is not a run folder (no {run.recipe_file.name}); give a finished SFT run"]
    try:
        trained = run.read_recipe()
    except UserError as exc:
        return [f"model.from_run: {source}: its recipe does not load ({exc.problems[0]})"]
    if trained.is_classification:
        return [f"model.from_run: {source} is a classification run; start from an SFT (or preference) run"]
    if not run.weights(trained).is_dir():
        return [f"model.from_run: {source} has no {run.weights(trained).name}/ folder; did its training finish?"]
    if getattr(recipe.preference, "reference", None) == "base" and not trained.adapter:
        return [
            f"preference.reference: base, but {source} trained a full model: the base as reference would be a second"
            " full model in memory; use reference: start (the SFT model)"
        ]
    start = recipe.model.name_or_path  # a resolved recipe of a run from a full model names that model's folder
    if not _same_path(trained.model.name_or_path, start) and not _same_path(str(run.weights(trained)), start):
        return [
            f"model.name_or_path: {recipe.model.name_or_path}, but the run in model.from_run trained on"
            f" {trained.model.name_or_path}; set model.name_or_path to that base"
        ]
    return []


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def resolved_start(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """The recipe as the run really starts, and what the console should hear about it: from an adapter run, that
    run's strategy (its adapter continues, with its own settings); from a full run, its saved model as
    model.name_or_path (exports merge into it, and TRL's reference loads it). A new recipe: the user's is kept."""
    if recipe.model.from_run is None:
        return recipe, []
    run = RunFolder(Path(recipe.model.from_run))
    trained = run.read_recipe()
    weights = run.weights(trained)
    if trained.adapter:
        if recipe.strategy == trained.strategy:
            return recipe, []
        return recipe.model_copy(update={"strategy": trained.strategy}), [
            f"strategy  continuing the adapter of {run.root} (strategy {trained.strategy.kind}, its own settings);"
            " the recipe's strategy section is replaced by the run's"
        ]
    if _same_path(recipe.model.name_or_path, str(weights)):
        return recipe, []  # resolved already (a resumed run's saved recipe)
    model = recipe.model.model_copy(update={"name_or_path": str(weights)})
    return recipe.model_copy(update={"model": model}), [
        f"model     starting from {weights} (the full model {run.root} trained)"
    ]


def starting_model(recipe: Recipe, tokenizer: Any) -> Any:
    """The model a preference run trains, before TRL wraps it, from the resolved recipe (resolved_start)."""
    from transformers import set_seed

    from llm_tune.model.loading import load_model
    from llm_tune.model.strategies import apply_strategy

    set_seed(recipe.training.seed)  # fresh adapter weights: the same in every run and on every rank
    base = load_model(recipe.model, tokenizer, four_bit=recipe.four_bit)
    if recipe.model.from_run is not None and recipe.adapter:
        run = RunFolder(Path(recipe.model.from_run))
        trained = run.read_recipe()
        if trained.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, str(run.weights(trained)), is_trainable=True)
            if recipe.training.gradient_checkpointing:
                model.enable_input_require_grads()
            return model
    return apply_strategy(
        base, recipe.strategy, classifier=False, gradient_checkpointing=recipe.training.gradient_checkpointing
    )


def base_reference(recipe: Recipe, trainer: Any) -> None:
    """preference.reference: base on a run that starts from an SFT run: the reference becomes the base model."""
    if getattr(recipe.preference, "reference", "start") != "base" or recipe.model.from_run is None:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # TRL then scores the reference with the adapter disabled: the base
