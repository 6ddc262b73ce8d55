"""Data preparation at scale: seconds and peak memory from a cold start to the first optimizer step.

For each size N, Code Alpaca's train rows are repeated to N rows with distinct instructions, and two whole
processes run one after the other, each with a cold `datasets` cache (a fresh HF_DATASETS_CACHE):

- llm_tune: `python -m llm_tune recipes/instruct-lora.yaml data.train=FILE training.max_steps=1 ...`
  (its row checks, rendering, tokenization and one LoRA step; the run folder's report included);
- plain TRL: `datasets.load_dataset("json")`, a map to prompt/completion, `SFTTrainer` with LoRA, one step.

Both use SmolLM2-135M-Instruct, data.max_length 256, batch 4. Two times per process: to the end of the first
optimizer step (what preparing the data delays; llm_tune's console line for step 1, a callback's line in the TRL
script), and the whole process (llm_tune then also saves the adapter, writes three greedy samples and the report).
Peak memory is the largest resident set of the process tree, sampled every 0.1 s.

    python bench/data.py                       # 20,000 and 200,000 rows
    python bench/data.py --sizes 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k" / "train.jsonl"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
MAX_LENGTH, BATCH = 256, 4


def build_rows(n: int, out: Path, source: Path = ALPACA) -> Path:
    """N rows cycling through Code Alpaca, each instruction made distinct by its copy number."""
    base = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with out.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = dict(base[i % len(base)])
            copy = i // len(base)
            if copy:
                row["instruction"] = f"{row['instruction']} (variant {copy})"
            f.write(json.dumps(row) + "\n")
    return out


def peer(data: str) -> None:
    """Plain TRL as a user writes it: load, map to prompt/completion, SFTTrainer + LoRA, one step."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    FirstStep = _first_step_callback()  # noqa: N806

    def to_pair(row: dict) -> dict:
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return {"prompt": [{"role": "user", "content": user}],
                "completion": [{"role": "assistant", "content": row["output"]}]}  # fmt: skip

    rows = load_dataset("json", data_files=data, split="train")
    rows = rows.map(to_pair, remove_columns=rows.column_names)
    model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32)
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="peer-data-"), per_device_train_batch_size=BATCH, max_length=MAX_LENGTH,
        max_steps=1, report_to="none", save_strategy="no", use_cpu=True,
    )  # fmt: skip
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, peft_config=lora)
    trainer.add_callback(FirstStep())
    trainer.train()


def _first_step_callback() -> type:
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.global_step == 1:
                print(PEER_MARK, flush=True)

    return FirstStep


PEER_MARK = "bench: first optimizer step done"
# llm_tune's first progress line (it prints one at the first logged step: step 1, or a resumed run's first), or the
# peer's callback line.
FIRST_STEP = re.compile(rf"\bstep \d+/\d+ \(|{PEER_MARK}")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds to the first optimizer step and to the end, and the process tree's peak resident GiB, of one
    command, which must exit 0."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    first_step, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first_step is None and FIRST_STEP.search(line):
            first_step = time.perf_counter() - started
    proc.wait()
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    if proc.returncode != 0 or first_step is None:
        said = "".join(lines)[-3000:]
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode} (first step seen: {first_step}):\n{said}")
    return first_step, seconds, peak / 2**30


def commands(data: Path, work: Path) -> dict[str, list[str]]:
    ours = [
        sys.executable, "-m", "llm_tune", "recipes/instruct-lora.yaml", f"data.train={data}", "data.validation=null",
        "training.max_steps=1", f"data.max_length={MAX_LENGTH}", f"training.per_device_train_batch_size={BATCH}",
        "training.gradient_accumulation_steps=1", "training.report_to=none", f"output_dir={work / 'run'}",
    ]  # fmt: skip
    return {"llm_tune": ours, "plain TRL": [sys.executable, __file__, "--peer", str(data)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each case (the median is shown)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data-prep.json")
    parser.add_argument("--alpaca", type=Path, default=ALPACA, help="the Code Alpaca train file (../shared/data)")
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run the plain-TRL process on this file
    args = parser.parse_args()
    if args.peer:
        return peer(args.peer)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        for n in args.sizes:
            data = build_rows(n, Path(tmp) / f"rows{n}.jsonl", args.alpaca)
            for case, command in commands(data, Path(tmp)).items():
                runs = []
                for repeat in range(args.repeats):
                    cache = Path(tmp) / f"cache-{n}-{case.replace(' ', '_')}-{repeat}"  # cold: a new cache each run
                    env = {
                        **os.environ,
                        "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "1",
                        "HF_DATASETS_CACHE": str(cache),
                    }
                    runs.append(timed(command, env))
                first = [f for f, _, _ in runs]
                whole = [w for _, w, _ in runs]
                results.append({"rows": n, "case": case, "first_step_s": first, "seconds": whole,
                                "median_first_step_s": statistics.median(first), "median_s": statistics.median(whole),
                                "peak_gib": max(g for _, _, g in runs)})  # fmt: skip
                print(f"{n:>9,} rows  {case:<10} first step {statistics.median(first):7.1f} s, whole"
                      f" {statistics.median(whole):7.1f} s, {results[-1]['peak_gib']:5.2f} GiB", flush=True)  # fmt: skip
    print(f"\n{'rows':>9}  {'case':<10} {'first step s':>12} {'spread':>7} {'x TRL':>6} {'whole s':>8} {'x TRL':>6}"
          f" {'peak GiB':>9}")  # fmt: skip
    for row in results:
        base = next(r for r in results if r["rows"] == row["rows"] and r["case"] == "plain TRL")
        spread = max(row["first_step_s"]) - min(row["first_step_s"])
        print(f"{row['rows']:>9,}  {row['case']:<10} {row['median_first_step_s']:12.1f} {spread:7.1f}"
              f" {row['median_first_step_s'] / base['median_first_step_s']:6.2f} {row['median_s']:8.1f}"
              f" {row['median_s'] / base['median_s']:6.2f} {row['peak_gib']:9.2f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"max_length": MAX_LENGTH, "batch": BATCH, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
