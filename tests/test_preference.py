"""Preference tuning through `python -m llm_tune` on the tiny model: DPO (with its step-0 gate's values), KTO, ORPO
and SimPO each train a few steps and their exports reload with plain transformers / peft; an SFT run folder
continues into DPO (model.from_run) against the SFT policy; bad preference input is one clear error."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from test_bad_input import Case, _run

from conftest import base_recipe, run_cli, run_cli_together, write_jsonl, write_recipe

WORDS = ["hello", "apple", "river", "stone", "cloud", "green", "tiger", "piano", "lemon", "house", "bread", "chair"]
METHODS = ("dpo", "kto", "orpo", "simpo")


def _pair(word: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"Say {word} politely."}],
        "chosen": [{"role": "assistant", "content": f"Of course: {word}, please."}],
        "rejected": [{"role": "assistant", "content": f"{word.upper()}! NOW!"}],
    }


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pairs")
    write_jsonl(d / "train.jsonl", [_pair(w) for w in WORDS[:10]])
    write_jsonl(d / "val.jsonl", [_pair(w) for w in WORDS[10:]])
    return d


def _recipe(tiny: Path, data_dir: Path, pairs: Path, out: Path, method: str, **export) -> dict:
    recipe = base_recipe(tiny, data_dir, out, training={"max_steps": 3, "learning_rate": 5e-3})
    recipe["task"] = "preference"
    recipe["preference"] = {"method": method}
    recipe["data"] = {
        "train": str(pairs / "train.jsonl"),
        "validation": str(pairs / "val.jsonl"),
        "format": "preference",
        "max_length": 128,
    }
    recipe["export"] = {"verify_prompts": 2, "verify_new_tokens": 8, **export}
    return recipe


@pytest.fixture(scope="module")
def runs(tiny_model, data_dir, pairs, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each method trained once, in parallel; DPO and ORPO export merged, KTO and SimPO the adapter."""
    root = tmp_path_factory.mktemp("preference-runs")
    commands = []
    for method in METHODS:
        merge = method in ("dpo", "orpo")
        recipe = _recipe(tiny_model, data_dir, pairs, root / method, method, merge=merge)
        commands.append([write_recipe(root / f"{method}.yaml", recipe)])
    done = run_cli_together(*commands)
    return {m: (root / m, d.stdout + d.stderr) for m, d in zip(METHODS, done)}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_dpo_step_zero_gate_values(runs):
    run, output = runs["dpo"]
    step0 = _metrics(run)["step0"]
    # The reference is the starting policy: identical log-probabilities, so every log-ratio is 0.
    assert step0["max_abs_policy_minus_reference_logp"] == 0.0
    assert abs(step0["loss"] - math.log(2)) < 1e-6
    assert step0["rewards/margins"] == 0.0 and step0["rewards/accuracies"] == 0.0
    assert (
        step0["logps/chosen"] < 0 and step0["logps/rejected"] < 0 and step0["logps/chosen"] != step0["logps/rejected"]
    )
    # The step-0 evaluation on the validation pairs, under TRL's names.
    assert abs(step0["eval_loss"] - math.log(2)) < 1e-6 and step0["eval_rewards/accuracies"] == 0.0
    assert "step 0    dpo on 4 rows: loss 0.693147 (ln 2 = 0.693147)" in output and ": ok" in output


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_dpo_and_kto_use_the_label_only_head_on_a_cpu(runs, method):
    """TRL's fused head projects every position on a CPU; these runs swap in llm_tune's (tests/test_speed.py checks
    that it computes the same log-probs), and say so. ORPO and SimPO compute their own logits and keep them."""
    assert "lm head   log-probabilities at the answer positions only" in runs[method][1]
    assert "lm head" not in runs["orpo"][1]


def test_dpo_end_of_run_metrics_use_trls_names(runs):
    run, _ = runs["dpo"]
    metrics = _metrics(run)
    assert {"eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "train_runtime_s"} <= set(metrics)
    assert metrics["eval_loss"] < math.log(2)  # 3 steps at a high rate move the tiny model toward the chosen answers
    log = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/margins" in entry for entry in log)
    assert (run / "report" / "rewards.png").is_file() and "Rewards" in (run / "report.html").read_text()


@pytest.mark.parametrize("method", ["kto", "orpo", "simpo"])
def test_other_methods_train_and_check_step_zero(runs, method):
    run, output = runs[method]
    metrics = _metrics(run)
    assert metrics["train_steps"] == 3 and math.isfinite(metrics["train_loss"])
    assert f"step 0    {method} on " in output and ": ok" in output
    step0 = metrics["step0"]
    if method == "kto":  # reference = policy: each row's loss is 1 - sigmoid(0) = 0.5 with weights 1
        assert step0["loss"] == pytest.approx(0.5, abs=1e-6) and step0["kl"] == 0.0
        assert "10 pairs unpaired into 20 KTO rows" in output
    else:  # no reference: log-probabilities finite, negative, chosen != rejected
        assert step0["logps/chosen"] < 0 and step0["logps/rejected"] < 0
        assert step0["logps/chosen"] != step0["logps/rejected"]
    assert "eval_rewards/margins" in metrics or method == "kto"
    # Their batches carry no input_ids to count: no token figure rather than 0 tokens/s (DPO's is counted).
    assert metrics["tokens_per_s"] is None and metrics["train_tokens"] is None and " tokens/s)" not in output
    assert _metrics(runs["dpo"][0])["tokens_per_s"] > 0
    # The report says what the run was (once "classification (generate head)" for every run but SFT).
    report = (run / "report.html").read_text() if (run / "report.html").is_file() else ""
    assert "classification (generate head)" not in report and (not report or "preference: " in report)


@pytest.mark.parametrize("method", METHODS)
def test_exports_reload(runs, method):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = runs[method]
    merged = method in ("dpo", "orpo")
    folder = run / "export" / ("merged" if merged else "adapter")
    if merged:
        model = AutoModelForCausalLM.from_pretrained(folder)
    else:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(folder)
        assert not (run / "adapter" / "ref").exists()  # TRL's frozen reference copy is not saved
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Say hello politely.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    card = (folder / "README.md").read_text()
    assert f"preference method `{method}`" in card and "train.jsonl" in card


def test_dpo_exports_to_gguf(runs, tmp_path):
    run, _ = runs["dpo"]
    done = run_cli("export", run, "--format", "gguf", "--gguf-type", "f32", "--out", tmp_path / "gguf")
    assert "verify gguf_f32_vs_merged" in done.stdout + done.stderr
    import gguf

    (path,) = (tmp_path / "gguf").glob("*.gguf")
    assert gguf.GGUFReader(path).tensors


@pytest.fixture(scope="module")
def sft_then_dpo(tiny_model, data_dir, pairs, tmp_path_factory):
    """An SFT LoRA run, then DPO from its folder twice: against the SFT policy, and against the base."""
    root = tmp_path_factory.mktemp("sft-dpo")
    sft = base_recipe(tiny_model, data_dir, root / "sft", training={"max_steps": 4, "learning_rate": 5e-2})
    run_cli(write_recipe(root / "sft.yaml", sft))
    commands = []
    for reference in ("start", "base"):
        recipe = _recipe(tiny_model, data_dir, pairs, root / f"dpo-{reference}", "dpo")
        recipe["model"]["from_run"] = str(root / "sft")
        recipe["preference"]["reference"] = reference
        recipe["strategy"]["r"] = 8  # differs from the SFT run's: the run's own adapter settings win, with a note
        recipe.pop("export")
        commands.append([write_recipe(root / f"dpo-{reference}.yaml", recipe)])
    done = run_cli_together(*commands)
    return root, [d.stdout + d.stderr for d in done]


def test_sft_run_folder_continues_into_dpo_against_the_sft_policy(sft_then_dpo):
    import torch
    from safetensors.torch import load_file

    root, (output, _) = sft_then_dpo
    assert "continuing the adapter of" in output
    step0 = _metrics(root / "dpo-start")["step0"]
    assert step0["max_abs_policy_minus_reference_logp"] == 0.0 and abs(step0["loss"] - math.log(2)) < 1e-6
    resolved = yaml.safe_load((root / "dpo-start" / "recipe.resolved.yaml").read_text())
    assert resolved["strategy"]["r"] == 4 and resolved["model"]["from_run"] == str(root / "sft")
    # The DPO adapter started from the SFT adapter (not a fresh one) and moved away from it.
    sft = load_file(root / "sft" / "adapter" / "adapter_model.safetensors")
    dpo = load_file(root / "dpo-start" / "adapter" / "adapter_model.safetensors")
    assert sft.keys() == dpo.keys()
    moved = max(float((sft[k] - dpo[k]).abs().max()) for k in sft)
    assert 0 < moved < max(float(v.abs().max()) for v in sft.values())
    assert all(torch.isfinite(v).all() for v in dpo.values())


def test_the_gate_tells_the_sft_policy_from_the_base(sft_then_dpo):
    """The signal the gate's tolerance must stay under: the SFT policy against the base differs by far more."""
    from llm_tune.preference.gate import LOGP_TOLERANCE

    root, (_, output) = sft_then_dpo
    step0 = _metrics(root / "dpo-base")["step0"]
    assert step0["max_abs_policy_minus_reference_logp"] > 100 * LOGP_TOLERANCE
    assert abs(step0["loss"] - math.log(2)) > 1e-3
    assert ": ok" in output  # reference: base asked for the base: the gap is expected, not a failure


def test_a_chained_recipe_runs_sft_then_dpo_from_it(tiny_model, data_dir, pairs, tmp_path):
    """One file, two YAML documents: the SFT stage, then DPO from its folder. Moving stage 1 with an override moves
    stage 2's model.from_run; overrides without a prefix reach both stages; the DPO stage starts from the SFT
    adapter, against the SFT policy (the gate's log-prob gap 0)."""
    from safetensors.torch import load_file

    sft = base_recipe(tiny_model, data_dir, tmp_path / "written-sft", training={"max_steps": 4, "learning_rate": 5e-2})
    dpo = _recipe(tiny_model, data_dir, pairs, tmp_path / "dpo", "dpo")
    dpo["model"]["from_run"] = str(tmp_path / "written-sft")
    dpo.pop("export")
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump_all([sft, dpo], sort_keys=False))
    moved = tmp_path / "sft"
    done = run_cli(chain, f"stage1.output_dir={moved}", "training.logging_steps=1")
    assert "stage 1 of 2: sft into" in done.stdout and "stage 2 of 2: preference into" in done.stdout
    assert not (tmp_path / "written-sft").exists() and (moved / "adapter").is_dir()
    resolved = [yaml.safe_load((run / "recipe.resolved.yaml").read_text()) for run in (moved, tmp_path / "dpo")]
    assert resolved[1]["model"]["from_run"] == str(moved)
    assert [r["training"]["logging_steps"] for r in resolved] == [1, 1]
    step0 = _metrics(tmp_path / "dpo")["step0"]
    assert step0["max_abs_policy_minus_reference_logp"] == 0.0 and abs(step0["loss"] - math.log(2)) < 1e-6
    first, second = (load_file(run / "adapter" / "adapter_model.safetensors") for run in (moved, tmp_path / "dpo"))
    assert first.keys() == second.keys() and any(float((first[k] - second[k]).abs().max()) > 0 for k in first)


def test_a_chained_recipes_problems_name_their_stage(tiny_model, data_dir, pairs, tmp_path):
    sft = base_recipe(tiny_model, data_dir, tmp_path / "sft")
    dpo = _recipe(tiny_model, data_dir, pairs, tmp_path / "dpo", "dpo")
    dpo["model"]["from_run"] = str(tmp_path / "sft")
    dpo["training"]["learning_rat"] = 1e-4
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump_all([dpo, sft], sort_keys=False))
    done = run_cli(chain, "stage3.training.max_steps=1", check=False)
    assert (
        done.returncode == 2
        and f"error: override 'stage3.training.max_steps=1': {chain} has stages 1 to 2" in done.stderr
    )
    done = run_cli(chain, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{chain} (stage 1): training.learning_rat: unknown key (did you mean 'learning_rate'?)" in done.stderr
    del dpo["training"]["learning_rat"]
    chain.write_text(yaml.safe_dump_all([dpo, sft], sort_keys=False))
    done = run_cli(chain, check=False)
    assert (
        f"{chain} (stage 1): model.from_run {tmp_path / 'sft'} is the output_dir of stage 2, which runs later"
        in done.stderr
    )
    done = run_cli("doctor", chain, check=False)
    assert done.returncode == 2 and "a chained recipe of 2 stages" in done.stderr
    assert not (tmp_path / "sft").exists() and not (tmp_path / "dpo").exists()


def test_a_wrong_reference_fails_the_gate_with_one_line(tiny_model, data_dir, pairs, tmp_path, monkeypatch, capsys):
    """A reference that is not the starting policy (simulated: TRL's reference log-probs shifted by 0.5 nat) stops
    the run at step 0 with exit 2, one error line, and no run folder."""
    from trl import DPOTrainer

    from llm_tune.cli import main

    real = DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(
        DPOTrainer,
        "compute_ref_log_probs",
        lambda self, model, inputs: tuple(x + 0.5 for x in real(self, model, inputs)),
    )
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", _recipe(tiny_model, data_dir, pairs, out, "dpo"))
    with pytest.raises(SystemExit) as stop:
        main([str(recipe)])
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "the reference is not the starting policy" in errors[0]
    assert not out.exists()


# Bad preference input: the same contract as tests/test_bad_input.py (exit 2, one error line naming file, row or
# key, no traceback, nothing written).
def _cases(tiny: Path, data: Path) -> dict[str, Case]:
    def run(expect: str, rows: list | None = None, **changes) -> Case:
        recipe = _recipe(tiny, data, Path("/nowhere"), Path("{w}/out"), "dpo")
        recipe.pop("export")
        recipe["data"]["train"] = "{w}/rows.jsonl"
        recipe["data"].pop("validation")
        for key, value in changes.items():
            section, leaf = key.split(".")
            recipe.setdefault(section, {})[leaf] = value
        return Case(["{w}/r.yaml"], expect, {"r.yaml": recipe, "rows.jsonl": rows or [_pair("a"), _pair("b")]})

    good = _pair("a")
    same = {**good, "rejected": good["chosen"]}
    empty = {**good, "chosen": [{"role": "assistant", "content": " "}]}
    long_prompt = {**good, "prompt": [{"role": "user", "content": "word " * 200}]}
    kto_row = {"prompt": "Say a.", "completion": "a", "label": "yes"}
    return {
        "key-of-another-method": run(
            "preference.simpo_gamma: a key of preference method simpo, not of method dpo",
            **{"preference.simpo_gamma": 0.5},
        ),
        "unknown-method": run(
            "preference.method: Input should be 'dpo', 'kto', 'orpo' or 'simpo' (got 'ppo')",
            **{"preference.method": "ppo"},
        ),
        "chosen-empty": run("rows.jsonl:2: missing or empty 'chosen'", [good, empty]),
        "chosen-equals-rejected": run("rows.jsonl:1: 'chosen' and 'rejected' are identical", [same, good]),
        "prompt-fills-max-length": run(
            "rows.jsonl:2: the prompt alone is", [good, long_prompt], **{"data.max_length": 64}
        ),
        "kto-label-not-bool": run(
            "rows.jsonl:1: 'label' must be true or false (desirable or not), got str 'yes'",
            [kto_row, {**kto_row, "label": True}],
            **{"preference.method": "kto"},
        ),
        "unpaired-rows-for-dpo": run("preference.method dpo needs pairs", [{**kto_row, "label": True}]),
        "from-run-not-a-run": run("model.from_run: {w}/nope is not a run folder", **{"model.from_run": "{w}/nope"}),
        "format-without-task": run("task preference and data.format preference go together", **{"data.format": "chat"}),
    }


@pytest.fixture(scope="module")
def bad_results(tiny_model, data_dir, tmp_path_factory):
    """Each case in-process (test_bad_input's runner), one after another: none of them loads a model."""
    root = tmp_path_factory.mktemp("bad-preference")
    results = {}
    for name, case in _cases(tiny_model, data_dir).items():
        done, unchanged = _run(case, root / name)
        results[name] = (case, done, root / name if unchanged else root / name / "CHANGED")
    return results


@pytest.mark.parametrize("name", list(_cases(Path("m"), Path("d"))))
def test_bad_preference_input_is_one_clear_error(bad_results, name):
    case, done, workspace = bad_results[name]
    expect = case.expect.replace("{w}", str(workspace).removesuffix("/CHANGED"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert errors and any(expect in line for line in errors), done.stderr[-2000:]
    assert done.stderr.rstrip().splitlines()[-1].startswith("error:")
    assert workspace.name != "CHANGED", "the run wrote into its folder"
    shutil.rmtree(workspace, ignore_errors=True)


def test_method_switches_on_the_shipped_recipe_keep_only_that_methods_keys(pairs):
    from llm_tune.recipe.preference import PREFERENCE_METHODS

    data = [f"data.train={pairs / 'train.jsonl'}", f"data.validation={pairs / 'val.jsonl'}"]
    for method, cls in PREFERENCE_METHODS.items():
        done = run_cli("validate", "recipes/dpo.yaml", *data, f"preference.method={method}")
        resolved = yaml.safe_load(done.stdout)
        assert resolved["task"] == "preference" and resolved["preference"]["method"] == method
        assert set(resolved["preference"]) == set(cls.model_fields)  # every method valid from the same file
    keys = run_cli("keys", "preference").stdout
    for cls in PREFERENCE_METHODS.values():
        for name, info in cls.model_fields.items():
            assert info.description and f"preference.{name} " in keys


def test_reward_accuracy_can_pick_the_best_checkpoint_of_a_preference_run_only(pairs):
    data = [f"data.train={pairs / 'train.jsonl'}", f"data.validation={pairs / 'val.jsonl'}"]
    best = ["training.metric_for_best_model=eval_rewards/accuracies"]
    resolved = yaml.safe_load(run_cli("validate", "recipes/dpo.yaml", *data, *best).stdout)
    assert resolved["training"]["metric_for_best_model"] == "eval_rewards/accuracies"
    done = run_cli("validate", "recipes/instruct-lora.yaml", best[0], check=False)
    assert done.returncode == 2 and "eval_rewards/accuracies is a preference metric; use eval_loss" in done.stderr


def test_a_full_sft_run_is_the_start_and_the_reference(tiny_model, data_dir, pairs, tmp_path):
    """From a full-model SFT run, LoRA DPO trains on the SFT model (TRL's reference loads from the same folder), and
    the merged export merges into the SFT model, not the original base."""
    import torch
    from transformers import AutoModelForCausalLM

    sft = base_recipe(
        tiny_model,
        data_dir,
        tmp_path / "sft",
        strategy={"kind": "full"},
        training={"max_steps": 2, "learning_rate": 1e-3},
    )
    run_cli(write_recipe(tmp_path / "sft.yaml", sft))
    recipe = _recipe(tiny_model, data_dir, pairs, tmp_path / "dpo", "dpo", merge=True)
    recipe["model"]["from_run"] = str(tmp_path / "sft")
    recipe["training"]["max_steps"] = 1
    run_cli(write_recipe(tmp_path / "dpo.yaml", recipe))
    step0 = _metrics(tmp_path / "dpo")["step0"]
    assert step0["max_abs_policy_minus_reference_logp"] == 0.0 and abs(step0["loss"] - math.log(2)) < 1e-6
    resolved = yaml.safe_load((tmp_path / "dpo" / "recipe.resolved.yaml").read_text())
    assert resolved["model"]["name_or_path"] == str(tmp_path / "sft" / "model")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo" / "export" / "merged")
    sft_model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    name = "model.embed_tokens.weight"  # LoRA leaves the embeddings alone: the merged model keeps the SFT ones
    weights = {k: dict(m.named_parameters())[name] for k, m in (("merged", merged), ("sft", sft_model), ("base", base))}
    assert torch.equal(weights["merged"], weights["sft"]) and not torch.equal(weights["merged"], weights["base"])


def test_replacing_a_run_folder_with_tensorboard_logs(tiny_model, data_dir, pairs, tmp_path):
    """The step-0 evaluation logs (to TensorBoard too) only once the run folder is in place: replacing an old run
    must not delete the log file under the writer (found on SmolLM2: FileNotFoundError in the first step)."""
    out = tmp_path / "dpo"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "old.txt").write_text("a previous run")
    recipe = _recipe(tiny_model, data_dir, pairs, out, "dpo")
    recipe.pop("export")
    recipe["training"].update(report_to="tensorboard", max_steps=1)
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert "replacing the previous run" in done.stdout + done.stderr
    assert "eval_loss" in _metrics(out)["step0"] and list((out / "logs").glob("events.out.tfevents.*"))


def test_a_resume_from_an_adapter_run_is_accepted_and_without_a_checkpoint_the_gate_runs(sft_then_dpo):
    """The DPO run from the SFT adapter run (its strategy section differs from the SFT run's) resumed with
    training.resume=auto: the start is resolved before the resume check, so the saved recipe matches (it was once
    refused: the strategy was swapped after the check); with no checkpoint saved yet, the run starts at step 0 and
    the step-0 gate and evaluation run (they were once skipped because resume was set)."""
    import shutil

    root, _ = sft_then_dpo
    shutil.rmtree(root / "dpo-start" / "checkpoints")  # the run folder stays, with no checkpoint to resume
    done = run_cli(root / "dpo-start.yaml", "training.resume=auto")
    output = done.stdout + done.stderr
    assert "no complete checkpoint" in output and "step 0    dpo on" in output
    step0 = _metrics(root / "dpo-start")["step0"]
    assert step0["max_abs_policy_minus_reference_logp"] == 0.0 and "eval_loss" in step0
