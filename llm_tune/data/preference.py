"""Preference splits: files checked row by row like the other formats (data/pair_rows.py: the row shapes, their
problems and rendering), rendered into TRL's preference forms. KTO takes pairs too: each pair becomes two
unpaired rows (chosen: label true, rejected: label false), and the console says so.

TRL drops a row whose prompt alone fills max_length without a count; here such a row is a bad row like any
other (named, and an error unless data.skip_bad_rows), before TRL sees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_tune.data.formats import Splits, keep_good_rows, read_rows
from llm_tune.data.pair_rows import pair_problem, render_row, row_shape
from llm_tune.data.prompts import prompt_ids
from llm_tune.errors import UserError
from llm_tune.recipe.data import DataConfig
from llm_tune.recipe.methods import METHODS

if TYPE_CHECKING:
    from datasets import Dataset


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
        if shape == "unpaired" and METHODS[method].paired:
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
    if not METHODS[method].paired:  # each pair becomes two unpaired rows
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
