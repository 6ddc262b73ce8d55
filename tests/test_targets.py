"""Multi-label and regression heads, and text pairs, through the real entry point on a tiny model: thresholds tuned
after training, saved in the run's recipe and used by eval and predict; regression's target scale recorded and
undone; the pair text reaching the prompt; and the metrics against hand-computed values."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml

from conftest import base_recipe, card_snippet_output, run_cli, run_cli_together, write_jsonl, write_recipe

WORDS = {"joy": ["happy", "glad"], "anger": ["angry", "furious"], "fear": ["scared", "afraid"]}
PROMPT = "Sentence 1: {text}\nSentence 2: {text_pair}\nHow similar?"


@pytest.fixture(scope="module")
def runs(tiny_model, data_dir, tmp_path_factory):
    """A multi_label run (train labels as 'a|b' strings, validation as lists) and a regression run on pairs."""
    w = tmp_path_factory.mktemp("targets")
    rng = random.Random(0)
    rows = []
    for i in range(40):
        found = rng.sample(sorted(WORDS), rng.choice([1, 1, 2]))
        rows.append({"text": " and ".join(rng.choice(WORDS[x]) for x in found) + f" today {i}", "labels": found})
    write_jsonl(w / "ml.jsonl", [{**r, "labels": "|".join(r["labels"])} for r in rows[:32]])
    write_jsonl(w / "ml_val.jsonl", rows[32:])
    things = ["cat", "dog", "car", "tree", "sun", "boat"]
    pairs = []
    for _ in range(40):
        a, b = rng.choice(things), rng.choice(things)
        pairs.append(
            {"text": f"a {a} here", "text_pair": f"a {b} there", "score": 5.0 if a == b else rng.uniform(0, 2)}
        )
    write_jsonl(w / "pairs.jsonl", pairs[:32])
    write_jsonl(w / "pairs_val.jsonl", pairs[32:])
    common = {"task": "classification", "classification": {"head": "sequence"}}
    ml = base_recipe(
        tiny_model,
        data_dir,
        w / "ml",
        **common,
        data={
            "train": str(w / "ml.jsonl"),
            "validation": str(w / "ml_val.jsonl"),
            "format": "multi_label",
            "label_separator": "|",
            "max_length": 64,
        },
    )
    reg = base_recipe(
        tiny_model,
        data_dir,
        w / "reg",
        **common,
        data={
            "train": str(w / "pairs.jsonl"),
            "validation": str(w / "pairs_val.jsonl"),
            "format": "regression",
            "fields": {"text_pair": "text_pair"},
            "prompt": PROMPT,
            "max_length": 64,
        },
    )
    reg["classification"]["normalize_targets"] = True
    for recipe in (ml, reg):
        recipe["training"].update(max_steps=4, per_device_train_batch_size=4, eval_steps=2)
    run_cli_together([write_recipe(w / "ml.yaml", ml)], [write_recipe(w / "reg.yaml", reg)])
    return w


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_multi_label_thresholds_are_tuned_saved_and_used(runs):
    out = runs / "ml"
    thresholds = yaml.safe_load((out / "recipe.resolved.yaml").read_text())["classification"]["thresholds"]
    assert sorted(thresholds) == ["anger", "fear", "joy"] and all(0 < t < 1 for t in thresholds.values())
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())
    assert evaluation["thresholds"] == pytest.approx(thresholds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_micro_f1"] == evaluation["micro_f1"] and metrics["eval_macro_f1"] == evaluation["macro_f1"]
    predictions = read_jsonl(out / "eval" / "predictions.jsonl")
    for p in predictions:  # predicted: exactly the labels at or over their own threshold
        assert p["prediction"] == [label for label, q in p["probabilities"].items() if q >= thresholds[label]]
    # The scores, counted again here from the written predictions: pooled (micro), per label (macro), whole rows.
    pairs = [(set(p["prediction"]), set(p["label"])) for p in predictions]
    counts = {
        label: [sum((label in got) and (label in want) for got, want in pairs),
                sum((label in got) and (label not in want) for got, want in pairs),
                sum((label not in got) and (label in want) for got, want in pairs)]
        for label in thresholds
    }  # fmt: skip
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    per_label = [2 * c[0] / (2 * c[0] + c[1] + c[2]) if any(c) else 0.0 for c in counts.values()]
    assert evaluation["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert evaluation["macro_f1"] == pytest.approx(sum(per_label) / len(per_label))
    assert evaluation["subset_accuracy"] == pytest.approx(sum(got == want for got, want in pairs) / len(pairs))
    # `eval` reloads the run and reproduces the metrics; `predict` prints the labels over their thresholds.
    # The thresholds were tuned on a seeded half of the validation rows; every figure is of the other half.
    rows = len(read_jsonl(runs / "ml_val.jsonl"))
    assert evaluation["rows"] == rows - round(rows / 2) and "not used to fit" in evaluation["data"]
    held = {p["text"]: p for p in predictions}
    run_cli("eval", out, "--data", runs / "ml_val.jsonl")
    again = read_jsonl(out / "eval" / "predictions.jsonl")
    assert len(again) == rows and all(p == held[p["text"]] for p in again if p["text"] in held)
    row = predictions[0]
    shown = run_cli("predict", out, "--text", row["text"]).stdout.split(row["text"])[-1]
    for label, probability in row["probabilities"].items():
        assert (f"{label} {probability:.4f}" in shown) == (label in row["prediction"])
    page = (out / "report.html").read_text()
    assert "micro-F1" in page and (out / "report" / "per_class_f1.png").is_file()
    # The merged export says what its outputs are: transformers' pipelines pick sigmoid or softmax by it.
    run_cli("export", out, "--merge")
    config = json.loads((out / "export" / "merged" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["label_thresholds"] == pytest.approx(thresholds)
    # Both exports, read as their model card says (the trained prompt, sigmoids, the tuned thresholds), predict
    # the labels eval predicted for the row.
    run_cli("export", out)
    for folder in (out / "export" / "merged", out / "export" / "adapter"):
        said = card_snippet_output(folder, **{"Text to classify": row["text"]})
        assert sorted(eval(said)) == sorted(row["prediction"]), folder.name


def test_regression_on_pairs_records_its_scale_and_scores_on_the_true_scale(runs):
    out = runs / "reg"
    c = yaml.safe_load((out / "recipe.resolved.yaml").read_text())["classification"]
    scores = np.array([r["score"] for r in read_jsonl(runs / "pairs.jsonl")])
    assert c["target_mean"] == pytest.approx(scores.mean()) and c["target_std"] == pytest.approx(scores.std())
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())
    predictions = read_jsonl(out / "eval" / "predictions.jsonl")
    predicted, truth = np.array([p["prediction"] for p in predictions]), np.array([p["label"] for p in predictions])
    assert evaluation["mse"] == pytest.approx(((predicted - truth) ** 2).mean())
    assert evaluation["pearson"] == pytest.approx(np.corrcoef(predicted, truth)[0, 1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_pearson"] == evaluation["pearson"] and metrics["eval_spearman"] == evaluation["spearman"]
    # predict renders the pair as training did: the same score as eval gave the first validation row.
    first = read_jsonl(runs / "pairs_val.jsonl")[0]
    shown = run_cli("predict", out, "--text", first["text"], "--text-pair", first["text_pair"]).stdout
    assert f"score {predictions[0]['prediction']:.4f}" in shown
    missing = run_cli("predict", out, "--text", first["text"], check=False)
    assert missing.returncode == 2 and "--text-pair" in missing.stderr
    assert (out / "report" / "prediction_vs_truth.png").is_file()
    # The head outputs (score - mean) / std; every prediction is on the score's own scale (mean and std far from
    # 0 and 1 here, so an output left normalised cannot pass).
    from llm_tune.classification.heads import head_scores
    from llm_tune.data.formats import user_prompt
    from llm_tune.model.trained import load_trained

    assert abs(c["target_mean"]) > 0.5 and abs(c["target_std"] - 1) > 0.2
    run = load_trained(out)
    prompt = user_prompt(first["text"], run.recipe.data, None, True, first["text_pair"])
    raw = float(head_scores(run.model, run.tokenizer, [prompt], ["score"], "sequence", 1, 64)[0, 0])
    assert predictions[0]["prediction"] == pytest.approx(raw * c["target_std"] + c["target_mean"], abs=1e-4)
    # Both exports, read as their model card says, give predict's score.
    run_cli("export", out, "--merge")
    merged = out / "export" / "merged"
    config = json.loads((merged / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["target_std"] == pytest.approx(c["target_std"])
    run_cli("export", out)
    for folder in (merged, out / "export" / "adapter"):
        said = card_snippet_output(folder, **{"Text to classify": first["text"], "Second text": first["text_pair"]})
        assert float(said.strip()) == pytest.approx(predictions[0]["prediction"], abs=1e-3), folder.name


def test_the_pair_text_is_rendered_into_the_prompt():
    from datasets import Dataset

    from llm_tune.data.formats import render
    from llm_tune.recipe.data import DataConfig

    cfg = DataConfig(train="x.jsonl", format="regression", fields={"text_pair": "b"}, prompt=PROMPT)
    rows = Dataset.from_list([{"text": "first one", "b": "second one", "score": 2.5}])
    row = render(rows, cfg, None, conversational=False)[0]
    assert "Sentence 1: first one\nSentence 2: second one" in row["prompt"] and row["label"] == 2.5


def test_multi_label_metrics_match_a_hand_computed_example():
    from llm_tune.classification.multilabel import multilabel_metrics, tune_thresholds

    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3], [0.1, 0.1]])
    m = multilabel_metrics(probs, truth, np.array([0.5, 0.5]))
    # label 0: predicted rows 0, 2 (tp 1, fp 1, fn 1) -> F1 0.5; label 1: predicted row 1 (tp 1, fn 1) -> F1 2/3.
    assert m["f1"] == pytest.approx([0.5, 2 / 3]) and m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # pooled: tp 2, fp 1, fn 2
    assert m["subset_accuracy"] == pytest.approx(0.5)  # rows 0 and 3 get exactly their set
    # Label a: any threshold in (0.1, 0.4] keeps both positives with one false positive (F1 0.8, the best); ties go
    # to the one nearest 0.5. Label b separates perfectly with a threshold in (0.2, 0.3].
    assert tune_thresholds(probs, truth, ["a", "b"]) == {"a": 0.4, "b": 0.3}
    assert tune_thresholds(probs, truth[:, ::-1].copy(), ["a", "b"])["b"] == 0.2


def test_regression_metrics_match_known_values():
    from llm_tune.classification.regression import regression_metrics

    m = regression_metrics([1.0, 2.0, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    assert m["spearman"] == pytest.approx(1.0)  # the same order
    x, y = np.array([1.0, 2.0, 3.0, 10.0]), np.array([1.0, 2.0, 3.0, 4.0])
    hand = ((x - x.mean()) * (y - y.mean())).sum() / np.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    assert m["pearson"] == pytest.approx(hand) and m["pearson"] < 0.95
    assert m["mse"] == pytest.approx(36 / 4) and m["mae"] == pytest.approx(6 / 4)
