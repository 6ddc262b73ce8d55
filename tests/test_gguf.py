"""GGUF export (`export --format gguf`): a tiny LoRA run exported through the real entry point, by the recipe's
`export:` section (f32) and by `llm_tune export` (q8_0); each file is loaded back with plain transformers
(`gguf_file=`, no llm_tune code) and compared with the run's adapter on its base, its tokenizer with the
run's, and pushed to the local stand-in Hub.

The tiny Llama here has a small byte-level BPE vocabulary (trained below, with SmolLM2's special tokens and chat
template) rather than SmolLM2's 49,152 tokens: transformers' GGUF reader parses metadata arrays one element at
a time (about 10 s per read of SmolLM2's vocabulary on this CPU, several reads per load), which would make
every reload here take most of a minute. SmolLM2's own tokenizer is round-tripped on the real model (README,
GGUF)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ENV, ROOT, SMOLLM2, base_recipe, build_tiny_model, run_cli, write_recipe
from hub_server import start_hub

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

TOLERANCE = 1e-4  # f32: the file must reproduce the trained model to float32 noise
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPT = "Add 12 and 30. Reply with the sum only, e.g. 42."


def _small_vocab_tokenizer(data_dir: Path):
    """A byte-level BPE (GPT-2's split, as SmolLM2's) of ~600 tokens, trained on the test rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    rows = [json.loads(line) for line in (data_dir / "alpaca.jsonl").read_text().splitlines()]
    texts = [" ".join(row.values()) for row in rows] * 4 + ["system user assistant You are a helpful AI assistant"]
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=AutoTokenizer.from_pretrained(SMOLLM2).chat_template,
    )


@pytest.fixture(scope="module")
def small_model(data_dir, tmp_path_factory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-llama-bpe", tokenizer=_small_vocab_tokenizer(data_dir)
    )


def _recipe(model: Path, data_dir: Path, out: Path, **sections) -> dict:
    recipe = base_recipe(model, data_dir, out, training={"max_steps": 2}, **sections)
    recipe["data"]["validation"] = str(data_dir / "alpaca_val.jsonl")
    return recipe


def _sequence_head(recipe: dict, data_dir: Path) -> dict:
    recipe = {**recipe, "task": "classification", "classification": {"head": "sequence"}}
    recipe["data"] = {
        **recipe["data"],
        "train": str(data_dir / "reviews.jsonl"),
        "validation": None,
        "format": "classification",
    }
    return recipe


@pytest.fixture(scope="module")
def run(small_model, data_dir, tmp_path_factory) -> tuple[Path, str]:
    """A tiny lora run whose recipe exports an f32 GGUF at the end of training."""
    root = tmp_path_factory.mktemp("gguf-run")
    export = {"format": "gguf", "gguf_type": "f32", "verify_prompts": 2, "verify_new_tokens": 8}
    done = run_cli(
        write_recipe(root / "recipe.yaml", _recipe(small_model, data_dir, root / "tiny-chat", export=export))
    )
    return root / "tiny-chat", done.stdout + done.stderr


def _reload_and_compare(folder: Path, run: Path, base: Path) -> dict:
    """Plain transformers / peft, no llm_tune: the card's own loading code run as printed (pointed at `folder`),
    then the GGUF's logits against the run's adapter on its base, and the GGUF tokenizer against the run's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = (folder / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0].replace("path/to/this/folder", str(folder))
    loaded: dict = {}
    exec(compile(code, "README.md", "exec"), loaded)
    model, tokenizer = loaded["model"].eval(), loaded["tokenizer"]
    run_tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run / "adapter"
    )
    messages = [{"role": "user", "content": PROMPT}]
    chat = run_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([run_tokenizer(chat)["input_ids"]])
    with torch.inference_mode():
        diff = float((model(input_ids=ids).logits - trained.eval()(input_ids=ids).logits).abs().max())
    texts = [chat, PROMPT, "  spaces\tand ünïcödé 🙂\n"]
    return {
        "diff": diff,
        "same_ids": [tokenizer(t)["input_ids"] == run_tokenizer(t)["input_ids"] for t in texts],
        "template": tokenizer.chat_template == run_tokenizer.chat_template,
        "specials": [tokenizer.eos_token, tokenizer.bos_token, tokenizer.convert_ids_to_tokens(tokenizer.pad_token_id)],
        "run_pad": run_tokenizer.convert_ids_to_tokens(run_tokenizer.pad_token_id),
        "tied": model.config.tie_word_embeddings,
    }


def _check_file(path: Path, kind: str) -> None:
    """What llama.cpp reads: the architecture, a pre-tokenizer name it knows, the tensors' types."""
    import gguf

    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"  # llama.cpp's name for GPT-2's split
    assert reader.fields["tokenizer.chat_template"].contents().startswith("{% for message in messages %}")
    matrix = {"f32": "F32", "q8_0": "Q8_0"}[kind]
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert "output.weight" not in types  # tied: llama.cpp reuses token_embd
    assert all(types[n] == ("F32" if n.endswith("norm.weight") else matrix) for n in types), types


def _check_export(folder: Path, kind: str) -> tuple[str, dict]:
    name = f"tiny-chat-{kind}.gguf"
    names = {p.name for p in folder.iterdir()}
    assert names == {name, "README.md", "verification.json", "export.json"}
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["files"] == sorted(names) and manifest["layout"] == "gguf" and manifest["gguf_type"] == kind
    _check_file(folder / name, kind)
    report = json.loads((folder / "verification.json").read_text())
    gate = report["checks"][report["gate"]["check"]]
    assert report["gate"]["check"] == f"gguf_{kind}_vs_merged" and report["gate"]["dtype"] == kind
    assert gate["max_abs_logit_diff"] <= report["gate"]["tolerance"]
    assert report["checks"]["merged_vs_trained"]["max_abs_logit_diff"] < TOLERANCE
    tokenizer = report["tokenizer"]
    assert tokenizer["ok"] and tokenizer["same_ids"] == tokenizer["texts"] == report["prompts"] + 1
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "gguf" and {"gguf", kind, "lora", "llm_tune"} <= set(meta["tags"])
    assert f"llama-cli -m {name}" in card and f"FROM ./{name}" in card and 'PARAMETER stop "<|im_end|>"' in card
    assert "ollama create" in card and f"gguf_{kind}_vs_merged" in card and "Tokenizer round trip" in card
    return name, report


def test_recipe_export_f32_reloads_with_plain_transformers_and_matches_training(run, small_model):
    run_dir, output = run
    folder = run_dir / "export" / "gguf"
    assert "verify gguf_f32_vs_merged: max |logit diff|" in output and "verify tokenizer round trip" in output
    _, report = _check_export(folder, "f32")
    assert report["checks"]["gguf_f32_vs_merged"]["max_abs_logit_diff"] < TOLERANCE
    result = _reload_and_compare(folder, run_dir, small_model)
    assert result["diff"] < TOLERANCE and result["tied"]
    assert all(result["same_ids"]) and result["template"]
    assert result["specials"] == ["<|im_end|>", "<|im_start|>", result["run_pad"]] and result["run_pad"] != "<|im_end|>"


def test_q8_0_through_the_command_line_agrees_within_its_tolerance(run, tmp_path):
    run_dir, _ = run
    out = tmp_path / "q8"
    done = run_cli("export", run_dir, "--format", "gguf", "--gguf-type", "q8_0", "--out", out)
    assert "verify gguf_q8_0_vs_merged" in done.stdout
    name, report = _check_export(out, "q8_0")
    q8, f32 = (out / name).stat().st_size, (run_dir / "export" / "gguf" / "tiny-chat-f32.gguf").stat().st_size
    assert q8 < 0.4 * f32  # 8.5 bits per weight against 32
    assert 0 < report["checks"]["gguf_q8_0_vs_merged"]["max_abs_logit_diff"] <= report["gate"]["tolerance"] == 5.0


def test_failed_verification_exits_1_and_leaves_nothing(run, tmp_path):
    run_dir, _ = run
    out = tmp_path / "bad"
    # Fault injection through the real CLI code: a negative tolerance makes any GGUF "too different".
    code = (
        "import llm_tune.export.verify as m; m.GGUF_TOLERANCE['bf16'] = -1.0\n"
        f"from llm_tune.cli import main; main(['export', {str(run_dir)!r}, '--gguf-type', 'bf16', '--out', {str(out)!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "exceeds the bf16 tolerance" in errors[0], done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_push_uploads_the_gguf_export(run, tmp_path):
    run_dir, _ = run
    folder = run_dir / "export" / "gguf"
    server, state = start_hub(token="hf_gguf_test")
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_TOKEN": "hf_gguf_test",
    }
    try:
        run_cli("push", folder, "--repo-id", "alice/tiny-gguf", env=env)
    finally:
        server.shutdown()
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert state.files("alice/tiny-gguf") == files and len(state.commits) == 1
    assert list(state.lfs.values()) == [files["tiny-chat-f32.gguf"]]  # the file went through LFS, as on the Hub


def _copy_run(run_dir: Path, to: Path, **changes) -> Path:
    """The trained run folder with its recipe changed: refusals read only the recipe (and the model's config)."""
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("export"))
    recipe = yaml.safe_load((to / "recipe.resolved.yaml").read_text())
    del recipe["export"]
    (to / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe | changes | {"output_dir": str(to)}))
    return to


def _refused(run_dir: Path, *needles: str) -> None:
    done = run_cli("export", run_dir, "--format", "gguf", check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and all(n in errors[0] for n in needles), done.stderr
    assert not (run_dir / "export").exists()


def test_a_head_without_a_next_token_form_is_refused(run, small_model, data_dir, tmp_path):
    """A single-label sequence head is folded into LM-head rows (tests/test_folded_head.py); a multi_label one has
    no such form and is refused."""
    run_dir, _ = run
    multi = {"format": "multi_label"}
    # The recipe's export section: refused when the recipe is read, before anything trains or is written.
    recipe = _sequence_head(_recipe(small_model, data_dir, tmp_path / "never", export={"format": "gguf"}), data_dir)
    recipe["data"] |= multi
    done = run_cli(write_recipe(tmp_path / "seq.yaml", recipe), check=False)
    assert done.returncode == 2 and "export.format: gguf folds a single-label head" in done.stderr
    assert not (tmp_path / "never").exists()
    # `llm_tune export` of a multi_label run: refused on its recipe, before a weight loads (a copy of the
    # trained run with a multi_label recipe is all the refusal reads, and spares training one).
    seq = _sequence_head(yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text()), data_dir)
    seq["data"] |= multi
    _refused(
        _copy_run(run_dir, tmp_path / "seq-run", **{k: seq[k] for k in ("task", "classification", "data")}),
        "a multi_label head has no next-token form",
    )


def test_unsupported_architecture_is_refused_naming_it(run, tmp_path):
    from transformers import Qwen2Config

    run_dir, _ = run
    Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4).save_pretrained(
        tmp_path / "qwen2"
    )
    recipe = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    model = {**recipe["model"], "name_or_path": str(tmp_path / "qwen2")}
    _refused(_copy_run(run_dir, tmp_path / "qwen2-run", model=model), "model architecture 'qwen2' is not supported")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "gguf", "--gguf-type", "q4_k"], "--gguf-type: expected one of f32, f16, bf16, q8_0, got 'q4_k'"),
        (["--format", "safetensors", "--gguf-type", "q8_0"], "--gguf-type: applies to --format gguf"),
        (["--format", "gguf", "--dtype", "float16"], "--dtype: not for --format gguf"),
        (["--format", "gguf", "--no-merge"], "--merge / --no-merge: not for --format gguf"),
    ],
)
def test_user_mistakes_are_one_error_line(run, args, message):
    run_dir, _ = run
    done = run_cli("export", run_dir, *args, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and message in errors[0], done.stderr
