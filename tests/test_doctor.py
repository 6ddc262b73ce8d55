"""`python -m llm_tune doctor RECIPE.yaml` through the real entry point: the report's sections, the trained span
marked as the answer and its EOS only, warnings for duplicates, leakage and imbalance, a problem as exit 2 with one
line, and --json. The slow test checks the memory estimate against the measured peak of real SmolLM2 runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ENV, ROOT, SMOLLM2, base_recipe, run_cli, write_jsonl, write_recipe

SECTIONS = ("device and dtype", "memory estimate", "tokens per row", "trained tokens", "duplicates",
            "two training rows", "time (measured")  # fmt: skip


def _alpaca(a: int) -> dict:
    return {"instruction": f"Add {a} and {a + 29}.", "input": "", "output": str(2 * a + 29)}


@pytest.fixture(scope="module")
def risky_run(tiny_model, tmp_path_factory):
    """An alpaca recipe whose data repeats a row exactly, repeats another up to case and punctuation, shares a row
    with validation (risks), and has a row whose prompt alone fills max_length (a problem); doctor's text and JSON."""
    d = tmp_path_factory.mktemp("risky")
    rows = [_alpaca(a) for a in range(1, 21)]
    rows.append(dict(rows[0]))  # exact duplicate
    rows.append({**rows[1], "instruction": rows[1]["instruction"].upper().replace(".", " !")})  # near duplicate
    rows.append({"instruction": "Add: " + " ".join(str(i) for i in range(40)), "input": "", "output": "780"})
    write_jsonl(d / "train.jsonl", rows)
    write_jsonl(d / "val.jsonl", [_alpaca(a) for a in range(40, 43)] + [rows[5]])  # one leaked row
    data = {"train": str(d / "train.jsonl"), "validation": str(d / "val.jsonl"), "max_length": 60}
    recipe = base_recipe(tiny_model, d, d / "run", data=data)
    done = run_cli("doctor", write_recipe(d / "r.yaml", recipe), "--json", d / "report.json", check=False)
    return done, json.loads((d / "report.json").read_text()), d


def test_doctor_prints_every_section_and_writes_nothing_but_the_json(risky_run):
    done, report, d = risky_run
    for title in SECTIONS:
        assert f"\n{title}" in done.stdout, title
    assert "Traceback" not in done.stderr
    assert not (d / "run").exists()  # before any training: no run folder
    memory = report["memory"]
    assert set(memory["items"]) >= {"weights", "adapter", "optimizer state", "gradients", "activations", "logits"}
    assert memory["peak_bytes"] > memory["items"]["weights"]["bytes"] > 0
    assert report["device"]["device"] == "cpu" and report["device"]["weights_dtype"] == "float32"
    assert report["tokens"]["train"]["rows"] == 23 and report["tokens"]["train"]["truncated"] == 1
    assert report["time"]["seconds_per_step"] > 0 and report["time"]["steps_per_epoch"] == 11  # 22 kept rows / 2


def test_the_marked_span_is_the_answer_and_its_eos_only(risky_run):
    done, report, _ = risky_run
    first = report["rows"][0]["text"]
    assert first.count("[[") == 1 and first.endswith("<|im_start|>assistant\n[[31<|im_end|>\n]]")
    assert "[[31<|im_end|>\\n]]" in done.stdout  # the trained newline after EOS is shown
    trained = report["trained_tokens"]
    assert trained["pad"]["id"] != trained["eos"]["id"]
    assert trained["answers_checked"] == trained["answers_ending_with_eos"] == 22


def test_duplicates_and_leakage_are_warnings(risky_run):
    done, report, _ = risky_run
    assert report["duplicates"]["train"] == {"exact_duplicates": 1, "near_duplicates": 1, "conflicting_labels": 0}
    assert report["duplicates"]["train_validation_overlap"] == 1
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert any("1 exact and 1 near-duplicate rows" in w for w in warnings), warnings
    assert any("1 of 4 rows also appear in data.train" in w for w in warnings), warnings
    assert not any("error" in w for w in warnings)


def test_a_row_truncation_leaves_untrained_is_an_error_in_one_line(risky_run):
    done, report, _ = risky_run
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(
        "error: data.train: 1 of 23 rows keep no trained token after truncation to"
        " data.max_length=60 (row 23: the prompt fills it); raise data.max_length to at least"
    )
    assert report["errors"] == [errors[0].removeprefix("error: ")]
    assert "doctor: 1 problem (below), 2 warnings" in done.stdout


def test_classification_shows_the_label_balance(tiny_model, tmp_path):
    texts = ["great", "lovely", "superb", "brilliant", "fine", "charming", "awful", "dull"]
    train = [{"text": f"The film was {w}, take {i}.", "label": "negative" if w in ("awful", "dull") else "positive"}
             for i in range(3) for w in texts]  # fmt: skip
    val = [{"text": f"A {w} evening.", "label": label} for w, label in (("bad", "negative"), ("good", "positive"))]
    recipe = base_recipe(
        tiny_model, tmp_path, tmp_path / "run", task="classification", classification={"head": "sequence"},
        data={"train": str(write_jsonl(tmp_path / "train.jsonl", train)),
              "validation": str(write_jsonl(tmp_path / "val.jsonl", val)), "format": "classification"},
    )  # fmt: skip
    done = run_cli("doctor", write_recipe(tmp_path / "r.yaml", recipe), "--json", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["labels"] == {"train": {"negative": 6, "positive": 18}, "validation": {"negative": 1, "positive": 1}}
    lines = done.stdout.splitlines()
    balance = lines[lines.index("label balance") + 1 : lines.index("label balance") + 4]
    assert balance[1].split() == ["negative", "6", "(25.0%)", "1", "(50.0%)"], balance
    assert any(line.startswith("warning: data.train: labels are imbalanced: 'positive' has 18") for line in lines)
    assert report["rows"][0]["label"] == "positive" and report["rows"][0]["text"].endswith("]]")
    assert report["memory"]["items"]["adapter"]["bytes"] > 0
    assert done.returncode == 0 and "doctor: no problems, 1 warning" in done.stdout


def test_an_answer_without_eos_and_a_label_without_rows_are_problems():
    """The two checks the runs above cannot reach with a shipped template and labels found in the data."""
    from transformers import AutoTokenizer

    from llm_tune.doctor.checks import Findings, eos_findings, label_findings

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    tokenizer.pad_token = "<|endoftext|>"
    ids = tokenizer("<|im_start|>assistant\nhello<|im_end|>\n")["input_ids"]
    labels = [-100 if token != "hello" else i for i, token in zip(ids, tokenizer.convert_ids_to_tokens(ids))]
    assert sum(label != -100 for label in labels) == 1  # "hello" trains, its <|im_end|> does not
    found = Findings()
    section = eos_findings(tokenizer, [{"row": 0, "input_ids": ids, "labels": labels}], set(), found)
    assert section["answers_checked"] == 1 and section["answers_ending_with_eos"] == 0
    assert found.errors[0].startswith("data.train: 1 of 1 answers do not end with a trained EOS '<|im_end|>' (rows 1)")
    label_findings(["a", "a", "b"], ["c"], ["a", "b", "c"], found)
    assert found.errors[1] == (
        "data.train: no training row has the label 'c' (validation has some); add rows of it,"
        " or drop it from classification.labels"
    )


def _peak_rss_gib(args: list[str]) -> float:
    """Peak resident memory of `python -m llm_tune ARGS` (os.wait4's ru_maxrss, as bench/speed.py measures it)."""
    proc = subprocess.Popen([sys.executable, "-m", "llm_tune", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return usage.ru_maxrss / 2**20  # KiB on Linux


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.is_dir(), reason="needs the default model (make model)")
@pytest.mark.parametrize("recipe", ["instruct-lora", "sentiment"])
def test_memory_estimate_is_within_30_percent_of_a_measured_run(recipe, tmp_path):
    path = ROOT / "recipes" / f"{recipe}.yaml"
    run_cli("doctor", path, f"output_dir={tmp_path / 'run'}", "--json", tmp_path / "report.json", timeout=1200)
    estimate = json.loads((tmp_path / "report.json").read_text())["memory"]["peak_bytes"] / 2**30
    measured = _peak_rss_gib([str(path), "training.max_steps=3", f"output_dir={tmp_path / 'run'}"])
    print(f"{recipe}: estimate {estimate:.2f} GiB, measured peak {measured:.2f} GiB")
    assert 0.7 * measured <= estimate <= 1.3 * measured, (estimate, measured)


def _pair(i: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"Say word {i} politely" + " please" * (i % 5) + "."}],
            "chosen": [{"role": "assistant", "content": f"Of course: word {i}."}],
            "rejected": [{"role": "assistant", "content": f"WORD {i}!"}]}  # fmt: skip


def test_doctor_on_a_preference_recipe_measures_its_steps(tiny_model, tmp_path):
    """Pairs counted after the row checks (a bad pair skipped and said), prompt and answer lengths, the reference in
    words, and the memory and time of real DPO steps, the first on the longest rows; nothing written but the JSON."""
    rows = [_pair(i) for i in range(12)]
    rows[3]["rejected"] = rows[3]["chosen"]  # identical answers: a bad pair
    data = {"train": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "format": "preference", "max_length": 64,
            "skip_bad_rows": True}  # fmt: skip
    recipe = base_recipe(tiny_model, tmp_path, tmp_path / "run", data=data, training={"per_device_train_batch_size": 2})
    recipe["task"] = "preference"
    done = run_cli("doctor", write_recipe(tmp_path / "r.yaml", recipe), "--json", tmp_path / "report.json")
    for title in ("rows (after the row checks)", "tokens per row", "memory (measured", "time (measured"):
        assert f"\n{title}" in done.stdout, title
    assert (
        "  method    dpo" in done.stdout and "the base model: the same weights with the adapter disabled" in done.stdout
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"] == {"train": 11} and any("1 " in note and "skipped" in note for note in report["notes"])
    longest = max(report["tokens"]["train"]["max"], 1)
    assert report["memory"]["rows"] == 2 and report["memory"]["tokens"] == longest
    assert report["memory"]["peak_bytes"] > 2**20 and report["time"]["seconds_per_step"] > 0
    assert report["time"]["steps_per_epoch"] == 6 and report["time"]["steps"] == 3
    assert not (tmp_path / "run").exists()


def _bf16_cpu() -> bool:
    from llm_tune.model.precision import native_bf16

    return native_bf16()


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.is_dir(), reason="needs the default model (make model)")
# Known gap, measured 2026-12-06 on a 2-core Xeon with AMX: doctor 4.72 GiB against a real run's 6.71 GiB RSS
# (bf16 autocast's cast copies are not in the first measured step); holds on CPUs without native bf16.
@pytest.mark.skipif(_bf16_cpu(), reason="doctor's preference peak under-reads bf16 autocast (known gap)")
def test_preference_memory_is_the_peak_of_a_real_run(tmp_path):
    """recipes/dpo.yaml on the 16 longest of the first 64 HH-RLHF pairs in data/ (the recipe's own train file, so
    the check runs from a clone without ../shared): doctor's measured peak (its first step on the longest rows)
    against a real 4-step run's, which trains every one of those rows."""
    source = ROOT / "data" / "hh_rlhf_helpful_pairs" / "train.jsonl"
    pairs = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()[:64]]
    pairs.sort(key=lambda p: -len(json.dumps(p)))
    train = write_jsonl(tmp_path / "long.jsonl", pairs[:16])
    args = [f"data.train={train}", "data.validation=null", "training.eval_steps=null", f"output_dir={tmp_path / 'run'}"]
    recipe = ROOT / "recipes" / "dpo.yaml"
    run_cli("doctor", recipe, *args, "--json", tmp_path / "report.json", timeout=1200)
    doctor = json.loads((tmp_path / "report.json").read_text())["memory"]["peak_bytes"] / 2**30
    measured = _peak_rss_gib([str(recipe), *args, "training.max_steps=4"])
    print(f"dpo: doctor's measured peak {doctor:.2f} GiB, a real run's {measured:.2f} GiB")
    assert 0.9 * measured <= doctor <= 1.3 * measured, (doctor, measured)
