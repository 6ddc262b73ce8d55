"""The generation config beside an export's weights, whose EOS stops generation where training taught the model
to stop (the stop tokens themselves are llm_tune.data.prompts')."""

from __future__ import annotations

from typing import Any

from llm_tune.data.prompts import stop_token_ids
from llm_tune.recipe.schema import Recipe


def generation_config(recipe: Recipe, tokenizer: Any) -> Any:
    """The base model's generation settings, with EOS and padding as training used them."""
    from transformers import GenerationConfig

    from llm_tune.recipe.sources import ModelSource

    source = ModelSource.parse(recipe.model.name_or_path)
    try:
        config = GenerationConfig.from_pretrained(source.folder, revision=recipe.model.revision)
    except (OSError, ValueError):
        config = GenerationConfig()
    stop = stop_token_ids(tokenizer, recipe)
    config.eos_token_id = stop[0] if len(stop) == 1 else stop
    config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    return config
