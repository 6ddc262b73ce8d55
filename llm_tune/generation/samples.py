"""The few greedy generations the end of an SFT run saves in RUN_DIR/samples.jsonl, so the run report shows what
the model answers without loading it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import write_text_atomic

SAMPLES = 3  # prompts (validation rows first, else training rows)
SAMPLE_NEW_TOKENS = 96


def write_samples(model: Any, tokenizer: Any, recipe: Recipe, path: Path) -> int:
    """Greedy answers to a few of the run's own prompts, with the rows' reference answers; the count written."""
    from llm_tune.data.prompts import export_chat_template, rendered_rows, row_prompt_ids, stop_token_ids
    from llm_tune.model.decoding import greedy
    from llm_tune.model.precision import mixed_precision

    stock = tokenizer.chat_template
    tokenizer.chat_template = export_chat_template(tokenizer, recipe)  # the template training rendered with
    try:
        model.eval()
        stop, autocast = stop_token_ids(tokenizer, recipe), mixed_precision(recipe.model)
        samples = []
        for row in rendered_rows(recipe, tokenizer, SAMPLES):
            ids = row_prompt_ids(tokenizer, row)[-recipe.data.max_length :]
            new = greedy(
                model, ids, max_new_tokens=SAMPLE_NEW_TOKENS, stop=stop, pad=tokenizer.pad_token_id, autocast=autocast
            )
            shown, reference = _shown(row, tokenizer)
            samples.append(
                {
                    "prompt": shown,
                    "reference": reference,
                    "generation": tokenizer.decode(new, skip_special_tokens=True).strip(),
                }
            )
    finally:
        tokenizer.chat_template = stock
    write_text_atomic(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    return len(samples)


def _shown(row: dict[str, Any], tokenizer: Any) -> tuple[str, str]:
    """A row's prompt as a reader wants it (the user's words, not the template's markup) and its reference answer."""
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            return prompt[-1]["content"], completion[-1]["content"]
        return prompt, completion
    if "messages" in row:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        shown = "\n".join(f"{m['role']}: {m['content']}" for m in messages[:last] if m["role"] != "system")
        return shown, messages[last]["content"]
    from llm_tune.data.prompts import text_prompt_end

    ids = tokenizer(row["text"])["input_ids"]
    half = text_prompt_end(ids)
    return tokenizer.decode(ids[:half]), tokenizer.decode(ids[half:])
