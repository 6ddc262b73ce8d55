"""SST-2 benchmark: head x strategy -> train examples, train minutes, tokens/s, validation accuracy.

Each configuration is a real run of `python -m llm_tune recipes/sentiment.yaml` on a seeded sample of
SST-2's train split, scored on its validation split by the run's own end-of-training evaluation; the
first rows are the untrained model scored the same way (zero-shot). Timings are from this one run.

    python bench/sst2.py                                   # the default grid, 4,000 train rows
    python bench/sst2.py --train-rows 1000 --configs sequence:lora generate:lora
    python bench/sst2.py --configs "sequence:lora:strategy.layers_to_transform=null"
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
DEFAULT_CONFIGS = ["sequence:lora", "generate:lora", "sequence:frozen"]


def sample(src: Path, dst: Path, rows: int | None, seed: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()
    if rows is not None and rows < len(lines):
        lines = random.Random(seed).sample(lines, rows)
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def zero_shot(head: str, val: Path, work: Path) -> float:
    """The untrained model's accuracy with the same prompt, head and scoring as a trained run."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from llm_tune.recipe.loading import load_recipe
from llm_tune.model.loading import load_model, load_tokenizer
from llm_tune.classification.heads import init_head_from_label_tokens
from llm_tune.classification.scoring import evaluate_classifier
recipe = load_recipe("recipes/sentiment.yaml", ["classification.head={head}"])
tok = load_tokenizer(recipe.model)
labels = recipe.classification.labels
model = load_model(recipe.model, tok, labels=labels if "{head}" == "sequence" else None)
if "{head}" == "sequence":
    init_head_from_label_tokens(model, tok, labels)
evaluate_classifier(recipe, model, tok, {str(val)!r}, 32, Path({str(work / f"zero-shot-{head}")!r}))
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True, capture_output=True)
    return json.loads((work / f"zero-shot-{head}" / "metrics.json").read_text())["accuracy"]


def train(config: str, train_file: Path, val: Path, work: Path) -> dict:
    head, kind, *overrides = config.split(":")
    out = work / config.replace(":", "_").replace("=", "-").replace("/", "_")
    cmd = [
        sys.executable, "-m", "llm_tune", "recipes/sentiment.yaml",
        f"classification.head={head}", f"strategy.kind={kind}",
        f"data.train={train_file}", f"data.validation={val}", f"output_dir={out}", "training.report_to=none",
        *overrides,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_minutes"] = (time.perf_counter() - started) / 60
    return metrics


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--val-rows", type=int, default=None, help="default: all 872")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="head:strategy[:key=value...]")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-sst2")
    parser.add_argument("--no-zero-shot", action="store_true")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    train_file = sample(SST2 / "train.jsonl", args.work / "train.jsonl", args.train_rows, args.seed)
    val = sample(SST2 / "validation.jsonl", args.work / "validation.jsonl", args.val_rows, args.seed)
    rows = []
    if not args.no_zero_shot:
        for head in ("generate", "sequence"):
            rows.append((f"{head} (zero-shot)", 0, 0.0, 0.0, zero_shot(head, val, args.work)))
    for config in args.configs:
        m = train(config, train_file, val, args.work)
        rows.append((config, m["train_examples"], m["train_runtime_s"] / 60, m["tokens_per_s"], m["eval_accuracy"]))
        print(f"done {config}: accuracy {m['eval_accuracy']:.4f} in {m['train_runtime_s'] / 60:.1f} min", flush=True)

    print(f"\nSST-2: {args.train_rows} train rows (seed {args.seed}), validation {args.val_rows or 872} rows")
    print(f"{'head:strategy':<44} {'examples':>8} {'train min':>9} {'tokens/s':>9} {'accuracy':>8}")
    for name, examples, minutes, tps, acc in rows:
        print(f"{name:<44} {examples:>8} {minutes:>9.1f} {tps:>9.1f} {acc:>8.4f}")


if __name__ == "__main__":
    main()
