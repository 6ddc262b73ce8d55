"""Loading a finished run's model back from its folder (the adapter on its base, or the saved model), or an export
as a user would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


@dataclass
class TrainedRun:
    recipe: Recipe
    model: Any
    tokenizer: Any


def load_trained(run_dir: Path) -> TrainedRun:
    """The run's trained model in eval mode, with the tokenizer it was trained with."""
    from transformers import AutoTokenizer

    from llm_tune.model.loading import choose_pad_token, load_model

    run = RunFolder(Path(run_dir))
    recipe = run.read_recipe()
    weights = run.weights(recipe)
    if not weights.is_dir():
        raise UserError(f"{run_dir}: the run has no {weights.name}/ folder; did its training finish?")
    tokenizer = AutoTokenizer.from_pretrained(weights)
    choose_pad_token(tokenizer)
    labels = recipe.head_labels
    if recipe.adapter:
        from peft import PeftModel

        base = load_model(recipe.model, tokenizer, labels=labels, four_bit=recipe.four_bit)
        model = PeftModel.from_pretrained(base, weights)
    else:
        saved = recipe.model.model_copy(update={"name_or_path": str(weights)})
        model = load_model(saved, tokenizer, labels=labels)
    model.eval()
    return TrainedRun(recipe, model, tokenizer)


def load_exported_model(folder: Path, classifier: bool, dtype: str) -> Any:
    """The export loaded exactly as a user would: the plain Auto class, no llm_tune code involved."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    return auto.from_pretrained(folder, dtype=getattr(torch, dtype))
