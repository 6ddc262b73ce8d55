"""Supervised fine-tuning of a causal LM (alpaca, chat, completion rows; or labelled rows trained as answers):
TRL's SFTTrainer (train/trainers.py), the rows tokenized once (data/tokens.py) or streamed (data/stream.py)."""

from __future__ import annotations

from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder
from llm_tune.tasks.base import Prepared, Task


class SftTask(Task):
    kind = "sft"

    def describe(self) -> str:
        return f"sft ({self.recipe.data.format} rows)"

    def data(self, recipe: Recipe, tokenizer: Any) -> tuple[Any, Recipe]:
        if recipe.data.streaming:  # the first rows now; the trainer streams the file
            from llm_tune.data.stream import load_stream_splits

            return load_stream_splits(recipe.data, tokenizer), recipe
        from llm_tune.data.formats import load_splits

        labelled = recipe.data.labelled  # labels trained as answers: the run's recipe records the label set
        splits = load_splits(recipe.data, recipe.classification.labels if labelled else None, tokenizer)
        if not labelled:
            return splits, recipe
        classification = recipe.classification.model_copy(update={"labels": splits.labels})
        return splits, recipe.model_copy(update={"classification": classification})

    def arguments(self, prepared: Prepared, out: RunFolder) -> Any:
        from llm_tune.train.trainer import training_arguments

        return training_arguments(prepared.recipe, out, prepared.splits.validation is not None)

    def model(self, prepared: Prepared) -> tuple[Any, tuple[int, int]]:
        return strategy_model(prepared.recipe, prepared.tokenizer)

    def trainer(self, prepared: Prepared, model: Any, args: Any, out: RunFolder) -> Any:
        from llm_tune.train.trainer import build_trainer

        return build_trainer(prepared.recipe, model, prepared.tokenizer, prepared.splits, out, args)


def strategy_model(recipe: Recipe, tokenizer: Any, head: Any = None) -> tuple[Any, tuple[int, int]]:
    """The base with the strategy applied, and its (trainable, total) parameter counts; `head(model)` prepares a
    classifier head before the strategy freezes what does not train."""
    from transformers import set_seed

    from llm_tune.model.loading import load_model
    from llm_tune.model.strategies import apply_strategy, parameter_counts

    # Fresh weights (LoRA A matrices, a new head) must be the same in every run and on every rank, or neither
    # resuming nor comparing batch layouts can be exact.
    set_seed(recipe.training.seed)
    labels = recipe.head_labels
    model = load_model(recipe.model, tokenizer, labels=labels, four_bit=recipe.four_bit)
    if head is not None:
        head(model)
    model = apply_strategy(
        model,
        recipe.strategy,
        classifier=labels is not None,
        gradient_checkpointing=recipe.training.gradient_checkpointing,
    )
    return model, parameter_counts(model)
