"""A streamed run on a file larger than one would load whole, killed and resumed: is the resume exact?

Builds N rows of Code Alpaca (distinct instructions, as bench/data.py does; 3,000,000 rows is about 1 GB), then runs
recipes/instruct-lora.yaml on SmolLM2-135M-Instruct with data.streaming three times: once uninterrupted, once killed
with SIGKILL after its checkpoint at --kill-after, and that run again with training.resume=auto. Prints the seconds to
the first step and the peak resident memory of each process, every step's loss (uninterrupted | resumed) and the
largest difference, and writes the JSON.

    python bench/stream.py                      # 3,000,000 rows, 12 steps, killed after checkpoint 8
    python bench/stream.py --rows 200000 --steps 8 --kill-after 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import ALPACA, BATCH, MAX_LENGTH, ROOT, build_rows, timed  # noqa: E402


def command(data: Path, out: Path, steps: int, save: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "llm_tune", "recipes/instruct-lora.yaml", f"data.train={data}", "data.validation=null",
        "data.streaming=true", f"training.max_steps={steps}", f"training.save_steps={save}", "training.logging_steps=1",
        f"data.max_length={MAX_LENGTH}", f"training.per_device_train_batch_size={BATCH}",
        "training.gradient_accumulation_steps=1", "training.report_to=none", f"output_dir={out}", *extra,
    ]  # fmt: skip


def step_losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def killed_after(cmd: list[str], env: dict[str, str], checkpoints: Path, step: int) -> int:
    """Start the run, SIGKILL it once checkpoint-`step` (or a later one) is complete; the checkpoint it reached."""
    from llm_tune.train.checkpoints import latest_complete

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while (done := latest_complete(checkpoints)) is None or int(done.name.split("-")[1]) < step:
        if proc.poll() is not None:
            raise SystemExit(f"the run ended (rc {proc.returncode}) before checkpoint-{step}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return int(done.name.split("-")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kill-after", type=int, default=8, help="the checkpoint after which the run is killed")
    parser.add_argument("--save-steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream-resume.json")
    parser.add_argument("--alpaca", type=Path, default=ALPACA, help="the Code Alpaca train file (../shared/data)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        data = build_rows(args.rows, work / "rows.jsonl", args.alpaca)
        size_gib = data.stat().st_size / 2**30
        print(f"{data.name}: {args.rows:,} rows, {size_gib:.2f} GiB", flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "c")}
        whole_cmd = command(data, work / "whole", args.steps, args.save_steps)
        first, seconds, peak = timed(whole_cmd, env)
        print(f"uninterrupted: first step after {first:.1f} s, {seconds:.1f} s in all, peak {peak:.2f} GiB", flush=True)
        killed_cmd = command(data, work / "killed", args.steps, args.save_steps)
        at = killed_after(killed_cmd, env, work / "killed" / "checkpoints", args.kill_after)
        print(f"killed with SIGKILL after checkpoint-{at}", flush=True)
        r_first, r_seconds, r_peak = timed([*killed_cmd, "training.resume=auto"], env)
        print(f"resumed: first step after {r_first:.1f} s, {r_seconds:.1f} s in all, peak {r_peak:.2f} GiB", flush=True)
        whole, resumed = step_losses(work / "whole"), step_losses(work / "killed")
        streamed = json.loads((work / "killed" / "metrics.json").read_text())["streaming"]

    print("\nstep  uninterrupted     resumed   difference")
    for step, loss in whole.items():
        print(f"{step:4d}  {loss:13.8f} {resumed.get(step, float('nan')):11.8f} {resumed.get(step, 0) - loss:11.1e}")
    worst = max(abs(resumed[s] - whole[s]) for s in whole) if sorted(whole) == sorted(resumed) else None
    print(f"\nlargest difference: {worst}; the resumed run's stream: {streamed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "rows": args.rows, "file_gib": round(size_gib, 3), "steps": args.steps, "killed_after": at,
        "uninterrupted": {"first_step_s": first, "seconds": seconds, "peak_gib": peak, "losses": whole},
        "resumed": {"first_step_s": r_first, "seconds": r_seconds, "peak_gib": r_peak, "losses": resumed},
        "largest_difference": worst, "resumed_stream": streamed,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
