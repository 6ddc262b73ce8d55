"""`generate` and `chat` through the real entry point, on the tiny model taught to answer every question with
"Banana split": a LoRA run (with its merged export, made by the recipe's export section) and a full run. The
fine-tuned answers say Banana, the base model's do not; the LoRA answer is checked token for token against
plain transformers + peft on the prompt training rendered (system prompt included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, ROOT, base_recipe, call_cli, run_cli, run_cli_together, write_jsonl, write_recipe

SYSTEM = "You name fruit."
QUESTION = "Question 3: name a fruit."
TOKENS = "8"


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    train = write_jsonl(
        root / "fruit.jsonl",
        [{"instruction": f"Question {i}: name a fruit.", "output": "Banana split"} for i in range(16)],
    )
    recipes = []
    for kind, rate, export in (
        ("lora", 1e-2, {"merge": True, "verify_prompts": 1, "verify_new_tokens": 4}),
        ("full", 5e-3, None),
    ):
        recipe = base_recipe(
            tiny_model,
            root,
            root / kind,
            strategy={"kind": kind},
            training={"max_steps": 30, "learning_rate": rate, "logging_steps": 10},
        )
        recipe["data"].update(train=str(train), system_prompt=SYSTEM)
        if export:
            recipe["export"] = export
        recipes.append([write_recipe(root / f"{kind}.yaml", recipe)])
    run_cli_together(*recipes)
    return {"lora": root / "lora", "full": root / "full"}


@pytest.fixture(scope="module")
def reference(runs, tiny_model) -> str:
    return _reference_answer(runs["lora"], tiny_model, QUESTION)


def _answers(stdout: str) -> dict[str, str]:
    """{label: answer} from `generate --compare-base` output (one prompt)."""
    blocks: dict[str, list[str]] = {}
    label = None
    for line in stdout.splitlines():
        if line.startswith("[llm_tune]"):
            continue
        if line.startswith("[") and line.endswith("]"):
            label = line[1:-1]
            blocks[label] = []
        elif label is not None:
            blocks[label].append(line)
    return {label: "\n".join(lines).strip() for label, lines in blocks.items()}


def _reference_answer(run: Path, base: Path, text: str) -> str:
    """The LoRA run's greedy answer computed with plain transformers + peft, no llm_tune code."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run / "adapter").eval()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with torch.inference_mode():
        out = model.generate(
            **ids, max_new_tokens=int(TOKENS), do_sample=False, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_generate_on_an_adapter_run_beside_its_base(runs, tiny_model, reference):
    done = run_cli("generate", runs["lora"], "--prompt", QUESTION, "--max-new-tokens", TOKENS, "--compare-base")
    assert f">>> {QUESTION}" in done.stdout
    answers = _answers(done.stdout)
    assert set(answers) == {"fine-tuned", f"base {tiny_model}"}
    assert answers["fine-tuned"].startswith("Banana") and "Banana" not in answers[f"base {tiny_model}"]
    assert answers["fine-tuned"] == reference


def test_generate_on_a_full_run_loads_the_base_beside_it(runs, tiny_model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Question 5: name a fruit.\n\n", encoding="utf-8")
    done = run_cli(
        "generate", runs["full"], "--prompt", QUESTION, "--file", prompts, "--max-new-tokens", TOKENS, "--compare-base"
    )
    assert f">>> {QUESTION}" in done.stdout and ">>> Question 5: name a fruit." in done.stdout
    assert done.stdout.count("[fine-tuned]") == 2 and done.stdout.count(f"[base {tiny_model}]") == 2
    first = _answers(done.stdout.split(">>> Question 5")[0])
    assert first["fine-tuned"].startswith("Banana") and "Banana" not in first[f"base {tiny_model}"]


def test_generate_compares_with_another_run(runs, tiny_model, reference):
    """--compare RUN (e.g. the SFT run a DPO run started from) answers beside the run and its base, each as its own
    run answers alone."""
    alone = run_cli("generate", runs["full"], "--prompt", QUESTION, "--max-new-tokens", TOKENS).stdout
    alone = "\n".join(line for line in alone.splitlines()[1:] if not line.startswith("[llm_tune]")).strip()
    done = run_cli("generate", runs["lora"], "--prompt", QUESTION, "--max-new-tokens", TOKENS, "--compare-base",
                   "--compare", runs["full"])  # fmt: skip
    answers = _answers(done.stdout)
    assert list(answers) == ["fine-tuned", f"base {tiny_model}", str(runs["full"])]
    assert answers["fine-tuned"] == reference and answers[str(runs["full"])] == alone
    assert alone.startswith("Banana")


def test_generate_on_a_merged_export_answers_as_the_adapter_does(runs, reference):
    merged = runs["lora"] / "export" / "merged"
    assert (merged / "export.json").is_file()
    done = run_cli("generate", merged, "--prompt", QUESTION, "--max-new-tokens", TOKENS)
    lines = [line for line in done.stdout.splitlines() if not line.startswith("[llm_tune]")]
    assert lines[0] == f">>> {QUESTION}" and "\n".join(lines[1:]).strip() == reference


def test_chat_over_a_pipe_keeps_the_conversation(runs):
    done = subprocess.run(
        [sys.executable, "-m", "llm_tune", "chat", runs["lora"], "--max-new-tokens", TOKENS],
        input=f"{QUESTION}\nAnd one more?\n/exit\nnever read\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    replies = [line for line in done.stdout.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2 and replies[0].startswith("assistant> Banana")
    assert f"you> {QUESTION}" in done.stdout and "never read" not in done.stdout


def test_chat_on_a_merged_export_ends_at_the_end_of_input(runs):
    merged = runs["lora"] / "export" / "merged"
    done = subprocess.run(
        [sys.executable, "-m", "llm_tune", "chat", merged, "--max-new-tokens", "2"],
        input="Hi\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.count("assistant> ") == 1  # Ctrl-D: the end of input


@pytest.mark.fast
def test_a_classification_run_points_to_predict(tiny_model, data_dir, tmp_path):
    recipe = base_recipe(
        tiny_model,
        data_dir,
        tmp_path / "cls",
        task="classification",
        data={"train": str(data_dir / "reviews.jsonl"), "format": "classification"},
    )
    resolved = call_cli("validate", write_recipe(tmp_path / "cls.yaml", recipe)).stdout
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "recipe.resolved.yaml").write_text(resolved, encoding="utf-8")  # what a run leaves first
    for command in (["generate", tmp_path / "cls", "--prompt", "Great film."], ["chat", tmp_path / "cls"]):
        done = call_cli(*command, check=False)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"error: {tmp_path / 'cls'}: a classification run answers with label probabilities, not text; use"
            f' `python -m llm_tune predict {tmp_path / "cls"} --text "..."`'
        ]


def test_bad_input_is_one_error_line(runs, tmp_path):
    cases = [
        (["generate", tmp_path, "--prompt", "Hi"], f"error: {tmp_path}: neither a run folder"),
        (["generate", runs["lora"]], "error: generate: no prompt;"),
        (["generate", runs["lora"], "--prompt", "Hi", "--max-new-tokens", "0"], "error: --max-new-tokens:"),
        (["generate", runs["lora"], "--file", tmp_path / "missing.txt"], "error: --file: file not found"),
    ]
    for command, start in cases:
        done = run_cli(*command, check=False)
        assert done.returncode == 2 and done.stderr.startswith(start) and len(done.stderr.splitlines()) == 1


@pytest.mark.fast
def test_a_prompt_renders_as_training_rendered_its_row():
    from datasets import Dataset

    from llm_tune.data.formats import render, user_prompt
    from llm_tune.recipe.data import DataConfig

    rows = {
        "alpaca": {"instruction": "Name a fruit.", "input": "", "output": "Banana"},
        "chat": {
            "messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Banana"}]
        },
        "classification": {"text": "Name a fruit.", "label": "yes"},
    }
    for fmt, row in rows.items():
        for conversational in (True, False):
            cfg = DataConfig(train="x.jsonl", format=fmt, system_prompt=SYSTEM)
            rendered = render(Dataset.from_list([row]), cfg, ["no", "yes"], conversational)[0]
            expected = rendered["messages"][:-1] if fmt == "chat" else rendered["prompt"]
            assert user_prompt("Name a fruit.", cfg, ["no", "yes"], conversational) == expected, (fmt, conversational)
    assert user_prompt("Once upon", DataConfig(train="x.jsonl", format="completion"), None, True) == "Once upon"
