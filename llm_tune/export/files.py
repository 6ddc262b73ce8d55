"""The files beside an export's weights that decide how it is used: the chat template training rendered
with, and a generation config whose EOS stops generation where training taught the model to stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llm_tune.recipe.schema import Recipe


def export_chat_template(tokenizer: Any, recipe: Recipe) -> str | None:
    """The recipe's own training template (without its {% generation %} markers, which render to nothing
    but which other runtimes do not know), else the stock template the run saved."""
    if recipe.data.chat_template and Path(recipe.data.chat_template).is_file():
        text = Path(recipe.data.chat_template).read_text(encoding="utf-8")
        return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", text)
    return tokenizer.chat_template


def stop_token_ids(tokenizer: Any, recipe: Recipe) -> list[int]:
    """EOS (what TRL appends to raw text and classification answers) plus the chat template's end-of-turn
    token, which ends every assistant reply that training rendered through the template."""
    ids = [tokenizer.eos_token_id]
    if tokenizer.chat_template and recipe.data.format != "completion":
        end = end_of_turn_id(tokenizer)
        if end is not None and end not in ids:
            ids.append(end)
    return [i for i in ids if i is not None]


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The first special token the chat template writes after an assistant reply."""
    marker = "llmtuneendmarker"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that refuses this shape (e.g. needs a system turn) has no usable answer
        return None
    after = text[text.find(marker) + len(marker) :] if marker in text else ""
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    for token in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token in special:
            return token
    return None


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
