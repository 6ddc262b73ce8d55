"""Preference rows one at a time: their shape, why one cannot be trained on, and its rendering in TRL's forms.

Three row shapes (TRL's column names):
  paired      {prompt, chosen, rejected}: text, or conversational (lists of {role, content})
  implicit    {chosen, rejected}: two whole conversations sharing the prompt turns (TRL's extract_prompt)
  unpaired    {prompt, completion, label: bool}: KTO's form
Every row of a file has one shape. Text rows go through the model's chat template when it has one, as alpaca rows
do, so a preference run continues an SFT run on the same rendering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_tune.data.turns import instruction_pair, with_system
from llm_tune.recipe.data import DataConfig

if TYPE_CHECKING:
    from datasets import Dataset

_ROLES = {"system", "user", "assistant"}


def row_shape(row: dict[str, Any]) -> str:
    """paired, implicit or unpaired."""
    if "chosen" in row or "rejected" in row:
        return "paired" if row.get("prompt") is not None else "implicit"
    return "unpaired"


def pair_problem(row: dict[str, Any], shape: str | None = None) -> str | None:
    """Why a preference row cannot be trained on (no tokenizer needed), or None. `shape`: the file's shape."""
    mine = row_shape(row)
    if shape is not None and mine != shape and {mine, shape} != {"paired", "implicit"}:
        return f"a {mine} row in a file of {shape} rows; every row needs the same columns"
    if mine == "unpaired":
        return _unpaired_problem(row)
    for key in ("chosen", "rejected"):
        problem = _part_problem(row.get(key), key, answer=mine == "paired")
        if problem:
            return problem
    if row["chosen"] == row["rejected"]:
        return "'chosen' and 'rejected' are identical; a pair needs two different answers"
    if mine == "implicit":
        if not isinstance(row["chosen"], list) or not isinstance(row["rejected"], list):
            return "without a 'prompt', 'chosen' and 'rejected' must be whole conversations sharing the prompt turns"
        split = _extract_prompt(row)
        if not split["prompt"]:
            return "'chosen' and 'rejected' share no prompt turns; give a 'prompt' column"
        if not split["chosen"] or not split["rejected"]:
            return "one of 'chosen' and 'rejected' is the other's prefix: nothing left to compare"
        return None
    problem = _part_problem(row.get("prompt"), "prompt", answer=False)
    if problem:
        return problem
    if isinstance(row["prompt"], list) != isinstance(row["chosen"], list):
        return "'prompt' and 'chosen' must both be text or both be conversations"
    return None


def _unpaired_problem(row: dict[str, Any]) -> str | None:
    for key in ("prompt", "completion"):
        problem = _part_problem(row.get(key), key, answer=key == "completion")
        if problem:
            return problem
    label = row.get("label")
    if not isinstance(label, bool):
        shown = "missing" if label is None else f"{type(label).__name__} {label!r:.40}"
        return f"'label' must be true or false (desirable or not), got {shown}"
    return None


def _part_problem(value: Any, key: str, answer: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return f"missing or empty '{key}'"
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"'{key}' must be text or a list of {{role, content}}, got {type(value).__name__}"
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"'{key}' message {i}: expected {{role, content}} with a role of {sorted(_ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"'{key}' message {i}: content must be a string"
    if answer and (value[-1]["role"] != "assistant" or not value[-1]["content"].strip()):
        return f"missing or empty '{key}': its last message must be a non-empty assistant turn"
    return None


def _extract_prompt(row: dict[str, Any]) -> dict[str, Any]:
    from trl.data_utils import extract_prompt

    return extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})


def render_row(row: dict[str, Any], cfg: DataConfig, conversational: bool) -> dict[str, Any]:
    """A good row in TRL's explicit-prompt form; text rows through the chat template when there is one."""
    if row_shape(row) == "implicit":
        row = {**row, **_extract_prompt(row)}
    unpaired = row_shape(row) == "unpaired"
    answers = ("completion",) if unpaired else ("chosen", "rejected")
    out: dict[str, Any] = {"label": row["label"]} if unpaired else {}
    prompt = row["prompt"]
    if isinstance(prompt, list):
        out["prompt"] = with_system(prompt, cfg.system_prompt)
        for key in answers:
            out[key] = [{"role": m["role"], "content": m["content"]} for m in row[key]]
        return out
    for key in answers:
        pair = instruction_pair(prompt, row[key], cfg.system_prompt, conversational)
        out["prompt"], out[key] = pair["prompt"], pair["completion"]
    return out


def render_for_prompting(rows: Dataset, cfg: DataConfig, conversational: bool) -> Dataset:
    """Rows as {prompt, completion} with the preferred answer as the completion: what export verification and the
    run's samples ask the model (formats.render's preference case)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        rendered = render_row(row, cfg, conversational)
        return {"prompt": rendered["prompt"], "completion": rendered.get("chosen", rendered.get("completion"))}

    return rows.map(convert, remove_columns=rows.column_names, desc="Rendering rows")
