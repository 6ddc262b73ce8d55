"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with training.resume=auto logs the same
per-step losses and ends with the same weights as the run that was never interrupted; half-written checkpoints
are never resumed from; Ctrl-C saves a checkpoint and prints the command that resumes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV, ROOT, base_recipe, run_cli, write_recipe

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

STEPS = 8  # 20 rows, batch 4: 5 steps an epoch, so the resumed part crosses an epoch boundary


@pytest.fixture
def cache(tmp_path) -> dict:
    return {"HF_DATASETS_CACHE": str(tmp_path / "cache")}


def step_losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def adapter_tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def resume_recipe(tmp_path: Path, tiny_model: Path, data_dir: Path, name: str, **training) -> Path:
    settings = {"max_steps": STEPS, "per_device_train_batch_size": 4, "save_steps": 2, "save_total_limit": 2}
    recipe = base_recipe(tiny_model, data_dir, tmp_path / name, training={**settings, **training})
    return write_recipe(tmp_path / f"{name}.yaml", recipe)


def start(recipe: Path, log: Path, env: dict, *overrides: str) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "llm_tune", str(recipe), *overrides],
        cwd=ROOT,
        env={**ENV, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended (rc {process.returncode}) before the condition:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def test_kill_and_resume_matches_the_uninterrupted_run(tmp_path, tiny_model, data_dir, cache):
    from llm_tune.train.checkpoints import COMPLETE, latest_complete

    whole = run_cli(resume_recipe(tmp_path, tiny_model, data_dir, "whole"), env=cache)
    assert whole.returncode == 0

    recipe = resume_recipe(tmp_path, tiny_model, data_dir, "killed")
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    process = start(recipe, log, cache)
    wait_for(lambda: latest_complete(out / "checkpoints") is not None, process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    latest = latest_complete(out / "checkpoints")
    killed_at = int(latest.name.split("-")[1])
    assert killed_at < STEPS and not (out / "adapter").exists()

    # A save cut short: the files of a checkpoint, one of them truncated, and no completion marker.
    torn = out / "checkpoints" / f"checkpoint-{STEPS - 1}"
    shutil.copytree(latest, torn, dirs_exist_ok=True)
    (torn / COMPLETE).unlink()
    (torn / "optimizer.pt").write_bytes((torn / "optimizer.pt").read_bytes()[:100])

    resumed = run_cli(recipe, "training.resume=auto", env=cache)
    assert f"removing {torn}: its save did not finish" in resumed.stdout
    assert f"resuming from {out / 'checkpoints'}/checkpoint-" in resumed.stdout

    expected, got = step_losses(tmp_path / "whole"), step_losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1))
    print(f"\nkilled after checkpoint-{killed_at}; step: uninterrupted | killed+resumed")
    for step in expected:
        print(f"{step:3d}: {expected[step]:.6f} | {got[step]:.6f}")
        assert got[step] == pytest.approx(expected[step], abs=1e-5)
    final_whole, final_resumed = adapter_tensors(tmp_path / "whole"), adapter_tensors(out)
    assert final_whole.keys() == final_resumed.keys()
    for name, tensor in final_whole.items():
        assert (tensor - final_resumed[name]).abs().max().item() <= 1e-6, name


LATER_EPOCH = {
    # The shipped recipes with their defaults (length grouping, accumulation, cosine warmup, eval and early stopping
    # where the recipe has them) on the tiny model in float32; checkpoints every few steps so a kill lands in a
    # later epoch. 60 instruct rows at 4 x accumulation 2: 8 steps an epoch, 24 in all.
    "instruct": ("instruct-lora.yaml", 8, ["training.save_steps=3"]),
    # 48 reviews at batch 8: 6 steps an epoch, 12 in all; evaluation (and so saving) every 3 steps, early stopping
    # armed with a patience it cannot exhaust, so its counter is part of the state a resume must restore.
    "sentiment": ("sentiment.yaml", 6, [
        "training.eval_steps=3", "training.save_steps=3", "training.early_stopping_patience=50",
        "training.early_stopping_threshold=0.0",
    ]),
    # The instruct recipe on a mixture of two sources weighted 1:2 (data/mixture.py draws each epoch's rows from
    # (seed, epoch)): 20 + 40 rows of the 60, 60 an epoch, 8 steps an epoch.
    "mixture": ("instruct-lora.yaml", 8, ["training.save_steps=3"]),
    # The instruct recipe streaming its 60 rows (data.streaming: passes shuffled through a 16-row buffer seeded by
    # (seed, pass), windows sorted by length): 7.5 steps a pass, 32 steps; the resumed run reads the passes again
    # and skips the batches it trained.
    "stream": ("instruct-lora.yaml", 8, [
        "training.save_steps=3", "training.max_steps=32", "data.streaming=true", "data.shuffle_buffer=16",
    ]),
    # DPO (the step-0 gate on the fresh start, a seeded plain shuffle): 12 pairs at batch 2, 6 steps an epoch, 12
    # in all, validation pairs evaluated (and saved) every 3 steps.
    "dpo": ("dpo.yaml", 6, [
        "training.per_device_train_batch_size=2", "training.gradient_accumulation_steps=1",
        "training.num_train_epochs=2", "training.eval_steps=3", "training.save_steps=3", "data.max_length=64",
    ]),
}  # fmt: skip


def _pairs(folder: Path, n: int, offset: int = 0) -> Path:
    """n preference pairs of different lengths (conversational, as recipes/dpo.yaml reads them)."""
    path = folder / f"pairs-{offset}.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"Say word {i} politely" + " please" * (i % 4) + "."}],
             "chosen": [{"role": "assistant", "content": f"Of course: word {i}, kindly."}],
             "rejected": [{"role": "assistant", "content": f"WORD {i}! " * (1 + i % 3)}]}
            for i in range(offset, offset + n)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("name", sorted(LATER_EPOCH))
def test_kill_in_a_later_epoch_and_resume_with_the_recipe_defaults(tmp_path, tiny_model, cache, name):
    """SIGKILL after a checkpoint in the second epoch or later, resume with training.resume=auto: every step's loss
    equals the uninterrupted run's exactly (float32, no dropout), whatever order the default sampler draws."""
    from llm_tune.train.checkpoints import latest_complete

    file, per_epoch, overrides = LATER_EPOCH[name]
    overrides = [f"model.name_or_path={tiny_model}", "model.dtype=float32", "strategy.lora_dropout=0.0",
                 "training.logging_steps=1", *overrides]  # fmt: skip
    if name == "sentiment":
        rows = (ROOT / "data" / "sentiment" / "train.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / "train.jsonl").write_text("".join(rows[:48]))
        overrides.append(f"data.train={tmp_path / 'train.jsonl'}")
    if name == "mixture":
        rows = (ROOT / "data" / "instruct" / "train.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / "a.jsonl").write_text("".join(rows[:40]))
        (tmp_path / "b.jsonl").write_text("".join(rows[40:]))
        overrides.append(
            f"data.train=[{{path: {tmp_path / 'a.jsonl'}, weight: 1}}, {{path: {tmp_path / 'b.jsonl'}, weight: 2}}]"
        )
    if name == "dpo":
        overrides += [f"data.train={_pairs(tmp_path, 12)}", f"data.validation={_pairs(tmp_path, 4, offset=100)}"]
    recipe = ROOT / "recipes" / file
    run_cli(recipe, f"output_dir={tmp_path / 'whole'}", *overrides, env=cache)

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    process = start(recipe, log, cache, f"output_dir={out}", *overrides)
    later = lambda: (c := latest_complete(out / "checkpoints")) is not None and int(c.name.split("-")[1]) > per_epoch  # noqa: E731
    wait_for(later, process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = int(latest_complete(out / "checkpoints").name.split("-")[1])
    assert not (out / "adapter").exists()
    run_cli(recipe, f"output_dir={out}", *overrides, "training.resume=auto", env=cache)

    expected, got = step_losses(tmp_path / "whole"), step_losses(out)
    print(f"\n{name}: killed after checkpoint-{killed_at} (epoch {killed_at // per_epoch + 1}, {per_epoch} steps an"
          " epoch); step: uninterrupted | killed+resumed | difference")  # fmt: skip
    for step in expected:
        print(
            f"{step:3d}: {expected[step]:.8f} | {got.get(step, float('nan')):.8f} | {got.get(step, 0) - expected[step]:.1e}"
        )
    assert sorted(got) == sorted(expected) and len(expected) >= 2 * per_epoch
    assert killed_at < max(expected) and killed_at > per_epoch
    assert got == expected  # float32 on one process: bit for bit
    # Throughput counts only what the resumed process trained, not the tokens its checkpoint restored.
    history = json.loads((tmp_path / "whole" / "trainer_state.json").read_text())["log_history"]
    restored = next(e["num_input_tokens_seen"] for e in history if e["step"] == killed_at and "loss" in e)
    whole, resumed = (json.loads((o / "metrics.json").read_text()) for o in (tmp_path / "whole", out))
    assert whole["run_tokens"] == whole["train_tokens"] == resumed["train_tokens"]
    assert resumed["run_tokens"] == resumed["train_tokens"] - restored > 0
    assert resumed["tokens_per_s"] == pytest.approx(resumed["run_tokens"] / resumed["train_runtime_s"], rel=1e-3)


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, tiny_model, data_dir, cache):
    from llm_tune.train.checkpoints import is_complete

    # Steps enough that the run is still training when the signal comes, however fast the machine.
    recipe = resume_recipe(tmp_path, tiny_model, data_dir, "interrupted", max_steps=100_000, save_steps=200_000)
    log = tmp_path / "interrupted.log"
    process = start(recipe, log, cache, "training.seed=7")
    # A plain progress line: the log is a file, not a terminal. The first one comes at step 1 (logging_first_step).
    wait_for(lambda: re.search(r"step [1-9]\d*/100000", log.read_text()), process, log)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert f"resume with: python -m llm_tune {recipe} training.seed=7 training.resume=auto" in text
    saved = [p for p in (tmp_path / "interrupted" / "checkpoints").glob("checkpoint-*")]
    assert len(saved) == 1 and is_complete(saved[0])
    assert f"checkpoint saved in {saved[0]}" in text


def test_completeness_marker_catches_missing_and_truncated_files(tmp_path):
    from llm_tune.errors import UserError
    from llm_tune.train.checkpoints import is_complete, latest_complete, mark_complete, resolve_resume

    checkpoints = tmp_path / "out" / "checkpoints"
    for step in (2, 4, 10):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "optimizer.pt").write_bytes(b"x" * 64)
        mark_complete(folder, step)
    assert latest_complete(checkpoints).name == "checkpoint-10"
    (checkpoints / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 10)  # truncated after the marker
    (checkpoints / "checkpoint-4" / "optimizer.pt").unlink()
    assert not is_complete(checkpoints / "checkpoint-10") and not is_complete(checkpoints / "checkpoint-4")
    assert latest_complete(checkpoints).name == "checkpoint-2"
    assert resolve_resume("auto", checkpoints) == str(checkpoints / "checkpoint-2")
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resolve_resume(str(checkpoints / "checkpoint-10"), checkpoints)
    assert resolve_resume("auto", tmp_path / "empty" / "checkpoints") is None


def test_a_live_run_holds_its_folder_and_a_changed_recipe_cannot_resume(tmp_path, tiny_model, data_dir, cache):
    from llm_tune.train.checkpoints import latest_complete

    recipe = resume_recipe(tmp_path, tiny_model, data_dir, "held", max_steps=100_000, save_steps=2)
    log = tmp_path / "held.log"
    process = start(recipe, log, cache)
    wait_for(lambda: latest_complete(tmp_path / "held" / "checkpoints") is not None, process, log)
    second = run_cli(recipe, check=False, env=cache)
    assert second.returncode == 2, second.stderr
    assert f"output_dir: {tmp_path / 'held'} is in use by a live run (pid {process.pid})" in second.stderr
    process.kill()  # the kernel releases the lock of a killed run
    process.wait(timeout=60)
    changed = run_cli(recipe, "training.resume=auto", "training.learning_rate=0.5", "training.seed=3", check=False,
                      env=cache)  # fmt: skip
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "training.resume: training.learning_rate was 0.001 in the checkpointed run, now 0.5" in changed.stderr
    assert "training.resume: training.seed was 42 in the checkpointed run, now 3" in changed.stderr
    # What only changes logging, saving or evaluation may differ.
    from llm_tune.run_folder import RunFolder
    from llm_tune.train.checkpoints import check_resumable

    held = RunFolder(tmp_path / "held")
    later = held.read_recipe().model_copy(deep=True)
    later.training.logging_steps, later.training.save_steps, later.training.resume = 7, 1000, "auto"
    check_resumable(held, later)


def _checkpointed(tmp_path, tiny_model, data_dir, processes: int, **training):
    """A run folder as a checkpointed run leaves it: its resolved recipe and environment.json."""
    from llm_tune.recipe.schema import Recipe
    from llm_tune.run_folder import RunFolder, write_json

    recipe = Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "run", training=training))
    run = RunFolder(tmp_path / "run")
    run.root.mkdir(parents=True)
    run.write_recipe(recipe)
    write_json(run.environment, {"processes": processes})
    return run, recipe


@pytest.mark.fast
def test_a_resume_under_another_global_batch_is_refused_and_another_layout_of_it_allowed(
    tmp_path, tiny_model, data_dir, monkeypatch
):
    """Checkpointed with 2 x 2 accumulation x 2 processes (global 8): resumed in one process with 2 x 2 it would
    train another order and skip rows never trained; 4 x 2 in one process is the same global batch."""
    from llm_tune.errors import UserError
    from llm_tune.train.checkpoints import check_resumable

    run, recipe = _checkpointed(tmp_path, tiny_model, data_dir, 2, per_device_train_batch_size=2,
                                gradient_accumulation_steps=2)  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "1")
    resumed = recipe.model_copy(update={"training": recipe.training.model_copy(update={"resume": "auto"})})
    with pytest.raises(UserError, match=r"the global batch was 8 \(2 x 2 accumulation x 2 processes\).*now 4"):
        check_resumable(run, resumed)
    relaid = resumed.training.model_copy(update={"per_device_train_batch_size": 4})
    check_resumable(run, resumed.model_copy(update={"training": relaid}))


@pytest.mark.fast
def test_a_resume_may_turn_on_skip_bad_rows(tmp_path, tiny_model, data_dir):
    """A stream stopped at a bad row advises data.skip_bad_rows: true; the rows before it trained the same either
    way, so resuming with it is the same training (once refused as a changed recipe)."""
    from llm_tune.train.checkpoints import check_resumable

    run, recipe = _checkpointed(tmp_path, tiny_model, data_dir, 1)
    skipping = recipe.data.model_copy(update={"skip_bad_rows": True})
    check_resumable(run, recipe.model_copy(update={"data": skipping}))
