"""Good input as a class, beside test_bad_input.py: every file that `datasets` reads with complete rows must load
with every row intact, and train. Classes: line splitting as JSON Lines defines it (`\\n` only, so U+0085, U+2028,
U+2029 and \\r inside strings are text), the line endings and byte-order marks editors and exporters write, a last
line without newline, blank lines, every container shape each format allows, long, wide and non-ASCII rows, and
labels that are not plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import base_recipe, write_recipe

ODD = ["a\u0085b", "c\u2028d", "e\u2029f", "g\rh", "tab\there", "quote \" and \\ backslash", "日本語のレビュー",
       "emoji 🎬🍿", "Ünïcödé façade", "zero\u200bwidth"]  # fmt: skip
ALPACA = [{"instruction": f"Repeat: {text}", "input": "", "output": text} for text in ODD]
LABELS = ["très bien", "👎 bad", "1", "0"]  # spaces, emoji, accents, numbers-as-strings
REVIEWS = [{"text": f"{text} ({i})", "label": LABELS[i % len(LABELS)]} for i, text in enumerate(ODD * 2)]


def jsonl(rows: list[dict], newline: str = "\n", bom: bool = False, last_newline: bool = True, blank: bool = False,
          ascii_only: bool = False) -> bytes:  # fmt: skip
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in rows]
    text = (newline + (newline if blank else "")).join(lines) + (newline if last_newline else "")
    return (("\ufeff" if bom else "") + text).encode("utf-8")


def csv_bytes(rows: list[dict], newline: str = "\n", bom: bool = False) -> bytes:
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode("utf-8")


def parquet_bytes(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def columns(rows: list[dict]) -> dict[str, list]:
    return {key: [r[key] for r in rows] for key in rows[0]}


# name -> (file name, bytes, format, the rows it holds)
CASES = {
    "jsonl-unicode-line-separators-in-strings": ("rows.jsonl", jsonl(ALPACA), "alpaca", ALPACA),
    "jsonl-crlf": ("rows.jsonl", jsonl(ALPACA, newline="\r\n"), "alpaca", ALPACA),
    "jsonl-utf8-bom": ("rows.jsonl", jsonl(ALPACA, bom=True), "alpaca", ALPACA),
    "jsonl-bom-crlf-no-last-newline": ("rows.jsonl", jsonl(ALPACA, "\r\n", True, False), "alpaca", ALPACA),
    "jsonl-blank-lines": ("rows.jsonl", jsonl(ALPACA, blank=True), "alpaca", ALPACA),
    "jsonl-ascii-escapes": ("rows.jsonl", jsonl(ALPACA, ascii_only=True), "alpaca", ALPACA),
    "json-list-of-rows": ("rows.json", json.dumps(ALPACA, ensure_ascii=False).encode(), "alpaca", ALPACA),
    "json-list-with-bom": ("rows.json", ("\ufeff" + json.dumps(ALPACA)).encode(), "alpaca", ALPACA),
    "json-lines-in-a-json-file": ("rows.json", jsonl(ALPACA), "alpaca", ALPACA),
    "json-object-of-columns": ("rows.json", json.dumps(columns(ALPACA)).encode(), "alpaca", ALPACA),
    "json-object-holding-rows": ("rows.json", json.dumps({"data": ALPACA}).encode(), "alpaca", ALPACA),
    "csv-quoted-newlines-crlf-bom": ("rows.csv", csv_bytes(ALPACA, "\r\n", True), "alpaca", ALPACA),
    "parquet": ("rows.parquet", parquet_bytes(ALPACA), "alpaca", ALPACA),
    "long-and-wide-rows": ("rows.jsonl", jsonl([{**r, "output": r["output"] * 400, **{f"extra{i}": i for i in range(60)}}
                                                for r in ALPACA]), "alpaca",  # fmt: skip
                           [{**r, "output": r["output"] * 400} for r in ALPACA]),
    "classification-labels-not-plain-words": ("rows.jsonl", jsonl(REVIEWS, "\r\n", True), "classification", REVIEWS),
    "classification-csv-labels-not-plain-words": ("rows.csv", csv_bytes(REVIEWS, "\r\n", True), "classification",
                                                  REVIEWS),
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("name", sorted(CASES))
def test_good_input_loads_every_row_intact(name, tmp_path, tokenizer, tiny_model, data_dir, monkeypatch):
    from llm_tune.data.formats import load_splits
    from llm_tune.recipe.schema import Recipe

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    file, data, format_, rows = CASES[name]
    (tmp_path / file).write_bytes(data)
    sections = {"data": {"train": str(tmp_path / file), "format": format_, "max_length": 64}}
    if format_ == "classification":
        sections["task"] = "classification"
    recipe = Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "out", **sections))
    splits = load_splits(recipe.data, None, tokenizer)
    assert len(splits.train) == len(rows)
    rendered = json.dumps(splits.train.to_list(), ensure_ascii=False)
    for row in rows:  # every text, with its odd characters, reaches the rendered rows unchanged
        for key in ("output", "text"):
            if key in row:
                assert json.dumps(row[key], ensure_ascii=False)[1:-1] in rendered, (key, row[key][:40])
    if format_ == "classification":
        assert sorted(splits.labels) == sorted(LABELS)


@pytest.mark.parametrize("head", ["sequence", "generate"])
def test_odd_files_and_labels_train_through_the_entry_point(head, tmp_path, tiny_model, data_dir, monkeypatch):
    """One optimizer step and the closing evaluation, through `llm_tune.cli.main`, on a BOM + CRLF JSON Lines file
    whose texts hold line separators and whose labels have spaces, emoji and digits."""
    from llm_tune.cli import main

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "rows.jsonl").write_bytes(jsonl(REVIEWS, "\r\n", True, last_newline=False))
    recipe = base_recipe(
        tiny_model, data_dir, tmp_path / "out", task="classification",
        classification={"head": head, "labels": LABELS},
        data={"train": str(tmp_path / "rows.jsonl"), "validation": str(tmp_path / "rows.jsonl"),
              "format": "classification", "max_length": 256},
        training={"max_steps": 1, "save_steps": 1},
    )  # fmt: skip
    assert main([str(write_recipe(tmp_path / "r.yaml", recipe))]) in (0, None)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["eval_rows"] == len(REVIEWS) if "eval_rows" in metrics else "eval_accuracy" in metrics
    assert Path(tmp_path / "out" / "adapter").is_dir()


# Labels as users' data holds them: name -> (rows, format, classification.labels, the labels the rows must read as)
TEXTS = [f"review number {i}" for i in range(8)]
LABEL_SHAPES = {
    "integers-named-by-index": ([{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)], "classification",
                                ["negative", "positive"], ["negative", "positive"] * 4),
    "integers-discovered-in-numeric-order": ([{"text": t, "label": [2, 10, 0][i % 3]} for i, t in enumerate(TEXTS)],
                                             "classification", None, [["2", "10", "0"][i % 3] for i in range(8)]),
    "integers-that-are-label-names": ([{"text": t, "label": [1, 2][i % 2]} for i, t in enumerate(TEXTS)],
                                      "classification", ["1", "2"], ["1", "2"] * 4),
    "booleans": ([{"text": t, "label": i % 2 == 0} for i, t in enumerate(TEXTS)], "classification", None,
                 ["true", "false"] * 4),
    "numeric-strings": ([{"text": t, "label": str(i % 2)} for i, t in enumerate(TEXTS)], "classification", None,
                        ["0", "1"] * 4),
    "integral-floats-of-a-gappy-column": ([{"text": t, "label": float(i % 2)} for i, t in enumerate(TEXTS)],
                                          "classification", ["neg", "pos"], ["neg", "pos"] * 4),
    "multi-label-integer-lists": ([{"text": t, "labels": [i % 3, 2] if i % 2 else [i % 3]} for i, t in enumerate(TEXTS)],
                                  "multi_label", ["a", "b", "c"],
                                  [["abc"[i % 3], "c"] if i % 2 else ["abc"[i % 3]] for i in range(8)]),
    "regression-ints-floats-and-numeric-strings": ([{"text": t, "score": [1, 2.5, "3.25", " 4 "][i % 4]}
                                                    for i, t in enumerate(TEXTS)], "regression", None,
                                                   [1.0, 2.5, 3.25, 4.0] * 2),
}  # fmt: skip


def _labelled_recipe(tiny_model, data_dir, tmp_path, path, format_, labels):
    from llm_tune.recipe.schema import Recipe

    sections = {"task": "classification", "data": {"train": str(path), "format": format_, "max_length": 64},
                "classification": {"labels": labels, "head": "sequence"}}  # fmt: skip
    return Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "out", **sections))


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(LABEL_SHAPES))
def test_labels_in_every_shape_read_as_their_names(name, tmp_path, tokenizer, tiny_model, data_dir, monkeypatch):
    from llm_tune.data.formats import load_splits

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows, format_, labels, expected = LABEL_SHAPES[name]
    (tmp_path / "rows.jsonl").write_bytes(jsonl(rows))
    recipe = _labelled_recipe(tiny_model, data_dir, tmp_path, tmp_path / "rows.jsonl", format_, labels)
    splits = load_splits(recipe.data, labels, tokenizer)
    assert list(splits.train["label"]) == expected
    if name == "integers-discovered-in-numeric-order":
        assert splits.labels == ["0", "2", "10"]


@pytest.mark.fast
def test_a_class_label_column_names_its_integers(tmp_path, tokenizer, tiny_model, data_dir, monkeypatch):
    """A parquet file written by `datasets` keeps its ClassLabel feature: the names come from it, by index."""
    from datasets import ClassLabel, Dataset, Features, Value

    from llm_tune.data.formats import load_splits

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    features = Features({"text": Value("string"), "label": ClassLabel(names=["sad", "happy", "angry"])})
    Dataset.from_dict({"text": TEXTS, "label": [i % 3 for i in range(8)]}, features=features).to_parquet(
        str(tmp_path / "rows.parquet")
    )
    recipe = _labelled_recipe(tiny_model, data_dir, tmp_path, tmp_path / "rows.parquet", "classification", None)
    splits = load_splits(recipe.data, None, tokenizer)
    assert splits.labels == ["sad", "happy", "angry"]
    assert list(splits.train["label"]) == [["sad", "happy", "angry"][i % 3] for i in range(8)]


def test_integer_labels_train_and_evaluate_through_the_entry_point(tmp_path, tiny_model, data_dir, monkeypatch):
    """What `datasets` gives for SST-2 (a ClassLabel column read as integers) once crashed a run with KeyError: 1:
    integer labels discovered, one step, the closing evaluation and predict."""
    from conftest import call_cli

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    (tmp_path / "rows.jsonl").write_bytes(jsonl(rows))
    recipe = base_recipe(
        tiny_model, data_dir, tmp_path / "out", task="classification", classification={"head": "sequence"},
        data={"train": str(tmp_path / "rows.jsonl"), "validation": str(tmp_path / "rows.jsonl"),
              "format": "classification", "max_length": 64},
        training={"max_steps": 1, "save_steps": 1},
    )  # fmt: skip
    call_cli(str(write_recipe(tmp_path / "r.yaml", recipe)))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    predicted = call_cli("predict", str(tmp_path / "out"), "--text", "a fine film")
    assert "0 " in predicted.stdout and "1 " in predicted.stdout
