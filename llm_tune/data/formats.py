"""Data: local files or Hub datasets, checked row by row, rendered into TRL's dataset formats.

alpaca and classification rows become prompt/completion pairs (conversational when the tokenizer has a
chat template), chat rows stay messages, completion rows are raw text. Bad rows are reported with their
file and line; they stop the run unless the recipe says to skip them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.data.mixture import SOURCE
from llm_tune.data.pair_rows import pair_problem, render_for_prompting
from llm_tune.data.targets import (
    check_separator,
    class_label_names,
    discovered_labels,
    fill_prompt,
    required_columns,
    sorted_labels,
    target,
    target_problem,
)
from llm_tune.data.turns import instruction_pair, with_system
from llm_tune.errors import UserError
from llm_tune.recipe.data import DataConfig
from llm_tune.recipe.sources import DATA_LOADERS

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

_ROLES = {"system", "user", "assistant"}
MAX_LISTED = 10


@dataclass
class Splits:
    train: Dataset
    validation: Dataset | None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    # Tokens per row before truncation, by split name, once the trainer has tokenized the split.
    lengths: dict[str, list[int]] = field(default_factory=dict)
    # A split read from a list of sources: their names, by the rows' SOURCE index (data/mixture.py).
    source_names: dict[str, list[str]] = field(default_factory=dict)


def read_rows(spec: str) -> Dataset:
    """A file's rows, or the train split of a Hub dataset."""
    from datasets import load_dataset

    path = Path(spec)
    if path.is_file() and not path.read_bytes().strip():
        raise UserError(f"{spec}: no rows (the file is empty)")
    if path.suffix in (".jsonl", ".json"):
        columns = _check_json(path)  # datasets' own message names neither the line nor the problem
        if columns is not None:
            from datasets import Dataset

            return Dataset.from_dict(columns)
    try:
        if path.suffix in DATA_LOADERS:
            return load_dataset(DATA_LOADERS[path.suffix], data_files=str(path), split="train")
        return load_dataset(spec, split="train")
    except Exception as exc:  # datasets raises many types for unreadable files
        reason = _innermost(exc)
        raise UserError(f"{spec}: could not read the data: {reason}") from None


def read_stream(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for each row of the file, in file order, holding one row at a time. JSON Lines are read here
    (a line that is not a JSON object stops the run, as it does for a loaded file); .csv, .parquet and Hub datasets
    through datasets' streaming mode."""
    path = Path(spec)
    if path.suffix == ".jsonl":
        yield from _json_lines(path)
        return
    from datasets import load_dataset

    try:
        if path.suffix in DATA_LOADERS:
            rows = load_dataset(DATA_LOADERS[path.suffix], data_files=str(path), split="train", streaming=True)
        else:
            rows = load_dataset(spec, split="train", streaming=True)
        for index, row in enumerate(rows):
            yield row_place(spec, index), row
    except Exception as exc:  # datasets raises many types for unreadable files
        raise UserError(f"{spec}: could not read the data: {str(exc).strip().splitlines()[0]}") from None


def _json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # newline="\n": JSON Lines ends a line at \n only; utf-8-sig: a byte-order mark is not part of the first row.
    with path.open(encoding="utf-8-sig", newline="\n") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if (row := json_line(path, number, line)) is not None:
                    yield f"{path}:{number}", row
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x})") from None


def _check_json(path: Path) -> dict[str, list] | None:
    """A .jsonl file is one JSON object per line, a .json file one list of objects, JSON Lines, an object of
    columns (equal-length lists) or an object holding one list of rows. Returns the columns where `datasets`
    would read the file wrongly (it takes an object of columns, or of one list of rows, for a single row)."""
    try:
        # utf-8-sig: a byte-order mark (Windows editors and exporters write one) is not part of the first row.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # datasets also reads JSON Lines from a .json file: check it line by line
        if data is not None and not isinstance(data, (list, dict)):
            raise UserError(f"{path}: expected a list of rows, got a JSON {type(data).__name__}")
        if isinstance(data, dict):
            return _columns(path, data)
        if data is not None:
            return None
    # JSON Lines ends a line at "\n" only (\r before it is whitespace): str.splitlines() would also split inside
    # strings at U+0085, U+2028, U+2029 and a lone \r, all of which JSON allows there unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        json_line(path, number, line)
    return None


def json_line(path: Path, number: int, line: str) -> dict[str, Any] | None:
    """The row on line `number` of a JSON Lines file, None for a blank line; a line that is not a JSON object stops
    the run, naming it (datasets' own message names neither the line nor the problem)."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__} {line[:40]!r}")
    return row


def _columns(path: Path, data: dict[str, Any]) -> dict[str, list]:
    """{column: values} from a JSON object of columns, or of one list of row objects (`{"data": [...]}`)."""
    values = list(data.values())
    if len(values) == 1 and isinstance(values[0], list) and all(isinstance(r, dict) for r in values[0]):
        rows = values[0]
        names = list(dict.fromkeys(k for r in rows for k in r))
        return {name: [r.get(name) for r in rows] for name in names}
    lengths = {len(v) if isinstance(v, list) else -1 for v in values}
    if not values or -1 in lengths or len(lengths) != 1:
        raise UserError(
            f"{path}: a JSON object must hold columns (lists of equal length) or one list of rows; got keys"
            f" {list(data)[:5]}; write a list of row objects, or JSON Lines"
        )
    return data


def _innermost(exc: BaseException) -> str:
    """The first line of the deepest cause that says something: datasets wraps the parser's error in a generic one."""
    said = type(exc).__name__
    while exc is not None:
        if str(exc).strip():
            said = str(exc).strip().splitlines()[0]
        exc = exc.__cause__ or exc.__context__
    return said


def load_splits(cfg: DataConfig, labels: list[str] | None, tokenizer: PreTrainedTokenizerBase) -> Splits:
    """Train and validation datasets in TRL's formats, with the label set for classification. A list of sources
    (data.train, data.validation) is read and checked file by file, and each row keeps its source's index in the
    `source` column (data/mixture.py)."""
    notes: list[str] = []
    raw = [read_rows(s.path) for s in cfg.train_sources]
    if cfg.labelled and labels is None:  # a `datasets` ClassLabel column names its integers
        labels = class_label_names(raw[0], cfg)
    check_separator(cfg, raw)
    train_parts = [keep_good_rows(rows, cfg, s.path, labels, notes) for rows, s in zip(raw, cfg.train_sources)]
    if cfg.labelled and labels is None and cfg.format != "regression":
        labels = sorted_labels({label for part in train_parts for label in discovered_labels(part, cfg) or []})
        if len(labels) < 2:
            raise UserError(
                f"{cfg.train_label}: every row has the label {labels[0]!r}; a classifier needs rows of at least two"
                " labels"
            )
    conversational = tokenizer.chat_template is not None
    train = _joined([render(p, cfg, labels, conversational) for p in train_parts], cfg.mixed)
    assert train is not None  # a recipe has at least one training source
    splits = with_validation(Splits(train, None, labels, notes), cfg, conversational)
    if cfg.mixed:
        splits.source_names["train"] = [s.label for s in cfg.train_sources]
    if splits.validation is None and cfg.validation_fraction:  # carved rows keep their source: per-source losses
        parts = train.train_test_split(test_size=cfg.validation_fraction, seed=cfg.validation_seed, shuffle=True)
        splits.train, splits.validation = parts["train"], parts["test"]
        if cfg.mixed:
            splits.source_names["validation"] = splits.source_names["train"]
    splits.notes = [n for n in notes if n]
    return splits


def with_validation(splits: Splits, cfg: DataConfig, conversational: bool) -> Splits:
    """The splits with data.validation's rows (checked, rendered; a list of sources joined, each row keeping its
    source) and their bad-row notes."""
    parts = [keep_good_rows(read_rows(s.path), cfg, s.path, splits.labels, splits.notes)
             for s in cfg.validation_sources]  # fmt: skip
    listed = isinstance(cfg.validation, list)
    splits.validation = _joined([render(p, cfg, splits.labels, conversational) for p in parts], listed)
    if listed:
        splits.source_names["validation"] = [s.label for s in cfg.validation_sources]
    return splits


def _joined(parts: list[Dataset], mixed: bool) -> Dataset | None:
    """The sources' rendered rows as one dataset; with `mixed`, each row's source index in the SOURCE column."""
    from datasets import concatenate_datasets

    if not parts:
        return None
    if not mixed:
        return parts[0]
    return concatenate_datasets([p.add_column(SOURCE, [i] * len(p)) for i, p in enumerate(parts)])


def row_problem(row: dict[str, Any], cfg: DataConfig, labels: list[str] | None) -> str | None:
    """Why a row cannot be trained on, or None."""
    if cfg.format == "preference":
        return pair_problem(row)
    names = cfg.fields
    required = {
        "alpaca": (names.instruction, names.output),
        "completion": (names.text,),
        "chat": (names.messages,),
    }.get(cfg.format) or required_columns(cfg)
    for key in required:
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing or empty '{key}'"
        if key in (names.instruction, names.output, names.text) and not isinstance(value, str):
            return f"'{key}' must be text, got {type(value).__name__} {value!r:.40}"
    extra = row.get(names.input) if cfg.format == "alpaca" else None
    if extra is not None and not isinstance(extra, str):
        return f"'{names.input}' must be text, got {type(extra).__name__} {extra!r:.40}"
    if cfg.format == "chat":
        return _chat_problem(row[names.messages])
    if cfg.labelled:
        return target_problem(row, cfg, labels)
    return None


def _chat_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {i}: expected {{role, content}}, got {message!r:.40}"
        if message.get("role") not in _ROLES:
            return f"message {i}: role {message.get('role')!r} is not one of {sorted(_ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"message {i}: content must be a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message to train on"
    return None


def row_place(spec: str, index: int) -> str:
    """Where the row at `index` (counted from 0) is, as an editor shows it: a line of a .jsonl or .csv file."""
    suffix = Path(spec).suffix
    if suffix == ".jsonl":
        return f"{spec}:{index + 1}"
    if suffix == ".csv":
        return f"{spec}:{index + 2}"
    return f"{spec}: row {index}"


def keep_good_rows(
    rows: Dataset, cfg: DataConfig, spec: str, labels: list[str] | None, notes: list[str], problem: Any = None
) -> Dataset:
    """The rows `problem(row, cfg, labels)` (default: row_problem) finds nothing wrong with; bad rows are an error
    naming each, or skipped with a count (data.skip_bad_rows)."""
    check = problem or row_problem
    bad = []
    for index, row in enumerate(rows):
        problem = check(row, cfg, labels)
        if problem:
            bad.append((index, problem))
    if not bad and len(rows) == 0:
        raise UserError(f"{spec}: no rows")
    if not bad:
        return rows
    judge_bad_rows(spec, [f"{row_place(spec, i)}: {problem}" for i, problem in bad], len(rows), cfg, notes)
    dropped = {i for i, _ in bad}
    kept = rows.select([i for i in range(len(rows)) if i not in dropped])
    if len(kept) == 0:
        raise UserError(f"{spec}: every row is bad")
    return kept


def judge_bad_rows(spec: str, bad: list[str], rows: int, cfg: DataConfig, notes: list[str], of: str = "") -> None:
    """Bad rows (one 'where: problem' line each) stop the run, listing the first MAX_LISTED, or go into the run's
    notes with their count under data.skip_bad_rows. `of` qualifies the row count (a stream's first rows)."""
    lines = bad[:MAX_LISTED]
    if len(bad) > MAX_LISTED:
        lines.append(f"{spec}: ... and {len(bad) - MAX_LISTED} more bad rows")
    if not cfg.skip_bad_rows:
        lines.append(f"{spec}: fix these rows, or set data.skip_bad_rows: true to skip them")
        raise UserError(*lines)
    notes.extend(lines)
    notes.append(f"{spec}: skipped {len(bad)} bad rows of {of}{rows} (data.skip_bad_rows)")


def render(rows: Dataset, cfg: DataConfig, labels: list[str] | None, conversational: bool) -> Dataset:
    """Rows in TRL's format: prompt/completion, messages or text (plus `label` for classification); preference
    rows as prompt/completion with the preferred answer (what export checks and samples ask the model)."""
    if cfg.format == "preference":
        return render_for_prompting(rows, cfg, conversational)
    if not cfg.labelled:
        return rows.map(
            render_row,
            fn_kwargs={"cfg": cfg, "labels": labels, "conversational": conversational},
            remove_columns=rows.column_names,
            desc="Rendering rows",
        )
    # `datasets` keeps an input column's type for an output column of the same name: a ClassLabel, integer or
    # boolean `label` column would turn the label names back into its own type. The target leaves under another name.
    rendered = rows.map(
        _render_target,
        fn_kwargs={"cfg": cfg, "labels": labels, "conversational": conversational},
        remove_columns=rows.column_names,
        desc="Rendering rows",
    )
    return rendered.rename_column(TARGET, "label")


TARGET = "_llm_tune_target"


def _render_target(
    row: dict[str, Any], cfg: DataConfig, labels: list[str] | None, conversational: bool
) -> dict[str, Any]:
    rendered = render_row(row, cfg, labels, conversational)
    rendered[TARGET] = rendered.pop("label")
    return rendered


def render_row(row: dict[str, Any], cfg: DataConfig, labels: list[str] | None, conversational: bool) -> dict[str, Any]:
    """One checked row of an SFT or classification format in TRL's format (a streamed row too: data/stream.py)."""
    names = cfg.fields
    if cfg.format == "completion":
        return {"text": row[names.text]}
    if cfg.format == "chat":
        return {"messages": with_system(row[names.messages], cfg.system_prompt)}
    if cfg.labelled:
        label, answer = target(row, cfg, labels)
        user = fill_prompt(cfg, row[names.text], labels, row.get(names.text_pair) if names.text_pair else None)
        return {**instruction_pair(user, answer, cfg.system_prompt, conversational), "label": label}
    instruction, extra = row[names.instruction], row.get(names.input) or ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return instruction_pair(user, row[names.output], cfg.system_prompt, conversational)


def user_prompt(
    text: str, cfg: DataConfig, labels: list[str] | None, conversational: bool, text_pair: str | None = None
) -> Any:
    """The prompt training rendered for a row whose user part is `text` (an alpaca instruction, a chat's one user
    turn, a text to classify (and its `text_pair`), raw text), through the same code as `render`: what `generate`
    asks the model."""
    if cfg.format == "completion":
        return text
    if cfg.format == "chat":
        return with_system([{"role": "user", "content": text}], cfg.system_prompt)
    if cfg.labelled:
        text = fill_prompt(cfg, text, labels, text_pair)
    return instruction_pair(text, "", cfg.system_prompt, conversational)["prompt"]


def token_lengths(split: Dataset, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens per row as TRL will tokenize it (chat template applied, EOS appended to raw text)."""

    def lengths(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        if "messages" in batch:
            rows = batch["messages"]
        elif "prompt" in batch:
            rows = [p + c for p, c in zip(batch["prompt"], batch["completion"])]
        else:
            return {"n": [len(ids) + 1 for ids in tokenizer(batch["text"])["input_ids"]]}
        if isinstance(rows[0], str):
            return {"n": [len(ids) + 1 for ids in tokenizer(rows)["input_ids"]]}
        ids = tokenizer.apply_chat_template(rows, tokenize=True, return_dict=True)["input_ids"]
        return {"n": [len(x) for x in ids]}

    counted = split.map(lengths, batched=True, remove_columns=split.column_names, desc="Counting tokens")
    return counted["n"]
