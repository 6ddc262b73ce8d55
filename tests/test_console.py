"""The console: `make demo`'s launch of a sentiment run prints what a user can act on (a short summary, one bar,
the evaluation table, where everything went) and none of the libraries' noise; `--verbose` brings it back."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ENV, ROOT, base_recipe, run_cli, write_recipe

NOISE = (
    "were not passed to `accelerate launch`",  # accelerate's default values
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes on AVX512-BF16 CPUs
    "LOAD REPORT", "MISSING",  # transformers on the new classification head
    "FutureWarning", "UserWarning", "DeprecationWarning",
    "Generating train split", "Map:", "Filter:",  # datasets' bars
    "{'loss'", "{'train_runtime'",  # the Trainer's log dicts
)  # fmt: skip


def make_launch() -> list[str]:
    """The Makefile's LAUNCH (what `make demo` runs), as this interpreter's accelerate."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ").replace("$(THREADS)", str(os.cpu_count()))
    line = next(line for line in text.splitlines() if line.startswith("LAUNCH :="))
    words = shlex.split(line.split(":=", 1)[1])
    assert words[:2] == ["accelerate", "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]


def sentiment(tiny_model, data_dir, tmp_path) -> dict:
    return base_recipe(tiny_model, data_dir, tmp_path / "run", task="classification",
                       classification={"head": "sequence"}, strategy={"kind": "lora", "r": 4},
                       data={"train": str(data_dir / "reviews.jsonl"), "validation": str(data_dir / "reviews_val.jsonl"),
                             "format": "classification"})  # fmt: skip


def test_a_demo_launch_prints_only_what_a_user_can_act_on(tiny_model, data_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", sentiment(tiny_model, data_dir, tmp_path))
    done = subprocess.run([*make_launch(), "-m", "llm_tune", str(recipe)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    for noise in NOISE:
        assert noise not in said, noise
    lines = [re.sub(r".*\r", "", line) for line in said.splitlines()]  # a progress bar's last state
    ours = [line for line in lines if line.startswith("[llm_tune]")]
    assert [line.split()[1] for line in ours[:4]] == ["model", "strategy", "data", "training"]
    assert f"cpu ({os.cpu_count()} threads)" in ours[0] and "warning" not in said  # every core computes
    assert ours[-1].startswith(f"[llm_tune] run folder {tmp_path / 'run'}: adapter/")
    assert "confusion matrix" in said
    assert len(lines) < 40, "\n".join(lines)


def test_a_launch_on_one_core_of_several_says_how_to_use_them(tiny_model, data_dir, tmp_path):
    if os.cpu_count() < 2:
        pytest.skip("one core: nothing to warn about")
    recipe = write_recipe(tmp_path / "r.yaml", sentiment(tiny_model, data_dir, tmp_path))
    launch = make_launch()
    at = launch.index("--num_cpu_threads_per_process")
    without = launch[:at] + launch[at + 2:]  # accelerate's own default: OMP_NUM_THREADS=1
    done = subprocess.run([*without, "-m", "llm_tune", str(recipe), "training.max_steps=1"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cpu (1 thread)" in done.stdout
    assert f"warning: torch computes on 1 of this machine's {os.cpu_count()} cores" in done.stdout
    assert f"--num_cpu_threads_per_process {os.cpu_count()}" in done.stdout


def test_verbose_brings_the_library_logs_back(tiny_model, data_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", sentiment(tiny_model, data_dir, tmp_path))
    done = run_cli(recipe, "--verbose", "training.max_steps=1")
    assert "LOAD REPORT" in done.stdout + done.stderr
