"""Temperature scaling: the fit recovers a known over-confidence, ECE against a hand-computed table, and through the
real entry point the temperature is fitted after training, saved in the run's recipe and used by eval and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import base_recipe, card_snippet_output, run_cli, write_recipe


def test_the_fit_recovers_a_known_temperature():
    import torch

    from llm_tune.classification.calibration import calibrate

    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 3, generator=generator) * 2
    truth = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=generator).squeeze(1).tolist()
    held_logits = torch.randn(20000, 3, generator=generator) * 2
    held = torch.multinomial(torch.softmax(held_logits, -1), 1, generator=generator).squeeze(1).tolist()
    fit = calibrate((true_logits * 3).numpy(), truth, (held_logits * 3).numpy(), held)  # a model 3x over-confident
    # 20,000 rows: the fitted T's spread over seeds is about 0.03; 0.15 is five times that. ECE: on other rows.
    assert fit["temperature"] == pytest.approx(3.0, abs=0.15)
    assert fit["ece_after"] < fit["ece_before"] / 3


def test_ece_matches_a_hand_computed_table():
    from llm_tune.classification.calibration import reliability

    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
    result = reliability(probs, [0, 1, 1, 0], bins=2)
    # Bin (0.5, 1.0] holds all: confidences .95 .9 .7 .55 (mean 0.775), right 1, 0, 1, 0 (accuracy 0.5).
    assert result["ece"] == pytest.approx(0.275)
    assert [b["rows"] for b in result["bins"]] == [4]


def test_calibrate_fits_after_training_and_eval_and_predict_use_it(tiny_model, data_dir, tmp_path):
    out = tmp_path / "run"
    recipe = base_recipe(
        tiny_model,
        data_dir,
        out,
        task="classification",
        classification={"head": "sequence", "calibrate": True},
        data={
            "train": str(data_dir / "reviews.jsonl"),
            "validation": str(data_dir / "reviews_val.jsonl"),
            "format": "classification",
        },
    )
    recipe["training"].update(max_steps=6, per_device_train_batch_size=4)
    run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    temperature = yaml.safe_load((out / "recipe.resolved.yaml").read_text())["classification"]["temperature"]
    fit = json.loads((out / "calibration.json").read_text())
    assert temperature == pytest.approx(fit["temperature"], rel=1e-5) and temperature != 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] == temperature and metrics["eval_ece"] == pytest.approx(fit["ece_after"])
    assert (out / "report" / "reliability.png").is_file()
    # T was fitted on a seeded half of the validation rows; the figures are of the other half: the ECE before
    # calibration, recomputed from the written predictions at T = 1, is the one calibration.json reports.
    from llm_tune.classification.calibration import reliability, softmax

    predictions = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    rows = len((data_dir / "reviews_val.jsonl").read_text().splitlines())
    assert len(predictions) == rows - round(rows / 2)
    logits = np.log([[p["probabilities"]["negative"], p["probabilities"]["positive"]] for p in predictions])
    truth = [["negative", "positive"].index(p["label"]) for p in predictions]
    raw = logits * temperature  # softmax(s / T) = these probabilities: s is T x log p (up to a row constant)
    # predictions.jsonl holds float32 probabilities: through log and softmax again they move the ECE by ~1e-4
    # (measured 9e-5); another set of rows moves it by far more (its rows are 4 of the 8).
    assert reliability(softmax(raw, None), truth)["ece"] == pytest.approx(fit["ece_before"], abs=1e-3)
    # eval and predict reload the run and apply the same temperature.
    run_cli("eval", out)
    again = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    first = next(p for p in again if p["text"] == predictions[0]["text"])
    assert first["probabilities"] == pytest.approx(predictions[0]["probabilities"], abs=1e-5)
    shown = run_cli("predict", out, "--text", predictions[0]["text"]).stdout
    assert f"positive {predictions[0]['probabilities']['positive']:.4f}" in shown
    # The exports fold the temperature into the head: their card's softmax gives predict's probabilities.
    run_cli("export", out, "--merge")
    run_cli("export", out)
    assert json.loads((out / "export" / "merged" / "config.json").read_text())["temperature_folded"] == temperature
    for folder in (out / "export" / "merged", out / "export" / "adapter"):
        said = eval(card_snippet_output(folder, **{"Text to classify": predictions[0]["text"]}))
        assert said == pytest.approx(predictions[0]["probabilities"], abs=1e-4), folder.name
