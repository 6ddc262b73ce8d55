"""A single-label sequence classifier exported to GGUF through the real entry point: the head folded into the LM
head's label-token rows, verified by the export on the validation rows, and checked here independently: the GGUF,
loaded back by transformers, gives the run's `eval` probabilities; the input embeddings are untouched; and without
the fold the same file's label probabilities would be far off (the signal the tolerance must be smaller than)."""

from __future__ import annotations

import json

import pytest

from conftest import base_recipe, run_cli, write_recipe


@pytest.fixture(scope="module")
def run(tiny_model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("folded") / "run"
    recipe = base_recipe(
        tiny_model,
        data_dir,
        out,
        task="classification",
        classification={"head": "sequence", "init_head_from_labels": False},
        data={
            "train": str(data_dir / "reviews.jsonl"),
            "validation": str(data_dir / "reviews_val.jsonl"),
            "format": "classification",
        },
    )
    recipe["training"].update(max_steps=6, per_device_train_batch_size=4, learning_rate=5e-3)
    run_cli(write_recipe(out.parent / "r.yaml", recipe))
    return out


def label_probabilities_from_gguf(path, prompts, tokens):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    rows = []
    with torch.inference_mode():
        for ids in prompts:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, tokens]
            rows.append(torch.softmax(logits, -1))
    return torch.stack(rows), model


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_the_folded_gguf_reproduces_the_classifier(run, tiny_model, kind):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_tune.classification.rows import classification_rows
    from llm_tune.data.prompts import prompt_ids
    from llm_tune.run_folder import RunFolder

    run_cli("export", run, "--format", "gguf", "--gguf-type", kind)
    folder = run / "export" / "gguf"
    report = json.loads((folder / "verification.json").read_text())
    assert report["gate"]["check"] == f"gguf_{kind}_vs_classifier"
    folded = report["checks"]["folded_vs_classifier"]
    assert folded["rows"] == 8 and folded["prediction_agreement"] == 1.0 and folded["max_abs_logit_diff"] < 1e-4
    card = (folder / "README.md").read_text()
    assert "As a classifier (folded head)" in card and "llama-server -m" in card and "logit_bias" in card

    run_cli("eval", run)
    predictions = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    expected = torch.tensor([[p["probabilities"]["negative"], p["probabilities"]["positive"]] for p in predictions])
    recipe = RunFolder(run).read_recipe()
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    prompts = [
        prompt_ids(tokenizer, p) for p in classification_rows(recipe, recipe.data.validation, tokenizer)["prompt"]
    ]
    tokens = [
        tokenizer("negative", add_special_tokens=False)["input_ids"][0],
        tokenizer("positive", add_special_tokens=False)["input_ids"][0],
    ]
    path = next(folder.glob("*.gguf"))
    got, model = label_probabilities_from_gguf(path, prompts, tokens)
    # The signal: the base model's own label-token probabilities (no fold; the head started random) against the
    # classifier's.
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.inference_mode():
        unfolded = torch.stack(
            [torch.softmax(base(input_ids=torch.tensor([ids])).logits[0, -1, tokens], -1) for ids in prompts]
        )
    signal = float((unfolded - expected).abs().max())
    tolerance = 1e-5 if kind == "f32" else 2e-4  # f16 weights: |p diff| measured 1.6e-5 on this model
    difference = float((got - expected).abs().max())
    print(f"{kind}: max |p diff| {difference:.3g}, unfolded {signal:.3g}")
    assert signal > 100 * tolerance  # unfolded: 0.048 measured
    assert difference < tolerance
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    # Folding changed the LM head only: the label words as input still embed as the base model embeds them.
    base_rows = base.get_input_embeddings().weight[tokens]
    assert torch.allclose(model.get_input_embeddings().weight[tokens], base_rows, atol=1e-3 if kind == "f16" else 0)


def test_a_multi_label_run_is_refused_with_the_reason(tiny_model, data_dir, tmp_path):
    from conftest import write_jsonl

    rows = write_jsonl(
        tmp_path / "ml.jsonl", [{"text": f"t {i}", "labels": ["a"] if i % 2 else ["a", "b"]} for i in range(8)]
    )
    recipe = base_recipe(
        tiny_model,
        data_dir,
        tmp_path / "run",
        task="classification",
        classification={"head": "sequence"},
        data={"train": str(rows), "format": "multi_label"},
    )
    recipe["training"]["max_steps"] = 1
    run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    done = run_cli("export", tmp_path / "run", "--format", "gguf", check=False)
    assert done.returncode == 2 and "a multi_label head has no next-token form" in done.stderr
    assert not (tmp_path / "run" / "export" / "gguf").exists()
