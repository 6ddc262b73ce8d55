"""Where a prompt ends and an answer starts, as training rendered it: the chat template a run trained with, a
prompt's token ids, the part of a row the model continues, and the tokens an answer stops at. Generation, exports,
classification and the doctor all ask here."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe


def export_chat_template(tokenizer: Any, recipe: Recipe) -> str | None:
    """The recipe's own training template (without its {% generation %} markers, which render to nothing
    but which other runtimes do not know), else the stock template the run saved."""
    if recipe.data.chat_template and Path(recipe.data.chat_template).is_file():
        text = Path(recipe.data.chat_template).read_text(encoding="utf-8")
        return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", text)
    return tokenizer.chat_template


def prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of a rendered prompt, ending where the answer starts."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]


def row_prompt_ids(tokenizer: Any, row: dict[str, Any]) -> list[int]:
    """The part of a row the model is asked to continue: the prompt, the chat up to its last reply, or half a text."""
    if "prompt" in row:
        return prompt_ids(tokenizer, row["prompt"])
    if "messages" in row:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return prompt_ids(tokenizer, messages[:last] or messages[:1])
    ids = tokenizer(row["text"])["input_ids"]
    return ids[: text_prompt_end(ids)]


def text_prompt_end(ids: list[int]) -> int:
    """A raw text (completion format) has no prompt: its first half stands in for one."""
    return max(1, len(ids) // 2)


def rendered_rows(recipe: Recipe, tokenizer: Any, count: int) -> list[dict[str, Any]]:
    """Up to `count` good rows of the run's data in TRL's format, validation first; [] if the files are gone. Only
    the files' first rows are read (a streamed file may be larger than memory)."""
    from datasets import Dataset

    from llm_tune.data.formats import render, row_problem

    for source in recipe.data.validation_sources + recipe.data.train_sources:
        try:
            rows = _first_rows(source.path, 10 * count)
        except UserError:
            continue  # data moved since training: the fallback prompts still verify the export
        labels = recipe.classification.labels
        good = [row for row in rows if row_problem(row, recipe.data, labels) is None]
        if good:
            picked = Dataset.from_list(good[:count])
            return list(render(picked, recipe.data, labels, tokenizer.chat_template is not None))
    return []


def _first_rows(spec: str, count: int) -> list[dict[str, Any]]:
    from llm_tune.data.formats import read_rows, read_stream

    if Path(spec).suffix == ".json":  # one document: read whole (its shapes are read_rows' to untangle)
        rows = read_rows(spec)
        return [rows[i] for i in range(min(len(rows), count))]
    return [row for _, row in itertools.islice(read_stream(spec), count)]


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
