"""Loading a finished run's model back from its folder: the adapter on its base, or the saved model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune import run_folder
from llm_tune.recipe.schema import Recipe
from llm_tune.errors import UserError
from llm_tune.recipe.loading import load_recipe


@dataclass
class TrainedRun:
    recipe: Recipe
    model: Any
    tokenizer: Any

    @property
    def sequence_head(self) -> bool:
        return self.recipe.task == "classification" and self.recipe.classification.head == "sequence"


def read_run_recipe(run_dir: Path) -> Recipe:
    path = run_dir / run_folder.RESOLVED_RECIPE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run folder (no {run_folder.RESOLVED_RECIPE}); give the output_dir of a run")
    return load_recipe(path)


def load_trained(run_dir: Path) -> TrainedRun:
    """The run's trained model in eval mode, with the tokenizer it was trained with."""
    from transformers import AutoTokenizer

    from llm_tune.model.loading import choose_pad_token, load_model

    recipe = read_run_recipe(run_dir)
    weights = run_folder.weights_folder(run_dir, recipe.strategy.kind)
    if not weights.is_dir():
        raise UserError(f"{run_dir}: the run has no {weights.name}/ folder; did its training finish?")
    tokenizer = AutoTokenizer.from_pretrained(weights)
    choose_pad_token(tokenizer)
    sequence = recipe.task == "classification" and recipe.classification.head == "sequence"
    labels = recipe.classification.labels if sequence else None
    if recipe.strategy.kind in ("lora", "qlora"):
        from peft import PeftModel

        base = load_model(recipe.model, recipe.strategy, tokenizer, labels=labels)
        model = PeftModel.from_pretrained(base, weights)
    else:
        saved = recipe.model.model_copy(update={"name_or_path": str(weights)})
        model = load_model(saved, recipe.strategy, tokenizer, labels=labels)
    model.eval()
    return TrainedRun(recipe, model, tokenizer)
