"""Evaluate and iterate, through `python -m llm_tune`: evaluations during training (classification metrics), early
stopping that keeps the best checkpoint as the run's weights (and resumes with its counter), the overfitting warning,
sweeps (grid and Optuna, resumable), linear probes, layer-wise learning rates and `compare`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import base_recipe, run_cli, write_jsonl, write_recipe


def reviews(n: int, start: int = 0) -> list[dict]:
    good, bad = ["great", "superb", "lovely", "brilliant"], ["awful", "dreadful", "boring", "terrible"]
    return [{"text": f"The film was {(good if i % 2 else bad)[i % 4]}, truly, number {i}.",
             "label": "positive" if i % 2 else "negative"} for i in range(start, start + n)]  # fmt: skip


@pytest.fixture(scope="module")
def review_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("reviews")
    return write_jsonl(d / "train.jsonl", reviews(24)), write_jsonl(d / "val.jsonl", reviews(8, start=100))


def classifier(tiny_model, data_dir, out: Path, review_files, **training) -> dict:
    train, val = review_files
    recipe = base_recipe(tiny_model, data_dir, out, task="classification", classification={"head": "sequence"},
                         data={"train": str(train), "validation": str(val), "format": "classification"})  # fmt: skip
    recipe["training"].update({"max_steps": 20, "eval_steps": 2, "save_total_limit": None, **training})
    return recipe


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def evaluations(out: Path) -> list[dict]:
    return [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in e]


@pytest.fixture(scope="module")
def stopped(tiny_model, data_dir, review_files, tmp_path_factory) -> tuple[Path, dict, str]:
    """A run that stops early: no later evaluation may count as better by more than the huge threshold, so the
    counter reaches the patience of 3 at the fourth evaluation (step 8)."""
    tmp = tmp_path_factory.mktemp("stopped")
    recipe = classifier(tiny_model, data_dir, tmp / "run", review_files,
                        early_stopping_patience=3, early_stopping_threshold=10.0)  # fmt: skip
    done = run_cli(write_recipe(tmp / "r.yaml", recipe))
    return tmp / "run", recipe, done.stdout


def test_early_stopping_keeps_the_best_checkpoint_and_eval_reproduces_it(stopped):
    out, _, stdout = stopped
    metrics = metrics_of(out)
    assert metrics["stopped_early"] is True and metrics["train_steps"] == 8
    assert "stopped early at step 8 of 20: eval_loss did not improve" in stdout
    history = evaluations(out)
    assert [e["step"] for e in history] == [2, 4, 6, 8]
    assert all({"eval_accuracy", "eval_macro_f1"} <= set(e) for e in history)  # classification metrics in training
    best = min(history, key=lambda e: e["eval_loss"])
    assert metrics["best_step"] == best["step"] and metrics["best_metric"] == pytest.approx(best["eval_loss"])
    # The run's adapter is the best checkpoint's, and `eval` of the saved run reproduces its metric.
    kept = load_file(out / "adapter" / "adapter_model.safetensors")
    checkpoint = load_file(out / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    assert kept.keys() == checkpoint.keys() and all(torch.equal(kept[k], checkpoint[k]) for k in kept)
    run_cli("eval", out)
    assert json.loads((out / "eval" / "metrics.json").read_text())["loss"] == pytest.approx(best["eval_loss"], abs=1e-5)


def test_resume_keeps_the_early_stopping_state(stopped, tmp_path):
    """Resumed from checkpoint-4 (counter 1), the run stops at step 8 as the uninterrupted one did; a counter
    started afresh would stop at step 10."""
    out, recipe, _ = stopped
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for later in ("checkpoint-6", "checkpoint-8"):
        shutil.rmtree(copy / "checkpoints" / later)
    for done in ("adapter", "metrics.json", "trainer_state.json"):
        shutil.rmtree(copy / done) if (copy / done).is_dir() else (copy / done).unlink()
    recipe = {**recipe, "output_dir": str(copy)}
    resumed = run_cli(write_recipe(tmp_path / "r.yaml", recipe), "training.resume=auto")
    assert "resuming from" in resumed.stdout and "stopped early at step 8" in resumed.stdout
    assert metrics_of(copy)["train_steps"] == 8


def test_overfitting_is_said_out_loud(tiny_model, data_dir, tmp_path):
    """Memorising 4 rows of arbitrary answers at a high rate: training loss falls, validation loss rises."""
    train = write_jsonl(
        tmp_path / "t.jsonl", [{"instruction": f"Code {i}?", "output": f"zq{i * 7919} kv{i}"} for i in range(4)]
    )
    val = write_jsonl(
        tmp_path / "v.jsonl", [{"instruction": f"Code {i}?", "output": f"mw{i * 104729} px{i}"} for i in range(4)]
    )
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "run", strategy={"kind": "full"},
                         data={"train": str(train), "validation": str(val)},
                         training={"max_steps": 20, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
                                   "eval_steps": 2, "per_device_train_batch_size": 4})  # fmt: skip
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert "warning: overfitting: validation loss rose" in done.stdout


def test_a_grid_sweep_ranks_its_trials_and_resumes(tiny_model, data_dir, review_files, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", classifier(tiny_model, data_dir, tmp_path / "sweep", review_files))
    args = ["sweep", recipe, "--vary", "training.learning_rate=[1e-3,1e-2]", "--vary", "strategy.r=[2,4]",
            "training.max_steps=2", "training.metric_for_best_model=eval_accuracy"]  # fmt: skip
    first = run_cli(*args)
    assert "4 trials ranked by eval_accuracy (higher is better)" in first.stdout
    with (tmp_path / "sweep" / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert [(float(r["training.learning_rate"]), int(r["strategy.r"])) for r in rows] == [
        (1e-3, 2), (1e-3, 4), (1e-2, 2), (1e-2, 4)]  # fmt: skip
    for row in rows:
        trial = tmp_path / "sweep" / row["trial"]
        assert float(row["eval_accuracy"]) == metrics_of(trial)["eval_accuracy"] and (trial / "adapter").is_dir()
    again = run_cli(*args)
    assert again.stdout.count("finished before, skipped") == 4 and "strategy lora" not in again.stdout


def test_a_random_sweep_samples_ranges_with_optuna_and_continues(tiny_model, data_dir, review_files, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", classifier(tiny_model, data_dir, tmp_path / "sweep", review_files))
    args = ["sweep", recipe, "--search", "random", "--vary", "training.learning_rate=loguniform(1e-4,1e-2)",
            "--vary", "strategy.r=[2,4]", "training.max_steps=2"]  # fmt: skip
    first = run_cli(*args, "--trials", "2", "training.eval_steps=null")
    assert (
        "warning: sweep: trials are pruned on the evaluations during training, and training.eval_steps is not set"
        in first.stdout
    )
    more = run_cli(*args, "--trials", "3", "training.eval_steps=null")
    assert "2 trials finished before; 1 to go" in more.stdout
    with (tmp_path / "sweep" / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(1e-4 <= float(r["training.learning_rate"]) <= 1e-2 for r in rows)
    assert len({r["training.learning_rate"] for r in rows}) == 3


class _Trial:
    def __init__(self, prune_from: int) -> None:
        self.reported, self.prune_from = [], prune_from

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return len(self.reported) >= self.prune_from


def test_pruning_stops_a_trial_when_optuna_says_so():
    from transformers import TrainerControl, TrainerState

    from llm_tune.sweep.search import prune_callback

    trial, control, state = _Trial(2), TrainerControl(), TrainerState(max_steps=6)
    watch = prune_callback(trial, "eval_loss")
    for step in (2, 4):
        state.global_step = step
        watch.on_evaluate(None, state, control, metrics={"eval_loss": 1.0 / step})
    assert trial.reported == [(2, 0.5), (4, 0.25)] and control.should_training_stop and watch.pruned_at == 4


def test_pruning_never_fires_on_the_end_of_run_evaluation():
    """A trial that trained to its last step is finished: neither the evaluation at the last step nor the one after
    training is reported, so Optuna cannot record it as pruned."""
    from transformers import TrainerControl, TrainerState

    from llm_tune.sweep.search import prune_callback

    trial, control, state = _Trial(1), TrainerControl(), TrainerState(max_steps=4)
    watch = prune_callback(trial, "eval_loss")
    state.global_step = 4
    watch.on_evaluate(None, state, control, metrics={"eval_loss": 0.5})  # eval_steps divides max_steps
    watch.on_train_end(None, state, control)
    watch.on_evaluate(None, state, control, metrics={"eval_loss": 0.5})  # the pipeline's closing evaluate()
    assert trial.reported == [] and not watch.pruned and not control.should_training_stop


def test_a_linear_probe_trains_only_the_head(tiny_model, data_dir, review_files, tmp_path):
    recipe = classifier(tiny_model, data_dir, tmp_path / "run", review_files, max_steps=3, eval_steps=None,
                        learning_rate=1e-2)  # fmt: skip
    recipe["strategy"] = {"kind": "frozen", "trainable_layers": 0}
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert f"strategy  frozen: {64 * 2:,} of " in done.stdout  # the score head: hidden 64 x 2 labels
    base, trained = (
        load_file(tiny_model / "model.safetensors"),
        load_file(tmp_path / "run" / "model" / "model.safetensors"),
    )
    shared = {k for k in base if k.removeprefix("model.") in {t.removeprefix("model.") for t in trained}}
    assert len(shared) >= len(base) - 1  # every base weight but the LM head, which the classifier has not
    for key in shared:
        assert torch.equal(base[key], trained[key]), key
    assert "score.weight" in trained


def test_layerwise_rates_decay_from_the_top_block(tiny_model, data_dir, tmp_path):
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "run", strategy={"kind": "full"},
                         training={"layerwise_lr_decay": 0.5, "learning_rate": 1e-3, "max_steps": 2, "save_steps": 2})  # fmt: skip
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    # The tiny model ties its input embeddings to the LM head: that one weight trains at the head's full rate.
    expected = (
        "layer-wise learning rates (decay 0.5): block 1 1.00e-03, block 0 5.00e-04, head and other modules 1.00e-03"
    )
    assert expected in done.stdout
    optimizer = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "optimizer.pt", weights_only=False)
    assert sorted({g["initial_lr"] for g in optimizer["param_groups"]}) == [5e-4, 1e-3]


def test_layerwise_rates_give_untied_embeddings_the_rate_below_block_0_and_a_tied_head_the_full_rate():
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_tune.train.layers import layerwise_groups

    def rates(tied: bool) -> dict[str, float]:
        config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)  # fmt: skip
        model = LlamaForCausalLM(config)
        names = {id(p): n for n, p in model.named_parameters()}
        groups = layerwise_groups(model, 1e-3, 0.5, 0.0, set())
        return {names[id(p)]: g["lr"] for g in groups for p in g["params"]}

    untied, tied = rates(False), rates(True)
    assert untied["model.embed_tokens.weight"] == 2.5e-4 and untied["lm_head.weight"] == 1e-3
    assert tied["model.embed_tokens.weight"] == 1e-3  # the same Parameter as lm_head.weight
    assert untied["model.layers.0.mlp.up_proj.weight"] == tied["model.layers.0.mlp.up_proj.weight"] == 5e-4


def test_compare_tables_differing_keys_and_metrics(stopped, tiny_model, data_dir, review_files, tmp_path):
    other = classifier(tiny_model, data_dir, tmp_path / "other", review_files, max_steps=2, learning_rate=5e-3)
    run_cli(write_recipe(tmp_path / "r.yaml", other))
    done = run_cli("compare", stopped[0], tmp_path / "other")
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["key", "run", "other"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["training.learning_rate"] == ["0.001", "0.005"] and rows["training.max_steps"] == ["20", "2"]
    assert "training.seed" not in rows and {"eval_accuracy", "eval_loss", "train_steps"} <= set(rows)
    assert rows["stopped_early"] == ["True", "False"]


def test_gradual_unfreezing_adds_a_block_on_schedule(tiny_model, data_dir, tmp_path):
    """Block 1 trains from the start; block 0 joins after 2 steps; the embeddings never train."""
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "run", strategy={"kind": "frozen", "trainable_layers": 1,
                         "unfreeze_every_steps": 2}, training={"max_steps": 4, "save_steps": 2, "learning_rate": 1e-2})  # fmt: skip
    done = run_cli(write_recipe(tmp_path / "r.yaml", recipe))
    assert "step 2: block 0 starts training (2 of 2 blocks)" in done.stdout
    base = load_file(tiny_model / "model.safetensors")
    at_2 = load_file(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    final = load_file(tmp_path / "run" / "model" / "model.safetensors")
    block0 = [k for k in base if ".layers.0." in k]
    assert block0 and all(torch.equal(base[k], at_2[k]) for k in block0)  # frozen for the first 2 steps
    assert any(not torch.equal(base[k], final[k]) for k in block0)  # then it trains
    assert torch.equal(base["model.embed_tokens.weight"], final["model.embed_tokens.weight"])
