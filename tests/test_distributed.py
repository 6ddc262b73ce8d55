"""Multi-process training on the CPU: 2 processes x batch b train exactly like 1 process x batch 2b and like
1 process x batch b x gradient accumulation 2; launches that cannot train as asked are refused; the data is
tokenized once (TRL on the main process first, then datasets' cache); only rank 0 logs and writes; an error names its rank."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, ROOT, base_recipe, run_cli, write_recipe

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
CPU_DDP = ROOT / "recipes" / "accelerate" / "cpu-ddp.yaml"
STEPS = 7  # 20 rows, global batch 4: 5 steps an epoch, so the second epoch's order is compared too


def launch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=600)


def step_losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_three_batch_layouts_give_the_same_per_step_losses(tmp_path, tiny_model, data_dir):
    cache = {"HF_DATASETS_CACHE": str(tmp_path / "cache")}
    recipe = write_recipe(
        tmp_path / "r.yaml",
        base_recipe(tiny_model, data_dir, tmp_path / "unused", training={"max_steps": STEPS, "save_steps": 2}),
    )
    # Two processes first: TRL tokenizes on the main process while rank 1 waits, then rank 1 loads datasets' cache.
    # Dropout is 0 and the order (length-grouped, the default) is a function of (seed, epoch, global batch), so the
    # layouts train the same rows in every step and must agree.
    two = launch(
        ACCELERATE,
        "launch",
        "--config_file",
        str(CPU_DDP),
        "--num_processes",
        "2",
        "-m",
        "llm_tune",
        str(recipe),
        f"output_dir={tmp_path / 'ddp'}",
        "training.per_device_train_batch_size=2",
        env=cache,
    )
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("[llm_tune] strategy  lora") == 1 and two.stdout.count("[llm_tune] run folder") == 1
    assert (tmp_path / "ddp" / "checkpoints" / "checkpoint-6" / "rng_state_1.pth").is_file()  # rank 1 existed

    layouts = {"2 proc x b=2": tmp_path / "ddp"}
    for name, out, overrides in (
        ("1 proc x b=4", "big", ["training.per_device_train_batch_size=4"]),
        (
            "1 proc x b=2 x GA 2",
            "accum",
            ["training.per_device_train_batch_size=2", "training.gradient_accumulation_steps=2"],
        ),
    ):
        done = run_cli(recipe, f"output_dir={tmp_path / out}", *overrides, env=cache)
        assert "Tokenizing train" not in done.stderr  # the same data, tokenizer and settings: datasets' cache
        layouts[name] = tmp_path / out

    losses = {name: step_losses(out) for name, out in layouts.items()}
    print("\nstep | " + " | ".join(losses))
    for step in range(1, STEPS + 1):
        print(f"{step:4d} | " + " | ".join(f"{losses[name][step]:.7f}" for name in losses))
    reference = losses["1 proc x b=4"]
    assert sorted(reference) == list(range(1, STEPS + 1))
    for name, per_step in losses.items():
        for step, loss in reference.items():
            assert per_step[step] == pytest.approx(loss, abs=1e-5), (name, step)


def test_a_cpu_launch_that_starts_one_process_is_refused(tmp_path, tiny_model, data_dir):
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data_dir, tmp_path / "out"))
    done = launch(ACCELERATE, "launch", "--cpu", "--num_processes", "2", "-m", "llm_tune", str(recipe))
    assert done.returncode != 0
    assert "asked for 2 processes but started 1" in done.stderr
    assert "recipes/accelerate/cpu-ddp.yaml" in done.stderr
    assert not (tmp_path / "out").exists()


def test_fsdp_on_a_cpu_is_refused_before_training(tmp_path, tiny_model, data_dir):
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data_dir, tmp_path / "out"))
    config = ROOT / "recipes" / "accelerate" / "fsdp.yaml"
    done = launch(
        ACCELERATE, "launch", "--config_file", str(config), "--num_processes", "1", "-m", "llm_tune", str(recipe)
    )
    assert done.returncode != 0
    assert (
        "distributed_type FSDP on this machine without GPUs: accelerate assigns FSDP only on GPU-type setups, so"
        " this would train plain DDP" in done.stderr
    )
    assert not (tmp_path / "out").exists()


def test_deepspeed_on_a_cpu_is_refused(monkeypatch, tiny_model, data_dir, tmp_path):
    from llm_tune.errors import UserError
    from llm_tune.recipe.schema import Recipe
    from llm_tune.train import launch as distributed
    from llm_tune.train.launch_checks import check_launch

    monkeypatch.setattr(distributed, "launcher_command", lambda: None)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    recipe = Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "out"))
    with pytest.raises(UserError, match="DeepSpeed does not train on a CPU"):
        check_launch(recipe)


def test_launches_are_read_with_accelerates_own_parser(tmp_path):
    from llm_tune.train.launch import parse_launch

    config = tmp_path / "c.yaml"
    config.write_text("distributed_type: MULTI_CPU\nnum_processes: 3\nmixed_precision: bf16\n")
    assert parse_launch(["--cpu", "--num_processes", "2", "-m", "llm_tune"]).num_processes == 2
    assert parse_launch(["--num-processes=4", "train.py"]).num_processes == 4
    # flags before the script win over the config file; arguments after it are the script's
    given = parse_launch(["--config_file", str(config), "--num_processes", "5", "-m", "x", "--num_processes", "9"])
    assert (given.num_processes, given.distributed_type, given.mixed_precision) == (5, "MULTI_CPU", "bf16")
    assert parse_launch(["--config_file", str(config), "-m", "x", "--num_processes", "9"]).num_processes == 3
    fsdp = parse_launch(
        ["--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), "--mixed_precision", "no", "-m", "x"]
    )
    assert (fsdp.distributed_type, fsdp.fsdp_version, fsdp.mixed_precision, fsdp.shards_parameters) == (
        "FSDP",
        2,
        "no",
        True,
    )


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {
        "cpu-ddp": ("MULTI_GPU", {}),
        "ddp": ("MULTI_GPU", {}),
        "fsdp": ("FSDP", {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}),
        "deepspeed-zero2": ("DEEPSPEED", {"zero_stage": 2}),
        "deepspeed-zero3": ("DEEPSPEED", {"zero_stage": 3, "zero3_save_16bit_model": True}),
        "deepspeed-zero3-offload": ("DEEPSPEED", {"zero_stage": 3, "offload_param_device": "cpu"}),
        "two-node": ("MULTI_GPU", {}),
    }
    for name, (kind, settings) in expected.items():
        config = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
        assert config.distributed_type.value == kind, name
        section = config.fsdp_config if kind == "FSDP" else config.deepspeed_config
        assert settings.items() <= section.items(), name
    assert load_config_from_file(str(CPU_DDP)).use_cpu is True
    assert load_config_from_file(str(ROOT / "recipes" / "accelerate" / "two-node.yaml")).num_machines == 2


def test_an_error_names_its_rank_and_stops_the_job(tmp_path, tiny_model, data_dir):
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "out")
    recipe["data"]["train"] = str(tmp_path / "missing.jsonl")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    done = launch(TORCHRUN, "--nproc_per_node", "2", "-m", "llm_tune", str(path))
    assert done.returncode != 0
    # torchrun stops the other rank as soon as one exits, so only the first rank to fail is sure to print.
    assert re.search(rf"error: rank [01]: {re.escape(str(path))}: data.train: file not found", done.stderr)


def test_a_stream_trains_the_same_rows_on_two_processes(tmp_path, tiny_model, data_dir):
    """data.streaming under DDP: every process reads the same seeded sequence of passes and keeps its part of each
    global batch, so 2 processes x b=2 train the rows 1 process x b=4 trains (equal per-step losses, into a second
    pass), and rank 0 alone says what it read."""
    settings = {"max_steps": STEPS, "save_steps": 100}
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "unused", training=settings,
                         data={"streaming": True, "shuffle_buffer": 8})  # fmt: skip
    path = write_recipe(tmp_path / "r.yaml", recipe)
    two = launch(ACCELERATE, "launch", "--config_file", str(CPU_DDP), "--num_processes", "2", "-m", "llm_tune",
                 str(path), f"output_dir={tmp_path / 'ddp'}", "training.per_device_train_batch_size=2")  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("rows streamed, shuffled 8 at a time") == 1 and two.stdout.count(" in 2 passes;") == 1
    run_cli(path, f"output_dir={tmp_path / 'one'}", "training.per_device_train_batch_size=4")
    ddp, one = step_losses(tmp_path / "ddp"), step_losses(tmp_path / "one")
    assert sorted(one) == list(range(1, STEPS + 1))
    for step, loss in one.items():
        assert ddp[step] == pytest.approx(loss, abs=1e-5), step
