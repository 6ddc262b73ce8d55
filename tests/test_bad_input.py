"""Bad input, as classes of mistakes: every case runs through the real entry point, `llm_tune.cli.main([...])` in
this process (the fast tier), and must end with exit code 2, `error:` lines naming the file, key or row (checked by
the expected text), no traceback, and nothing written. A few cases also run as `python -m llm_tune` in a subprocess,
where the process boundary is the point: what a user's shell sees (exit status, stderr) from a fresh interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import base_recipe, call_cli, run_cli, write_jsonl

pytestmark = pytest.mark.fast


@dataclass
class Case:
    args: list[str]  # after `python -m llm_tune`; {w} is the workspace folder
    expect: str  # text the error must contain ({w} filled in)
    files: dict[str, object] = field(default_factory=dict)  # rows (list), YAML (dict), text, bytes or a Path to copy


def recipe(tiny: Path, data: Path, **changes) -> dict:
    """The good recipe with dotted-key changes (a value of None removes the key)."""
    good = base_recipe(tiny, data, Path("{w}/out"))
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = good
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return good


def cases(tiny: Path, data: Path) -> dict[str, Case]:
    train = ["{w}/r.yaml"]
    alpaca = {"instruction": "Add 1 and 2.", "output": "3"}
    review = lambda text, label: {"text": text, "label": label}  # noqa: E731
    classify = {"task": "classification", "data.format": "classification", "data.train": "{w}/rows.jsonl"}
    rows = lambda *r: {"rows.jsonl": list(r)}  # noqa: E731
    multi = {**classify, "data.format": "multi_label", "classification.head": "sequence"}

    def run(expect: str, files: dict | None = None, **changes) -> Case:
        return Case(train, expect, {"r.yaml": recipe(tiny, data, **changes), **(files or {})})

    def data_case(expect: str, rows_file: dict, **changes) -> Case:
        return run(expect, rows_file, **{"data.train": "{w}/" + next(iter(rows_file)), **changes})

    return {
        # recipes: encodings, YAML shapes, types, ranges, inherits, overrides
        "recipe-not-utf8": Case(train, "r.yaml: not UTF-8 text", {"r.yaml": b"model:\n  name_or_path: \xff\xfe\n"}),
        "recipe-is-a-folder": Case(["{w}"], "a folder, not a recipe file"),
        "recipe-missing": Case(["{w}/nope.yaml"], "nope.yaml: recipe file not found"),
        "recipe-bad-yaml": Case(train, "not valid YAML (line", {"r.yaml": "model: [unclosed\n"}),
        "recipe-duplicate-key": Case(
            train,
            "r.yaml: key 'training' is given twice (lines 1 and 4)",
            {"r.yaml": "training:\n  max_steps: 2\nmodel: {name_or_path: x}\ntraining:\n  learning_rate: 0.1\n"},
        ),
        "recipe-duplicate-nested-key": Case(
            train,
            "r.yaml: key 'max_steps' is given twice (lines 2 and 3)",
            {"r.yaml": "training:\n  max_steps: 2\n  max_steps: 3\n"},
        ),
        "recipe-a-list": Case(train, "a recipe must be a mapping of keys, got list", {"r.yaml": "- a\n- b\n"}),
        "recipe-empty": Case(train, "model: required key is missing", {"r.yaml": ""}),
        "unknown-key": run(
            "training.lerning_rate: unknown key (did you mean 'learning_rate'?)", **{"training.lerning_rate": 1e-4}
        ),
        "wrong-type": run("training.max_steps: Input should be a valid integer", **{"training.max_steps": "ten"}),
        "out-of-range": run("training.learning_rate: Input should be greater than 0", **{"training.learning_rate": -1}),
        "bad-choice": run(
            "strategy.kind: Input should be 'full', 'frozen', 'lora' or 'qlora' (got 'lorra')",
            **{"strategy.kind": "lorra"},
        ),
        "key-of-another-kind": run(
            "strategy.trainable_layers: a key of strategy kind frozen, not of kind lora",
            **{"strategy.trainable_layers": 2},
        ),
        "zero-steps": run("training.max_steps must be a positive number of steps", **{"training.max_steps": 0}),
        "two-validation-sources": run(
            "set data.validation or data.validation_fraction, not both",
            **{"data.validation": str(data / "alpaca_val.jsonl"), "data.validation_fraction": 0.1},
        ),
        "inherits-missing": Case(train, "parent.yaml: recipe file not found", {"r.yaml": "inherits: parent.yaml\n"}),
        "inherits-circular": Case(
            train, "circular inheritance", {"r.yaml": "inherits: p.yaml\n", "p.yaml": "inherits: r.yaml\n"}
        ),
        "inherits-not-a-path": Case(
            train, "inherits: expected a path to a parent recipe", {"r.yaml": "inherits: [a, b]\n"}
        ),
        "override-without-value": Case(
            [*train, "training.learning_rate"], "expected key.path=value", {"r.yaml": recipe(tiny, data)}
        ),
        "override-into-a-value": Case(
            [*train, "training.learning_rate.x=1"],
            "learning_rate is a value, not a section",
            {"r.yaml": recipe(tiny, data)},
        ),
        "override-text-read-as-mapping": Case(
            [*train, "data.prompt=Review: {text}"], "quote a text that holds ': '", {"r.yaml": recipe(tiny, data)}
        ),
        "override-bad-value": Case(
            [*train, "training.seed=abc"],
            "training.seed: Input should be a valid integer",
            {"r.yaml": recipe(tiny, data)},
        ),
        "packing-with-sequence-head": run(
            "training.packing: True is not honoured by a classification:sequence run",
            **{**classify, "classification.head": "sequence", "training.packing": True},
            files=rows(review("good", "pos"), review("bad", "neg")),
        ),
        "classification-needs-format": run(
            "data.format: task classification needs data.format classification", task="classification"
        ),
        "one-label-listed": run(
            "classification.labels: give at least two distinct labels",
            **{**classify, "classification.labels": ["pos"]},
            files=rows(review("good", "pos")),
        ),
        "resume-not-a-folder": run(
            "training.resume: {w}/nope is not a checkpoint folder", **{"training.resume": "{w}/nope"}
        ),
        # models: missing, empty folder, broken config, no tokenizer, not a GGUF, wrong architecture
        "model-missing": run(
            "model.name_or_path: {w}/no-model does not exist", **{"model.name_or_path": "{w}/no-model"}
        ),
        "model-empty-folder": run(
            "holds no model (no config.json)", {"empty/.keep": ""}, **{"model.name_or_path": "{w}/empty"}
        ),
        "model-broken-config": run(
            "config.json is not valid JSON", {"broken/config.json": "{not json"}, **{"model.name_or_path": "{w}/broken"}
        ),
        "model-no-tokenizer": run(
            "has no tokenizer",
            {"notok/config.json": json.dumps({"model_type": "llama"})},
            **{"model.name_or_path": "{w}/notok"},
        ),
        "model-not-gguf": run(
            "is not a GGUF file", {"m.gguf": b"PK\x03\x04 not a gguf"}, **{"model.name_or_path": "{w}/m.gguf"}
        ),
        "model-is-a-file": run(
            "is a file; give a transformers model folder",
            {"weights.bin": b"\x00"},
            **{"model.name_or_path": "{w}/weights.bin"},
        ),
        "model-unknown-architecture": run(
            "could not be loaded as",
            {**_copy_tokenizer(tiny, "alien"), "alien/config.json": json.dumps({"model_type": "nonesuch"})},
            **{"model.name_or_path": "{w}/alien"},
        ),
        "blocks-outside-the-model": run(
            "strategy.layers_to_transform: [5] outside the model's blocks 0 to 1",
            **{"strategy.layers_to_transform": [5]},
        ),
        "too-many-frozen-blocks": run(
            "strategy.trainable_layers: 9, but the model has 2 blocks",
            strategy={"kind": "frozen", "trainable_layers": 9},
        ),
        # data: every format, file types, bad lines, wrong types, empty files, huge rows, labels
        "data-missing": run("data.train: file not found: {w}/none.jsonl", **{"data.train": "{w}/none.jsonl"}),
        "data-unsupported-type": run(
            "unsupported file type; use .jsonl, .json, .csv or .parquet",
            {"rows.txt": "a\n"},
            **{"data.train": "{w}/rows.txt"},
        ),
        # a mixture of sources (data.train / data.validation as lists)
        "mix-source-missing": run(
            "data.train[1].path: file not found: {w}/none.jsonl",
            **{"data.train": [{"path": str(data / "alpaca.jsonl"), "weight": 3}, {"path": "{w}/none.jsonl"}]},
        ),
        "mix-same-names": run(
            "two sources are named 'alpaca'",
            {"sub/alpaca.jsonl": [alpaca]},
            **{"data.train": [{"path": str(data / "alpaca.jsonl")}, {"path": "{w}/sub/alpaca.jsonl"}]},
        ),
        "mix-weight-not-positive": run("weight", **{"data.train": [{"path": str(data / "alpaca.jsonl"), "weight": 0}]}),
        "mix-unknown-source-key": run("wieght", **{"data.train": [{"path": str(data / "alpaca.jsonl"), "wieght": 2}]}),
        "mix-validation-weight": run(
            "weights mix training rows (data.train)",
            **{"data.validation": [{"path": str(data / "alpaca_val.jsonl"), "weight": 2}]},
        ),
        "mix-empty-list": run("an empty list of sources", **{"data.train": []}),
        "mix-bad-name": run(
            "use letters, digits, _ and -", **{"data.train": [{"path": str(data / "alpaca.jsonl"), "name": "a b"}]}
        ),
        "mix-with-packing": run(
            "a mixture's shares (data.train as a list) cannot be kept",
            **{"data.train": [{"path": str(data / "alpaca.jsonl")}], "training.packing": True},
        ),
        "mix-bad-row-names-its-source": run(
            "bad.jsonl:2: missing or empty 'output'",
            {"bad.jsonl": [alpaca, {"instruction": "x", "output": ""}]},
            **{"data.train": [{"path": str(data / "alpaca.jsonl")}, {"path": "{w}/bad.jsonl"}]},
        ),
        # data.streaming: what a stream cannot do, and bad rows among its first rows (checked before anything runs)
        "stream-without-max-steps": run(
            "data.streaming: a stream has no length to count epochs in; set training.max_steps",
            **{"data.streaming": True, "training.max_steps": None},
        ),
        "stream-classification": run(
            "data.streaming: streams alpaca, chat and completion rows; classification rows are loaded whole",
            {"rows.jsonl": [review("good film", "positive")]},
            **{**classify, "data.streaming": True},
        ),
        "stream-with-packing": run(
            "training.packing: with data.streaming, packs a loaded split",
            **{"data.streaming": True, "training.packing": True},
        ),
        "stream-a-mixture": run(
            "data.train: with data.streaming, a list of sources",
            **{"data.streaming": True, "data.train": [{"path": str(data / "alpaca.jsonl")}]},
        ),
        "stream-validation-fraction": run(
            "data.validation_fraction: with data.streaming", **{"data.streaming": True, "data.validation_fraction": 0.2}
        ),
        "stream-a-json-document": data_case(
            "is one JSON document, read whole; stream JSON Lines", {"rows.json": [alpaca]}, **{"data.streaming": True}
        ),
        "stream-bad-row-in-the-head": data_case(
            "rows.jsonl:2: missing or empty 'output'",
            rows(alpaca, {"instruction": "x", "output": ""}, alpaca),
            **{"data.streaming": True},
        ),
        "stream-malformed-line": data_case(
            "rows.jsonl:2: not valid JSON",
            {"rows.jsonl": json.dumps(alpaca) + '\n{"instruction": \n'},
            **{"data.streaming": True},
        ),
        "stream-empty-file": data_case(
            "rows.jsonl: no rows (the file is empty)", {"rows.jsonl": ""}, **{"data.streaming": True}
        ),
        "stream-shuffle-buffer-zero": run("shuffle_buffer", **{"data.streaming": True, "data.shuffle_buffer": 0}),
        "stream-buffer-without-streaming": run(
            "data.shuffle_buffer: 50 shuffles a stream; set data.streaming: true", **{"data.shuffle_buffer": 50}
        ),
        "stream-doctor": Case(
            ["doctor", "{w}/r.yaml"],
            "data.streaming: doctor measures a loaded file's rows",
            {"r.yaml": recipe(tiny, data, **{"data.streaming": True})},
        ),
        "data-chat-template-missing": run(
            "data.chat_template: file not found", **{"data.chat_template": "{w}/t.jinja"}
        ),
        "jsonl-malformed-line": data_case(
            "rows.jsonl:2: not valid JSON", {"rows.jsonl": json.dumps(alpaca) + '\n{"instruction": "x", "output": \n'}
        ),
        "jsonl-not-objects": data_case("rows.jsonl:1: expected a JSON object per line", {"rows.jsonl": "[1, 2]\n"}),
        "jsonl-not-utf8": data_case("rows.jsonl: not UTF-8 text", {"rows.jsonl": b'{"instruction": "\xff"}\n'}),
        "json-not-rows": data_case("rows.json: expected a list of rows, got a JSON str", {"rows.json": '"text"'}),
        "jsonl-empty": data_case("rows.jsonl: no rows (the file is empty)", {"rows.jsonl": ""}),
        "csv-garbage": data_case("rows.csv", {"rows.csv": b"\x00\x01\x02\xff\xfe"}),
        "parquet-garbage": data_case("rows.parquet: could not read the data", {"rows.parquet": b"not parquet"}),
        "alpaca-missing-output": data_case(
            "rows.jsonl:2: missing or empty 'output'", rows(alpaca, {"instruction": "x", "output": ""})
        ),
        "alpaca-output-not-text": data_case(
            "rows.jsonl:1: 'output' must be text, got int", rows({"instruction": "x", "output": 5})
        ),
        "alpaca-wrong-field-names": data_case(
            "rows.jsonl:1: missing or empty 'instruction'", rows({"question": "x", "answer": "y"})
        ),
        "completion-missing-text": data_case(
            "rows.jsonl:1: missing or empty 'text'", rows({"body": "x"}), **{"data.format": "completion"}
        ),
        "chat-unknown-role": data_case(
            "rows.jsonl:1: message 1: role 'bot' is not one of",
            rows({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}),
            **{"data.format": "chat"},
        ),
        "chat-not-a-list": data_case(
            "rows.jsonl:1: 'messages' must be a non-empty list", rows({"messages": "hi"}), **{"data.format": "chat"}
        ),
        "chat-content-not-text": data_case(
            "rows.jsonl:1: message 0: content must be a string",
            rows({"messages": [{"role": "user", "content": 3}]}),
            **{"data.format": "chat"},
        ),
        "chat-no-assistant": data_case(
            "rows.jsonl:1: no assistant message to train on",
            rows({"messages": [{"role": "user", "content": "hi"}]}),
            **{"data.format": "chat"},
        ),
        "classification-one-label": run(
            "every row has the label 'pos'", **classify, files=rows(review("good", "pos"), review("fine", "pos"))
        ),
        "classification-unseen-label": run(
            "val.jsonl:2: label 'neutral' is not one of the labels ['neg', 'pos']",
            **{**classify, "data.validation": "{w}/val.jsonl"},
            files={
                **rows(review("good", "pos"), review("bad", "neg")),
                "val.jsonl": [review("ok", "pos"), review("meh", "neutral")],
            },
        ),
        # multi-label, regression, pairs, class weights
        "multilabel-labels-a-number": run(
            "rows.jsonl:1: 'labels' must be a list of labels or a string of labels",
            **{**multi, "data.format": "multi_label"},
            files=rows({"text": "good", "labels": 3}, {"text": "bad", "labels": ["b"]}),
        ),
        "multilabel-unknown-label": run(
            "val.jsonl:1: labels ['c'] are not in the label set ['a', 'b']",
            **{**multi, "data.validation": "{w}/val.jsonl"},
            files={
                **rows({"text": "x", "labels": ["a"]}, {"text": "y", "labels": "a,b"}),
                "val.jsonl": [{"text": "z", "labels": ["a", "c"]}],
            },
        ),
        "multilabel-generate-head": run(
            "classification.head: data.format multi_label trains a sequence head",
            **{**multi, "classification.head": "generate"},
            files=rows({"text": "x", "labels": ["a"]}, {"text": "y", "labels": ["b"]}),
        ),
        "regression-score-is-text": run(
            "rows.jsonl:2: 'score' must be a finite number, got str 'high'",
            **{**multi, "data.format": "regression"},
            files=rows({"text": "x", "score": 1.5}, {"text": "y", "score": "high"}),
        ),
        "pair-column-missing": run(
            "rows.jsonl:1: missing or empty 'text_pair'",
            **{**classify, "data.fields": {"text_pair": "text_pair"}, "data.prompt": "A: {text} B: {text_pair}"},
            files=rows(review("good", "pos"), review("bad", "neg")),
        ),
        "pair-prompt-without-placeholder": run(
            "data.prompt: data.fields.text_pair is 'text_pair', but the prompt has no {text_pair}",
            **{**classify, "data.fields": {"text_pair": "text_pair"}},
            files=rows(review("good", "pos"), review("bad", "neg")),
        ),
        "class-weights-unknown-label": run(
            "classification.class_weights: ['neutral'] are not labels of this run",
            **{**classify, "classification.class_weights": {"neutral": 2.0}},
            files=rows(review("good", "pos"), review("bad", "neg")),
        ),
        "class-weights-on-regression": run(
            "classification.class_weights: 'balanced' is not honoured by a regression run",
            **{**multi, "data.format": "regression", "classification.class_weights": "balanced"},
            files=rows({"text": "x", "score": 1.5}, {"text": "y", "score": 2.0}),
        ),
        "csv-missing-column": data_case(
            "rows.csv:2: missing or empty 'text'",
            {"rows.csv": "body,label\nx,pos\n"},
            **{"task": "classification", "data.format": "classification"},
        ),
        "rows-too-long-for-max-length": data_case(
            "no row keeps a trained token after truncation",
            rows({"instruction": "word " * 300, "output": "3"}),
            **{"data.max_length": 16},
        ),
        "mix-by-with-one-source": run(
            "data: train: mix_by tokens with one source does nothing",
            **{"data.mix_by": "tokens"},
        ),
        "a-weight-with-one-source": run(
            "data: train: a weight with one source does nothing",
            **{"data.train": [{"path": "{w}/rows.jsonl", "weight": 3}]},
            files=rows({"instruction": "a", "output": "b"}),
        ),
        "preference-keys-on-an-sft-run": run(
            "preference: {'method': 'kto'} is not honoured by a sft run",
            **{"preference": {"method": "kto"}},
        ),
        "packing-on-a-dpo-run": run(
            "training.packing: True is not honoured by a preference run",
            **{"task": "preference", "data.format": "preference", "training.packing": True},
        ),
        # watching validation, sweeps, comparing runs
        "eval-steps-without-validation": run(
            "training.eval_steps: 2, but there are no validation rows", **{"training.eval_steps": 2}
        ),
        "threshold-without-patience": run(
            "training.early_stopping_threshold: 0.01 without training.early_stopping_patience has no effect",
            **{"training.early_stopping_threshold": 0.01, "training.eval_steps": 2},
        ),
        "early-stopping-without-evaluations": run(
            "training.early_stopping_patience: 2 needs evaluations to compare",
            **{"training.early_stopping_patience": 2},
        ),
        "accuracy-for-an-sft-run": run(
            "training.metric_for_best_model: eval_accuracy is a classification metric",
            **{"training.metric_for_best_model": "eval_accuracy"},
        ),
        "linear-probe-that-trains-nothing": run(
            "strategy.trainable_layers: 0 with no strategy.trainable_modules",
            strategy={"kind": "frozen", "trainable_layers": 0},
        ),
        "sweep-bad-vary": Case(
            ["sweep", "{w}/r.yaml", "--vary", "training.seed=5"],
            "--vary 'training.seed=5'",
            {"r.yaml": recipe(tiny, data)},
        ),
        "sweep-range-in-a-grid": Case(
            ["sweep", "{w}/r.yaml", "--vary", "training.learning_rate=loguniform(1e-5,1e-3)"],
            "a range is sampled, not gridded",
            {"r.yaml": recipe(tiny, data, **{"data.validation_fraction": 0.2})},
        ),
        "sweep-without-validation": Case(
            ["sweep", "{w}/r.yaml", "--vary", "training.seed=[1,2]"],
            "sweep ranks trials on validation rows",
            {"r.yaml": recipe(tiny, data)},
        ),
        "sweep-bad-trial-value": Case(
            ["sweep", "{w}/r.yaml", "--vary", "strategy.r=[4,-1]"],
            "strategy.r: Input should be greater than 0",
            {"r.yaml": recipe(tiny, data, **{"data.validation_fraction": 0.2})},
        ),
        "compare-not-a-run": Case(["compare", "{w}"], "not a run folder"),
        # output folders
        "output-dir-is-a-file": run(
            "output_dir: {w}/taken is a file, not a folder", {"taken": "x"}, output_dir="{w}/taken"
        ),
        # every subcommand's arguments
        "eval-not-a-run": Case(["eval", "{w}/x"], "{w}/x: not a run folder"),
        "predict-not-a-run": Case(["predict", "{w}/x", "--text", "hi"], "{w}/x: not a run folder"),
        "predict-file-missing": Case(["predict", "{w}/x", "--file", "{w}/none.txt"], "--file: file not found"),
        "export-not-a-run": Case(["export", "{w}/x"], "{w}/x: run folder not found"),
        "export-bad-dtype": Case(["export", "{w}/x", "--dtype", "int8"], "--dtype: expected one of"),
        "push-not-a-run": Case(["push", "{w}", "--repo-id", "me/m"], "neither a run folder"),
        "push-bad-timeout": Case(
            ["push", "{w}", "--repo-id", "me/m", "--timeout", "0"], "--timeout: must be a positive"
        ),
        "keys-unknown-section": Case(["keys", "nope"], "keys: no section 'nope'"),
        "validate-unknown-key": Case(
            ["validate", "{w}/r.yaml"],
            "modle: unknown key (did you mean 'model'?)",
            {"r.yaml": {"modle": {}, "data": {"train": "x.jsonl"}}},
        ),
    }


def _copy_tokenizer(model: Path, folder: str) -> dict[str, Path]:
    return {f"{folder}/{name}": model / name for name in ("tokenizer.json", "tokenizer_config.json")}


def _write(workspace: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = workspace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, list):
            write_jsonl(path, content)
        elif isinstance(content, dict):
            text = yaml.safe_dump(content).replace("'{w}", f"'{workspace}").replace("{w}", str(workspace))
            path.write_text(text, encoding="utf-8")
        else:
            path.write_text(str(content), encoding="utf-8")


def _run(case: Case, workspace: Path, in_process: bool = True) -> tuple[subprocess.CompletedProcess, bool]:
    """The case's command on a fresh workspace: what it said, and whether it left the workspace as it found it."""
    workspace.mkdir()
    _write(workspace, case.files)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    args = [a.replace("{w}", str(workspace)) for a in case.args]
    done = call_cli(*args, check=False) if in_process else run_cli(*args, check=False, timeout=300)
    after = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    return done, before == after


def _check(case: Case, done: subprocess.CompletedProcess, unchanged: bool, workspace: Path) -> None:
    expect = case.expect.replace("{w}", str(workspace))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert errors and any(expect in line for line in errors), done.stderr[-2000:]
    assert done.stderr.rstrip().splitlines()[-1].startswith("error:")  # the error is the last thing said
    assert unchanged, "the run wrote into its folder"


NAMES = list(cases(Path("m"), Path("d")))
# A recipe, a model folder and a subcommand's argument also from a fresh interpreter: the exit status and stderr a
# shell sees, with nothing of the test process's state to lean on. (These stop before torch loads; a data row's error
# needs the tokenizer, and the slower tier's subprocess runs cover that path end to end.)
IN_A_SUBPROCESS = ["recipe-bad-yaml", "model-broken-config", "export-bad-dtype"]


@pytest.fixture(scope="module")
def table(tiny_model, data_dir) -> dict[str, Case]:
    return cases(tiny_model, data_dir)


def test_the_corpus_covers_the_classes():
    assert len(NAMES) >= 50 and set(IN_A_SUBPROCESS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_clear_error(table, tmp_path, name):
    case = table[name]
    done, unchanged = _run(case, tmp_path / name)
    _check(case, done, unchanged, tmp_path / name)


@pytest.mark.parametrize("name", IN_A_SUBPROCESS)
def test_bad_input_is_one_clear_error_from_a_fresh_process(table, tmp_path, name):
    case = table[name]
    done, unchanged = _run(case, tmp_path / name, in_process=False)
    _check(case, done, unchanged, tmp_path / name)
