"""Preference rows: checked row by row like the other formats, rendered into TRL's preference forms.

Three row shapes (TRL's column names):
  paired      {prompt, chosen, rejected}: text, or conversational (lists of {role, content})
  implicit    {chosen, rejected}: two whole conversations sharing the prompt turns (TRL's extract_prompt)
  unpaired    {prompt, completion, label: bool}: KTO's form
Every row of a file has one shape. Text rows go through the model's chat template when it has one, as alpaca rows
do, so a preference run continues an SFT run on the same rendering. KTO takes pairs too: each pair becomes two
unpaired rows (chosen: label true, rejected: label false), and the console says so.

TRL drops a row whose prompt alone fills max_length without a count; here such a row is a bad row like any
other (named, and an error unless data.skip_bad_rows), before TRL sees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_tune.data.formats import Splits, _pair, keep_good_rows, read_rows, with_system
from llm_tune.data.prompts import prompt_ids
from llm_tune.errors import UserError
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
        pair = _pair(prompt, row[key], cfg.system_prompt, conversational)
        out["prompt"], out[key] = pair["prompt"], pair["completion"]
    return out


def render_for_prompting(rows: Dataset, cfg: DataConfig, conversational: bool) -> Dataset:
    """Rows as {prompt, completion} with the preferred answer as the completion: what export verification and the
    run's samples ask the model (formats.render's preference case)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        rendered = render_row(row, cfg, conversational)
        return {"prompt": rendered["prompt"], "completion": rendered.get("chosen", rendered.get("completion"))}

    return rows.map(convert, remove_columns=rows.column_names, desc="Rendering rows")


def load_preference_splits(cfg: DataConfig, tokenizer: Any, method: str, seed: int) -> Splits:
    """Train and validation rows for a preference method, checked and rendered; what was changed is in notes."""
    notes: list[str] = []
    conversational = tokenizer.chat_template is not None
    parts = {}
    # One file each: recipe/checks.py refuses a mixture of sources for a preference run.
    train = cfg.train_sources[0].path
    validation = cfg.validation_sources[0].path if cfg.validation is not None else None
    train_rows = read_rows(train)
    val_rows = read_rows(validation) if validation else None
    for name, spec, rows in (("train", train, train_rows), ("validation", validation, val_rows)):
        if rows is None:
            continue
        if len(rows) == 0:
            raise UserError(f"{spec}: no rows")
        shape = row_shape(rows[0])
        if shape == "unpaired" and method != "kto":
            raise UserError(
                f"{spec}: the rows are unpaired {{prompt, completion, label}}; preference.method {method} needs pairs"
                " {prompt, chosen, rejected}: give pairs, or set preference.method: kto"
            )
        check = _checker(cfg, tokenizer, conversational, "paired" if shape == "implicit" else shape)
        rows = keep_good_rows(rows, cfg, spec, None, notes, problem=check)
        rendered = rows.map(
            lambda r: render_row(r, cfg, conversational), remove_columns=rows.column_names, desc="Rendering rows"
        )
        notes.append(_truncation_note(name, rendered, cfg.max_length, tokenizer))
        parts[name] = rendered
    if cfg.validation_fraction:
        split = parts["train"].train_test_split(test_size=cfg.validation_fraction, seed=cfg.validation_seed)
        parts["train"], parts["validation"] = split["train"], split["test"]
    if method == "kto":
        parts = {name: _for_kto(split, name, seed, notes) for name, split in parts.items()}
    return Splits(parts["train"], parts.get("validation"), None, [n for n in notes if n])


def _checker(cfg: DataConfig, tokenizer: Any, conversational: bool, shape: str) -> Any:
    """A row check that also tokenizes the rendered prompt: one that alone fills max_length leaves no answer."""

    def problem(row: dict[str, Any], _cfg: DataConfig, _labels: Any) -> str | None:
        found = pair_problem(row, shape)
        if found:
            return found
        length = len(prompt_ids(tokenizer, render_row(row, cfg, conversational)["prompt"]))
        if length >= cfg.max_length:
            return (
                f"the prompt alone is {length} tokens, filling data.max_length={cfg.max_length}, so no answer token"
                " is left (TRL would drop the row); shorten the prompt or raise data.max_length"
            )
        return None

    return problem


def _truncation_note(name: str, split: Dataset, max_length: int, tokenizer: Any) -> str:
    """How many rows lose answer tokens to max_length (TRL keeps the start of prompt + answer)."""
    answers = [k for k in ("chosen", "rejected", "completion") if k in split.column_names]
    over = 0
    for row in split:
        prompt = row["prompt"]
        for key in answers:
            if isinstance(prompt, list):
                ids = tokenizer.apply_chat_template(prompt + row[key], tokenize=True, return_dict=True)["input_ids"]
            else:
                ids = tokenizer(prompt + row[key])["input_ids"]
            if len(ids) + 1 > max_length:  # + the EOS TRL appends to a text answer
                over += 1
                break
    if not over:
        return ""
    return f"{name}: {over} of {len(split)} rows are longer than data.max_length={max_length} and are truncated"


def _for_kto(split: Dataset, name: str, seed: int, notes: list[str]) -> Dataset:
    """KTO's unpaired rows; pairs are unpaired, and the rows shuffled once (KTO reads them in order, and its KL
    term pairs neighbouring rows, so the chosen and rejected halves must not stay in two blocks)."""
    from trl.data_utils import unpair_preference_dataset

    if "chosen" in split.column_names:
        pairs = len(split)
        split = unpair_preference_dataset(split)
        notes.append(
            f"{name}: {pairs} pairs unpaired into {len(split)} KTO rows (chosen: label true, rejected: label false)"
        )
    return split.shuffle(seed=seed) if name == "train" else split
