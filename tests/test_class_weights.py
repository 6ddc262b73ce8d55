"""Class weights through the real entry point: on both single-label heads, weights of c multiply the first step's
loss by c (same batch, same initial weights); `balanced` resolves to rows / (labels x rows of the label) and is
recorded in the run's recipe and model card; the sequence head's weighted loss matches torch's definition."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import base_recipe, run_cli_together, write_jsonl, write_recipe


def weighted_recipe(tiny_model, data_dir, out, head, weights=None, train=None):
    recipe = base_recipe(
        tiny_model,
        data_dir,
        out,
        task="classification",
        classification={"head": head, **({"class_weights": weights} if weights is not None else {})},
        data={"train": str(train or data_dir / "reviews.jsonl"), "format": "classification"},
    )
    recipe["training"].update(max_steps=1, logging_steps=1)
    return recipe


def first_loss(out) -> float:
    state = json.loads((out / "trainer_state.json").read_text())
    return next(entry["loss"] for entry in state["log_history"] if "loss" in entry)


@pytest.mark.parametrize("head", ["sequence", "generate"])
def test_uniform_weights_scale_the_loss_by_their_value(tiny_model, data_dir, tmp_path, head):
    plain = write_recipe(tmp_path / "plain.yaml", weighted_recipe(tiny_model, data_dir, tmp_path / "plain", head))
    tripled = write_recipe(
        tmp_path / "w.yaml",
        weighted_recipe(tiny_model, data_dir, tmp_path / "w", head, {"negative": 3.0, "positive": 3.0}),
    )
    run_cli_together([plain], [tripled])
    # The generate head finds each row's weight by its first answer token: a row it failed to map would weigh 1.
    assert first_loss(tmp_path / "w") == pytest.approx(3.0 * first_loss(tmp_path / "plain"), rel=1e-4)
    resolved = yaml.safe_load((tmp_path / "w" / "recipe.resolved.yaml").read_text())["classification"]["class_weights"]
    assert resolved == {"negative": 3.0, "positive": 3.0}


def test_balanced_weights_are_resolved_from_the_training_rows(tiny_model, data_dir, tmp_path):
    rows = [{"text": f"review {i}", "label": "negative" if i % 4 else "positive"} for i in range(16)]
    train = write_jsonl(tmp_path / "imbalanced.jsonl", rows)  # 12 negative, 4 positive
    out = tmp_path / "run"
    recipe = weighted_recipe(tiny_model, data_dir, out, "sequence", "balanced", train=train)
    recipe["export"] = {"format": "safetensors"}
    run_cli_together([write_recipe(tmp_path / "r.yaml", recipe)])
    resolved = yaml.safe_load((out / "recipe.resolved.yaml").read_text())["classification"]["class_weights"]
    assert resolved == pytest.approx({"negative": 16 / (2 * 12), "positive": 16 / (2 * 4)}, rel=1e-5)
    card = next((out / "export").rglob("README.md")).read_text()
    assert "class_weights" in card and "0.666667" in card


def test_weighted_cross_entropy_matches_its_definition():
    import torch
    import torch.nn.functional as F

    from llm_tune.classification.weights import weighted_cross_entropy

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 2, 1, 2])
    weights = [0.5, 2.0, 1.5]
    expected = sum(weights[y] * F.cross_entropy(logits[i : i + 1], labels[i : i + 1]) for i, y in enumerate(labels)) / 4
    got = weighted_cross_entropy(weights)(type("Out", (), {"logits": logits})(), labels)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # Accumulated over two micro-batches, the trainer divides by the rows of both.
    half = weighted_cross_entropy(weights)(type("Out", (), {"logits": logits[:2]})(), labels[:2], num_items_in_batch=4)
    rest = weighted_cross_entropy(weights)(type("Out", (), {"logits": logits[2:]})(), labels[2:], num_items_in_batch=4)
    assert (half + rest).item() == pytest.approx(expected.item(), rel=1e-6)


def test_each_answer_token_takes_its_rows_weight():
    import torch

    from llm_tune.classification.weights import row_weights

    ignore = -100
    labels = torch.tensor([[ignore, ignore, 7, 2], [ignore, 9, 2, ignore], [ignore, ignore, ignore, ignore]])
    token_weight = torch.ones(10)
    token_weight[7], token_weight[9] = 0.25, 4.0
    assert row_weights(labels, token_weight).tolist() == [[0, 0.25, 0.25], [4.0, 4.0, 0], [0, 0, 0]]


def test_balanced_weights_count_what_a_mixtures_epoch_trains(tiny_model, data_dir, tmp_path, monkeypatch):
    """Source A (6 positive, 2 negative, weight 1) and B (4 negative, weight 3): an epoch of 12 rows draws 3 of A
    and 9 of B, so it trains 2.25 positive and 9.75 negative rows on average; counted over the rows loaded (6 and 6)
    the weights would be 1 and 1, a 4:1 skew left in place."""
    from conftest import call_cli

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    a = [{"text": f"good film {i}", "label": "positive"} for i in range(6)]
    a += [{"text": f"bad film {i}", "label": "negative"} for i in range(2)]
    b = [{"text": f"dull book {i}", "label": "negative"} for i in range(4)]
    write_jsonl(tmp_path / "a.jsonl", a)
    write_jsonl(tmp_path / "b.jsonl", b)
    recipe = base_recipe(
        tiny_model, data_dir, tmp_path / "out", task="classification",
        classification={"head": "sequence", "class_weights": "balanced"},
        data={"train": [{"path": str(tmp_path / "a.jsonl"), "weight": 1}, {"path": str(tmp_path / "b.jsonl"), "weight": 3}],
              "format": "classification", "max_length": 64},
    )  # fmt: skip
    recipe["training"] |= {"max_steps": 1}
    call_cli(write_recipe(tmp_path / "r.yaml", recipe))
    weights = yaml.safe_load((tmp_path / "out" / "recipe.resolved.yaml").read_text())["classification"]["class_weights"]
    assert weights == pytest.approx({"positive": 12 / (2 * 2.25), "negative": 12 / (2 * 9.75)}, rel=1e-5)
