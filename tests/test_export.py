"""Export: every strategy and both tasks are trained a few steps on the tiny model, exported through the
real entry point (merged by the recipe's `export:` section at the end of training, the adapter by
`llm_tune export`), and each export is reloaded with plain transformers / peft code (this module never
imports llm_tune) and compared with the run's own saved weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ENV, ROOT, base_recipe, run_cli, write_recipe

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

STRATEGIES = ("lora", "qlora", "full", "frozen")
TASKS = ("sft", "classification")
LABELS = ["negative", "positive"]
TOLERANCE = 1e-4  # float32 throughout: merged and adapter exports must match the trained model this closely
# The one run whose recipe merges QLoRA into the original full-precision base instead of the dequantized one.
ORIGINAL_BASE = ("classification", "qlora")
PROMPT = "Add 3 and 4."


def _recipe(tiny_model: Path, data_dir: Path, out: Path, task: str, kind: str) -> dict:
    # Two prompts and 8 greedy tokens keep the checks quick on the tiny model.
    export = {"merge": True, "verify_prompts": 2, "verify_new_tokens": 8}
    if kind == "full":
        export["max_shard_size"] = "1MB"  # the tiny model is ~13 MB: proves sharded saving and reloading
    if (task, kind) == ORIGINAL_BASE:
        export["qlora_merge_base"] = "original"
    recipe = base_recipe(
        tiny_model,
        data_dir,
        out,
        strategy={"kind": kind, "trainable_layers": 1},
        training={"max_steps": 2},
        export=export,
    )
    recipe["data"]["validation"] = str(data_dir / "alpaca_val.jsonl")
    if task == "classification":
        # No validation file: spares the end-of-training evaluation; verification then uses training rows.
        recipe["task"] = "classification"
        recipe["classification"] = {"head": "sequence"}
        recipe["data"].update(train=str(data_dir / "reviews.jsonl"), validation=None, format="classification")
    return recipe


@pytest.fixture(scope="module")
def trained(tiny_model, data_dir, tmp_path_factory):
    """train(task, kind) -> (run folder, training output); each run is trained once per module."""
    cache: dict[tuple[str, str], tuple[Path, str]] = {}

    def get(task: str, kind: str) -> tuple[Path, str]:
        if (task, kind) not in cache:
            root = tmp_path_factory.mktemp(f"{task}-{kind}")
            recipe = write_recipe(root / "recipe.yaml", _recipe(tiny_model, data_dir, root / "run", task, kind))
            done = run_cli(recipe)
            cache[(task, kind)] = (root / "run", done.stdout + done.stderr)
        return cache[(task, kind)]

    return get


# --- plain reloading, no llm_tune ---------------------------------------------------------------------


def _tokens(folder: Path):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    return tokenizer, torch.tensor([ids])


def _training_arithmetic(model):
    # bitsandbytes computes Linear4bit in bfloat16 in eval mode on AVX512-BF16 CPUs; training did not.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def _base(tiny_model: Path, task: str, kind: str, pad_token_id: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32}
    if kind == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_storage=torch.float32,
        )
    if task == "classification":
        kwargs.update(num_labels=2, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_model, **kwargs)
    model.config.pad_token_id = pad_token_id
    return model


def _logits(model, ids):
    import torch

    with torch.inference_mode():
        return _training_arithmetic(model).eval()(input_ids=ids).logits.float()


def _trained_logits(run: Path, tiny_model: Path, task: str, kind: str, ids, pad: int):
    """The run's own saved weights: the adapter on its base, or the saved model folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind in ("lora", "qlora"):
        return _logits(PeftModel.from_pretrained(_base(tiny_model, task, kind, pad), run / "adapter"), ids)
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    return _logits(auto.from_pretrained(run / "model"), ids)


def _unmerged_on_original_base(run: Path, tiny_model: Path, task: str, ids, pad: int):
    """What a merge into the original full-precision base must reproduce: the adapter on that base."""
    from peft import PeftModel

    return _logits(PeftModel.from_pretrained(_base(tiny_model, task, "lora", pad), run / "adapter"), ids)


# --- the matrix -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", STRATEGIES)
def test_export_reloads_with_plain_code_and_matches_training(trained, tiny_model, task, kind):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    run, train_output = trained(task, kind)
    merged = run / "export" / "merged"
    assert "verify merged_vs_trained: max |logit diff|" in train_output
    tokenizer, ids = _tokens(merged)
    reference = _trained_logits(run, tiny_model, task, kind, ids, tokenizer.pad_token_id)

    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    model = auto.from_pretrained(merged)
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    if (task, kind) == ORIGINAL_BASE:
        original = _unmerged_on_original_base(run, tiny_model, task, ids, tokenizer.pad_token_id)
        assert (_logits(model, ids) - original).abs().max() < TOLERANCE
    else:
        assert (_logits(model, ids) - reference).abs().max() < TOLERANCE
    _check_common_files(merged, task, kind, library="transformers")
    if task == "classification":
        assert model.config.id2label == dict(enumerate(LABELS))
    if kind == "full":
        assert (
            len(list(merged.glob("model-*-of-*.safetensors"))) > 1
            and (merged / "model.safetensors.index.json").is_file()
        )

    if kind in ("lora", "qlora"):
        from peft import PeftModel

        done = run_cli("export", run, "--no-merge")
        assert "verify exported_adapter_vs_trained" in done.stdout
        adapter = run / "export" / "adapter"
        loaded = PeftModel.from_pretrained(_base(tiny_model, task, kind, tokenizer.pad_token_id), adapter)
        assert (_logits(loaded, ids) - reference).abs().max() < TOLERANCE
        _check_common_files(adapter, task, kind, library="peft")


def _check_common_files(folder: Path, task: str, kind: str, library: str) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    names = {p.name for p in folder.iterdir()}
    assert {
        "README.md",
        "verification.json",
        "export.json",
        "generation_config.json",
        "chat_template.jinja",
        "tokenizer.json",
    } <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    assert json.loads((folder / "export.json").read_text())["files"] == sorted(names)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # Training taught the model to end its answers with <|im_end|>: generation must stop there.
    assert GenerationConfig.from_pretrained(folder).eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    report = json.loads((folder / "verification.json").read_text())
    gate = report["checks"][report["gate"]["check"]]
    assert gate["max_abs_logit_diff"] <= report["gate"]["tolerance"] and report["prompts"] == 2
    if kind == "qlora" and library == "transformers":
        _check_qlora_report(report, original=(task, kind) == ORIGINAL_BASE)
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == library and "llm_tune" in meta["tags"] and kind in meta["tags"]
    assert meta["pipeline_tag"] == ("text-classification" if task == "classification" else "text-generation")
    assert meta["license"] and "## How to load it" in card and "max abs logit diff" in card
    assert f"kind: {kind}" in card and "learning_rate" in card and "train_loss" in card
    # The card's own loading code runs as printed, pointed at this folder.
    code = card.split("```python\n")[1].split("```")[0].replace("path/to/this/folder", str(folder))
    exec(compile(code, "README.md", "exec"), {})


def _check_qlora_report(report: dict, original: bool) -> None:
    """Both merge bases are measured against the trained model; the dequantized one reproduces it."""
    checks = report["checks"]
    if original:
        assert report["qlora_merge_base"] == "original"
        assert report["gate"]["check"] == "merged_vs_unmerged_on_original_base"
        drift = checks["merged_vs_trained"]["max_abs_logit_diff"]
        exact = checks["other_mode_dequantized_merged_vs_trained"]["max_abs_logit_diff"]
    else:
        assert report["qlora_merge_base"] == "dequantized" and report["gate"]["check"] == "merged_vs_trained"
        drift = checks["other_mode_original_merged_vs_trained"]["max_abs_logit_diff"]
        exact = checks["merged_vs_trained"]["max_abs_logit_diff"]
    assert exact < TOLERANCE and exact < drift


# --- failures and atomicity -----------------------------------------------------------------------------


def test_failed_verification_exits_nonzero_and_leaves_nothing(trained, tmp_path):
    run, _ = trained("sft", "lora")
    out = tmp_path / "export"
    # Fault injection: a negative tolerance makes any merge "too different", through the real CLI code.
    code = (
        "import llm_tune.export.verify as m; m.TOLERANCE['float32'] = -1.0\n"
        f"from llm_tune.cli import main; main(['export', {str(run)!r}, '--merge', '--out', {str(out)!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "verification failed" in errors[0] and "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "/nonexistent/run"], "run folder not found"),
        (["export", str(ROOT / "recipes")], "not a run folder"),
        (["export", "RUN", "--dtype", "int3"], "--dtype: expected one of"),
        (["export", "RUN", "--qlora-base", "nf4"], "--qlora-base: expected one of"),
        (["export", "RUN", "--max-shard-size", "12"], "--max-shard-size: String should match"),
        (["export", "RUN", "--out", "NOTEXPORT"], "is not an llm_tune export"),
    ],
)
def test_user_mistakes_are_one_error_line(trained, tmp_path, args, message):
    run, _ = trained("sft", "lora")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    args = [str(run) if a == "RUN" else str(tmp_path / "precious") if a == "NOTEXPORT" else a for a in args]
    done = run_cli(*args, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
