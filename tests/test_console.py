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
    assert f"cpu ({os.cpu_count()} threads)" in ours[0] and "warning:" not in said  # every core computes
    # The libraries' warnings are all known noise here: none shown, every one kept and counted.
    kept = (tmp_path / "run" / "warnings.log").read_text()
    assert "torch.jit.script_method" in kept and "known noise" in kept
    assert re.search(rf"\[llm_tune\] \d+ warnings \(\d+ distinct, 0 shown above\) kept in {tmp_path / 'run'}/warnings.log",
                     said)  # fmt: skip
    assert ours[-1].startswith(f"[llm_tune] run folder {tmp_path / 'run'}: adapter/")
    assert "confusion matrix" in said
    assert len(lines) < 40, "\n".join(lines)


def test_a_launch_on_one_core_of_several_says_how_to_use_them(tiny_model, data_dir, tmp_path):
    if os.cpu_count() < 2:
        pytest.skip("one core: nothing to warn about")
    recipe = write_recipe(tmp_path / "r.yaml", sentiment(tiny_model, data_dir, tmp_path))
    launch = make_launch()
    at = launch.index("--num_cpu_threads_per_process")
    without = launch[:at] + launch[at + 2 :]  # accelerate's own default: OMP_NUM_THREADS=1
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


def test_warnings_are_shown_once_unless_known_noise_and_all_kept(tmp_path, capsys):
    import warnings

    from llm_tune.console import WarningLog

    log = WarningLog()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = log.show
        for _ in range(3):
            warnings.warn("the tokenizer has no pad token; using eos", UserWarning, stacklevel=1)
        warnings.warn("`torch.jit.script_method` is deprecated. Please switch to `torch.compile`", DeprecationWarning,
                      stacklevel=1)  # fmt: skip
        log.write_to(tmp_path / "warnings.log")  # the run folder appears: what came before is written too
        warnings.warn("labels were cast to float", FutureWarning, stacklevel=1)
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert [line.split(" (")[0] for line in shown] == [
        "warning: UserWarning: the tokenizer has no pad token; using eos", "warning: FutureWarning: labels were cast to float",
    ]  # fmt: skip
    kept = (tmp_path / "warnings.log").read_text().splitlines()
    assert [line.split(":")[0] for line in kept] == ["UserWarning x3", "DeprecationWarning x1 (known noise, not shown)",
                                                      "FutureWarning x1"]  # fmt: skip
    assert log.summary() == f"5 warnings (3 distinct, 2 shown above) kept in {tmp_path / 'warnings.log'}"


def test_a_log_file_gets_plain_progress_lines_and_a_terminal_a_bar(tiny_model, data_dir, tmp_path):
    """stdout to a pipe (SLURM, CI, `| cat`): whole lines a `tail` or `grep` can read, no carriage returns or cursor
    codes from any bar (training, evaluation, loading); stdout on a terminal: the bar."""
    recipe = write_recipe(tmp_path / "r.yaml", sentiment(tiny_model, data_dir, tmp_path))
    args = [str(recipe), "training.max_steps=6", "training.logging_steps=2", "training.eval_steps=3",
            "training.progress_every_s=0"]  # fmt: skip
    said = run_cli(*args).stdout
    piped = said + run_cli(*args).stderr
    assert "\r" not in piped and "\x1b[" not in piped, repr(piped[-2000:])
    progress = [line for line in said.splitlines() if re.match(r"\[llm_tune\] step \d+/6 \(", line)]
    assert [line.split()[2] for line in progress] == ["1/6", "2/6", "4/6", "6/6"], said  # logging_first_step too
    assert all(re.search(r"loss [\d.]+, lr [\d.e+-]+, \d+ tokens/s, elapsed \d+:\d\d, ETA \d+:\d\d$", line)
               for line in progress), progress  # fmt: skip
    assert re.search(r"\[llm_tune\] step 3: validation loss [\d.]+, accuracy", said), said

    import pty

    leader, follower = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "llm_tune", *args],
        cwd=ROOT,
        env=ENV,
        stdout=follower,
        stderr=subprocess.PIPE,
        timeout=600,
    )  # fmt: skip (bytes: text mode would turn \r into \n)
    os.close(follower)
    os.close(leader)
    bars = done.stderr.decode()
    assert done.returncode == 0, bars[-3000:]
    assert re.search(r"\rtraining: +\d+%", bars), repr(bars[-2000:])  # tqdm's bar redraws its line
