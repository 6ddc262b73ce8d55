"""llm_tune's real pipeline under FSDP2 on 2 CPU processes (gloo), through `accelerate launch` and
recipes/accelerate/fsdp.yaml: train, save (a full-state-dict gather on every rank), resume from an FSDP checkpoint,
export; the per-step losses and the saved adapter equal the 1-process run's.

accelerate assigns FSDP only on GPU-type setups, so the launched processes load tests/fsdp_on_cpu/sitecustomize.py,
a test-only switch that lets accelerate's own FSDP branch run on the CPU process group (its docstring says exactly
what it changes). Evidence that the run is FSDP and not DDP: the checkpoints hold accelerate's FSDP files
(pytorch_model_fsdp.bin), which DDP never writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, ROOT, base_recipe, run_cli, run_cli_together, write_recipe

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
SWITCH = Path(__file__).parent / "fsdp_on_cpu"
STEPS = 4


def fsdp_launch(recipe: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**ENV, "LLM_TUNE_TEST_FSDP_ON_CPU": "1", "PYTHONPATH": os.pathsep.join([str(SWITCH), str(ROOT)])}
    done = subprocess.run(
        [ACCELERATE, "launch", "--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2",
         "--mixed_precision", "no", "--num_cpu_threads_per_process", "1", "-m", "llm_tune", str(recipe), *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def step_losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_fsdp2_on_two_cpu_processes_trains_saves_resumes_and_exports_like_one_process(tmp_path, tiny_model, data_dir):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        base_recipe(tiny_model, data_dir, tmp_path / "unused", training={"max_steps": STEPS, "save_steps": 2}),
    )
    same = ["training.group_by_length=false", "training.per_device_train_batch_size=2"]
    run_cli_together([recipe, f"output_dir={tmp_path / 'one'}", *same, "training.gradient_accumulation_steps=2"])
    sharded = tmp_path / "fsdp"
    fsdp_launch(recipe, f"output_dir={sharded}", *same)
    assert (sharded / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()  # FSDP, not DDP

    # resume: the same run folder without its last checkpoint and results, continued from checkpoint-2
    resumed = tmp_path / "resumed"
    shutil.copytree(sharded / "checkpoints", resumed / "checkpoints")
    shutil.rmtree(resumed / "checkpoints" / f"checkpoint-{STEPS}")
    shutil.copy(sharded / "recipe.resolved.yaml", resumed / "recipe.resolved.yaml")
    fsdp_launch(recipe, f"output_dir={resumed}", *same, "training.resume=auto")

    one, two, again = step_losses(tmp_path / "one"), step_losses(sharded), step_losses(resumed)
    print("\nstep | 1 proc b=2 x GA 2 | FSDP2 2 gloo proc x b=2 | FSDP2 resumed from checkpoint-2 | delta")
    for step in sorted(one):
        print(
            f"{step:4d} | {one[step]:.7f} | {two[step]:.7f} | {again.get(step, float('nan')):.7f} |"
            f" {two[step] - one[step]:+.1e}"
        )
    a, b, c = adapter(tmp_path / "one"), adapter(sharded), adapter(resumed)
    sharded_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    resumed_diff = max((b[k] - c[k]).abs().max().item() for k in b)
    signal = max(a[k].abs().max().item() for k in a if "lora_B" in k)  # B starts at 0: what training moved
    print(
        f"adapter max |diff|: FSDP vs 1 process {sharded_diff:.1e}, resumed vs uninterrupted {resumed_diff:.1e};"
        f" largest trained lora_B weight {signal:.1e}"
    )
    assert sorted(two) == list(range(1, STEPS + 1))
    # float32, no dropout, the same seeded order; FSDP reduce-scatters the 2 ranks' gradients in the accumulation's
    # order: equal within float32 rounding (1e-6) against steps that move the loss by ~0.1
    assert all(abs(two[s] - one[s]) <= 1e-6 for s in one)
    assert all(again[s] == two[s] for s in (3, 4))
    assert sorted(a) == sorted(b) == sorted(c)  # the whole adapter, gathered: no zero-size or missing tensor
    assert sharded_diff <= 1e-6 < signal and resumed_diff <= 1e-6  # (PR #4206's bug reset (N-1)/N of each tensor)

    run_cli("export", sharded, "--merge")  # the final export reads the saved files
    assert (sharded / "export" / "merged" / "export.json").is_file()
