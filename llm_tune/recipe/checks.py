"""Cross-field rules, checked before any model loads: each problem is one line naming its key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llm_tune.recipe.schema import Recipe
from llm_tune.data.formats import check_data_paths
from llm_tune.model.loading import check_model_source, num_hidden_layers


def check_recipe(recipe: Recipe) -> list[str]:
    problems = check_model_source(recipe.model) + check_data_paths(recipe.data)
    strategy, data, training = recipe.strategy, recipe.data, recipe.training
    if strategy.kind == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        problems.append("strategy.kind: qlora needs bitsandbytes; pip install bitsandbytes, or use strategy.kind=lora")
    layers = num_hidden_layers(recipe.model) if not problems else None
    if strategy.kind in ("lora", "qlora") and layers is not None and strategy.layers_to_transform:
        outside = [i for i in strategy.layers_to_transform if not 0 <= i < layers]
        if outside:
            problems.append(f"strategy.layers_to_transform: {outside} outside the model's blocks 0 to {layers - 1}")
    if strategy.kind == "frozen" and layers is not None:
        if strategy.trainable_layers > layers:
            problems.append(
                f"strategy.trainable_layers: {strategy.trainable_layers}, but the model has {layers} blocks;"
                f" choose 1 to {layers}"
            )
    if recipe.task == "classification" and data.format != "classification":
        problems.append(f"data.format: task classification needs data.format: classification, not {data.format}")
    sequence_head = recipe.task == "classification" and recipe.classification.head == "sequence"
    if training.packing and sequence_head:
        problems.append("training.packing: a sequence-classification head scores whole rows; set packing: false")
    if training.resume not in (None, "auto") and not Path(training.resume).is_dir():
        problems.append(f"training.resume: {training.resume} is not a checkpoint folder; use auto or a checkpoint path")
    if recipe.classification.labels is not None and len(set(recipe.classification.labels)) < 2:
        problems.append("classification.labels: give at least two distinct labels")
    return problems
