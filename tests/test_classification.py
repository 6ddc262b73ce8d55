"""Classification through the real entry point: both heads with every strategy, eval and predict, the head
surviving save and reload, a learnable toy task, metrics against a hand-computed example, bad labels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import base_recipe, run_cli, set_strategy, write_jsonl, write_recipe

STRATEGIES = ["lora", "qlora", "full", "frozen"]


def classification_recipe(tiny_model, data_dir, out: Path, head: str, kind: str, **training) -> dict:
    recipe = base_recipe(
        tiny_model,
        data_dir,
        out,
        task="classification",
        classification={"head": head},
        data={
            "train": str(data_dir / "reviews.jsonl"),
            "validation": str(data_dir / "reviews_val.jsonl"),
            "format": "classification",
        },
    )
    recipe["strategy"]["trainable_layers"] = 1
    set_strategy(recipe, kind)
    recipe["training"].update(training)
    return recipe


@pytest.mark.parametrize("kind", STRATEGIES)
@pytest.mark.parametrize("head", ["sequence", "generate"])
def test_both_heads_train_save_and_evaluate(tiny_model, data_dir, tmp_path, head, kind):
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_model, data_dir, out, head, kind))
    done = run_cli(recipe)
    assert "accuracy" in done.stdout and "confusion matrix" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    at_train_end = json.loads((out / "eval" / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and all(p["prediction"] in ("negative", "positive") for p in predictions)
    # The recorded accuracy is the share of the written predictions that are right.
    assert metrics["eval_accuracy"] == sum(p["prediction"] == p["label"] for p in predictions) / 8
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in predictions)
    # `eval` reloads the saved run: the same predictions as the in-memory model at the end of training.
    run_cli("eval", out)
    reloaded = json.loads((out / "eval" / "metrics.json").read_text())
    assert reloaded["confusion_matrix"] == at_train_end["confusion_matrix"]
    reloaded_predictions = [json.loads(l) for l in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    # bitsandbytes' 4-bit CPU matmul differs by ~1e-4 between the trained model and a fresh 4-bit load.
    tolerance = 1e-3 if kind == "qlora" else 1e-5
    for before, after in zip(predictions, reloaded_predictions):
        for label in ("negative", "positive"):
            assert after["probabilities"][label] == pytest.approx(before["probabilities"][label], abs=tolerance)
    if head == "sequence":
        config_dir = out / ("adapter" if kind in ("lora", "qlora") else "model")
        if kind in ("full", "frozen"):
            config = json.loads((config_dir / "config.json").read_text())
            assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_sequence_head_survives_save_and_reload_with_identical_logits(tiny_model, data_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "run"
    recipe = classification_recipe(tiny_model, data_dir, out, "sequence", "lora", learning_rate=1e-2)
    run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    adapter = out / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"]
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = PeftModel.from_pretrained(base, adapter).eval()
    untrained = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    batch = tokenizer(["The film was lovely."], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, untrained(**batch).logits)
    again = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2), adapter
    )
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again.eval()(**batch).logits)


@pytest.mark.parametrize("head", ["sequence", "generate"])
def test_a_toy_task_reaches_high_accuracy(tiny_model, tmp_path, head):
    """The label says whether the text ends with the keyword 'zebra' (or 'horse'): a few dozen steps learn it."""
    rng = random.Random(0)
    words = "apple river stone cloud green tiger piano lemon chair ocean paper candle".split()

    def row(i):
        has = i % 2 == 0
        text = rng.sample(words, 3) + ["zebra" if has else "horse"]
        return {"text": " ".join(text), "label": "yes" if has else "no"}

    data = tmp_path / "data"
    write_jsonl(data / "reviews.jsonl", [row(i) for i in range(64)])
    write_jsonl(data / "reviews_val.jsonl", [row(i) for i in range(40)])
    recipe = classification_recipe(
        tiny_model,
        data,
        tmp_path / "run",
        head,
        "full",
        max_steps=64,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
    )
    recipe["data"].update(prompt="{text}", system_prompt="Answer yes or no.")
    run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics


def test_predict_prints_each_label_with_its_probability(tiny_model, data_dir, tmp_path):
    out = tmp_path / "run"
    run_cli(write_recipe(tmp_path / "r.yaml", classification_recipe(tiny_model, data_dir, out, "generate", "lora")))
    done = run_cli("predict", out, "--text", "A lovely film.", "--text", "Dull.")
    lines = done.stdout.splitlines()
    assert lines[lines.index("A lovely film.") + 1].split()[0] in ("negative", "positive")
    texts = write_jsonl(tmp_path / "t.txt", [])
    texts.write_text("first\nsecond\n")
    assert "second" in run_cli("predict", out, "--file", texts).stdout


def test_an_unknown_label_is_an_error_naming_the_row(tiny_model, data_dir, tmp_path):
    rows = [json.loads(line) for line in (data_dir / "reviews_val.jsonl").read_text().splitlines()]
    rows[2]["label"] = "neutral"
    bad = write_jsonl(tmp_path / "val.jsonl", rows)
    recipe = classification_recipe(tiny_model, data_dir, tmp_path / "run", "generate", "lora")
    recipe["data"]["validation"] = str(bad)
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe), check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: {bad}:3: label 'neutral' is not one of the labels ['negative', 'positive']" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("head", ["sequence", "generate"])
def test_eval_and_predict_cut_prompts_as_training_did(tiny_model, data_dir, tmp_path, head):
    """A prompt longer than data.max_length is scored on the tokens training kept (one function for both), not on
    the whole prompt: the probabilities equal the model's on the training encoding and differ from the uncut ones."""
    import torch
    from datasets import Dataset

    from llm_tune.classification.commands import predict_command
    from llm_tune.classification.heads import classifier_prompt_ids, label_probabilities
    from llm_tune.data.formats import render
    from llm_tune.model.trained import load_trained

    out = tmp_path / "run"
    recipe = classification_recipe(tiny_model, data_dir, out, head, "lora", learning_rate=1e-2, max_steps=2)
    recipe["data"].update(max_length=48, system_prompt="", prompt="{text}")  # the training rows fit: none is dropped
    run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    text = "An endless review that says a great deal about the film, " * 8 + "and in the end it was lovely."
    got = predict_command(out, [text], None)[0]

    run = load_trained(out)
    labels, max_length = run.recipe.classification.labels, run.recipe.data.max_length
    rows = Dataset.from_dict({"text": [text], "label": [labels[0]]})
    prompt = render(rows, run.recipe.data, labels, True)["prompt"][0]
    kept = classifier_prompt_ids(run.tokenizer, prompt, max_length, 0 if head == "sequence" else 3)
    assert len(kept) < len(classifier_prompt_ids(run.tokenizer, prompt, 10_000))  # the prompt was cut
    whole = label_probabilities(run.model, run.tokenizer, [prompt], labels, head, 1, 10_000)[0]
    if head == "sequence":
        from llm_tune.classification.heads import encode_for_classifier

        ids = encode_for_classifier(run.tokenizer, labels, max_length)({"prompt": [prompt], "label": [labels[0]]})
        with torch.no_grad():
            logits = run.model(input_ids=torch.tensor(ids["input_ids"])).logits
        expected = torch.softmax(logits.float(), -1)[0].tolist()
        assert [got[label] for label in labels] == pytest.approx(expected, abs=1e-6)
    assert max(abs(got[label] - p) for label, p in zip(labels, whole)) > 1e-4  # cutting changed the answer


def test_the_generate_head_trains_on_the_prompt_end_it_scores(tiny_model, data_dir, tmp_path):
    """A generate-head row whose prompt alone fills data.max_length trains on its prompt's last tokens and its whole
    answer, the tokens eval and predict score (SFT's cut keeps the start: these rows would keep no answer token and
    the run would stop with nothing to train)."""
    from llm_tune.classification.heads import classifier_prompt_ids, label_token_ids
    from llm_tune.data.formats import load_splits
    from llm_tune.model.trained import load_trained
    from llm_tune.train.trainer import _tokenized

    story = "An endless review that says a great deal about the film, " * 8
    labels = ["negative", "positive"] * 4
    rows = [{"text": story + ("and it was lovely." if y == "positive" else "and it was dull."), "label": y}
            for y in labels]  # fmt: skip
    out = tmp_path / "run"
    recipe = classification_recipe(tiny_model, data_dir, out, "generate", "lora", max_steps=1)
    recipe["data"].update(train=str(write_jsonl(tmp_path / "long.jsonl", rows)), max_length=48, system_prompt="",
                          prompt="{text}")  # fmt: skip
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert "train: 8 of 8 rows are longer than data.max_length=48 and are truncated" in done.stdout
    assert "left out" not in done.stdout

    run = load_trained(out)
    splits = load_splits(run.recipe.data, run.recipe.classification.labels, run.tokenizer)
    trained = _tokenized(run.recipe, run.tokenizer, splits, "train")["input_ids"]
    room = max(len(ids) for ids in label_token_ids(run.tokenizer, run.recipe.classification.labels))
    for prompt, label, ids in zip(splits.train["prompt"], labels, trained):
        kept = classifier_prompt_ids(run.tokenizer, prompt, 48, room)
        answer = label_token_ids(run.tokenizer, [label])[0]
        assert len(ids) <= 48 and ids[: len(kept)] == kept
        assert ids[len(kept) : len(kept) + len(answer)] == answer


def test_a_carved_validation_split_gets_the_full_evaluation(tiny_model, data_dir, tmp_path):
    """data.validation_fraction instead of a file: the same end-of-run evaluation (eval/, accuracy and ECE in
    metrics.json, the temperature fitted on half the carved rows and reported on the other half). It once got none:
    calibrate accepted and never fitted."""
    from conftest import call_cli

    out = tmp_path / "run"
    recipe = classification_recipe(tiny_model, data_dir, out, "sequence", "lora", max_steps=2)
    recipe["data"] |= {"validation": None, "validation_fraction": 0.25}
    recipe["data"].pop("validation")
    recipe["classification"]["calibrate"] = True
    call_cli(write_recipe(tmp_path / "r.yaml", recipe))
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_macro_f1", "eval_ece", "eval_ece_before", "temperature"} <= set(metrics)
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())
    assert evaluation["rows"] == 3 and "carved" in evaluation["data"]  # 6 carved rows: 3 fit, 3 report
    assert (out / "calibration.json").is_file()
    import yaml

    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["classification"]["temperature"] > 0


def test_bad_validation_rows_are_skipped_at_the_end_as_in_training(tiny_model, data_dir, tmp_path):
    """With data.skip_bad_rows, the bad validation row training skipped is skipped (and counted) by the end-of-run
    evaluation too; it once stopped the finished run there, advising the key that was set."""
    from conftest import call_cli

    rows = [json.loads(line) for line in (data_dir / "reviews_val.jsonl").read_text().splitlines()]
    write_jsonl(tmp_path / "val.jsonl", [*rows, {"text": "", "label": "positive"}])
    out = tmp_path / "run"
    recipe = classification_recipe(tiny_model, data_dir, out, "sequence", "lora", max_steps=1)
    recipe["data"] |= {"validation": str(tmp_path / "val.jsonl"), "skip_bad_rows": True}
    done = call_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert done.stdout.count("skipped 1 bad rows") == 2  # training's count, and the evaluation's
    assert json.loads((out / "eval" / "metrics.json").read_text())["rows"] == len(rows)
