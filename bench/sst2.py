"""SST-2 benchmark: head x strategy -> train examples, train minutes, tokens/s, validation accuracy.

Each configuration is a real run of `python -m llm_tune recipes/sentiment.yaml` on a seeded sample of
SST-2's train split, scored by the run's own end-of-training evaluation; the first rows are the untrained model
scored the same way (zero-shot). Timings are from this one run.

Two uses, kept apart so that the reported figure has not chosen the recipe:
- selection (the default): configurations are compared on a split carved from SST-2 *train* (seeded, disjoint
  from the training sample), never on SST-2 validation;
- --samples N: the shipped recipe as it is, trained on N seeded 4,000-row samples and scored once each on SST-2
  validation; the table ends with the mean and the minimum accuracy and the longest training time.

    python bench/sst2.py                                   # selection: the default grid, carved split
    python bench/sst2.py --train-rows 1000 --configs sequence:lora generate:lora
    python bench/sst2.py --samples 3                       # the shipped recipe on seeds 0, 1, 2 -> validation
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
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
    return _write(dst, lines)


def carve(src: Path, work: Path, train_rows: int, selection_rows: int, seed: int) -> tuple[Path, Path]:
    """A seeded training sample and, from the rows left, a selection split: both from SST-2 train."""
    lines = src.read_text(encoding="utf-8").splitlines()
    picked = random.Random(seed).sample(range(len(lines)), train_rows + selection_rows)
    train = _write(work / f"train-{seed}.jsonl", [lines[i] for i in picked[:train_rows]])
    return train, _write(work / f"selection-{seed}.jsonl", [lines[i] for i in picked[train_rows:]])


def _write(dst: Path, lines: list[str]) -> Path:
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
from llm_tune.classification.commands import evaluate_file
recipe = load_recipe("recipes/sentiment.yaml", ["classification.head={head}"])
tok = load_tokenizer(recipe.model)
labels = recipe.classification.labels
model = load_model(recipe.model, tok, labels=labels if "{head}" == "sequence" else None)
if "{head}" == "sequence":
    init_head_from_label_tokens(model, tok, labels)
evaluate_file(recipe, model, tok, {str(val)!r}, 32, Path({str(work / f"zero-shot-{head}")!r}))
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True, capture_output=True)
    return json.loads((work / f"zero-shot-{head}" / "metrics.json").read_text())["accuracy"]


def train(config: str, train_file: Path, val: Path, work: Path, name: str | None = None) -> dict:
    head, kind, *overrides = config.split(":")
    out = work / (name or config.replace(":", "_").replace("=", "-").replace("/", "_"))
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
    parser.add_argument("--selection-rows", type=int, default=872, help="rows of the split carved from train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="head:strategy[:key=value...]")
    parser.add_argument("--samples", type=int, default=0, help="the shipped recipe on seeds 0..N-1, on validation")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-sst2")
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sst2.json")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    if args.samples:
        report = samples(args)
    else:
        report = selection(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def selection(args: argparse.Namespace) -> dict:
    """Configurations compared on the carved selection split (SST-2 validation is not read)."""
    train_file, held = carve(SST2 / "train.jsonl", args.work, args.train_rows, args.selection_rows, args.seed)
    rows = []
    if not args.no_zero_shot:
        for head in ("generate", "sequence"):
            rows.append((f"{head} (zero-shot)", 0, 0.0, 0.0, zero_shot(head, held, args.work)))
    for config in args.configs:
        m = train(config, train_file, held, args.work)
        rows.append((config, m["train_examples"], m["train_runtime_s"] / 60, m["tokens_per_s"], m["eval_accuracy"]))
        print(f"done {config}: accuracy {m['eval_accuracy']:.4f} in {m['train_runtime_s'] / 60:.1f} min", flush=True)
    print(f"\nSST-2 selection: {args.train_rows} train rows and {args.selection_rows} selection rows, both carved"
          f" from SST-2 train (seed {args.seed}); SST-2 validation not read")  # fmt: skip
    _table(rows)
    keys = ("config", "train_examples", "train_minutes", "tokens_per_s", "selection_accuracy")
    return {"mode": "selection", "seed": args.seed, "rows": [dict(zip(keys, r)) for r in rows]}


def samples(args: argparse.Namespace) -> dict:
    """The shipped recipe on seeded samples, each scored once on SST-2 validation."""
    val = sample(SST2 / "validation.jsonl", args.work / "validation.jsonl", None, 0)
    rows = []
    for seed in range(args.samples):
        train_file = sample(SST2 / "train.jsonl", args.work / f"sample-{seed}.jsonl", args.train_rows, seed)
        m = train("sequence:lora", train_file, val, args.work, name=f"recipe-seed{seed}")  # the recipe's own
        rows.append((f"recipes/sentiment.yaml, sample seed {seed}", m["train_examples"], m["train_runtime_s"] / 60,
                     m["tokens_per_s"], m["eval_accuracy"]))  # fmt: skip
        print(f"done seed {seed}: accuracy {m['eval_accuracy']:.4f} in {m['train_runtime_s'] / 60:.1f} min", flush=True)
    accuracies = [r[4] for r in rows]
    print(f"\nSST-2 validation (872 rows), recipes/sentiment.yaml on {args.samples} seeded {args.train_rows}-row"
          " samples of SST-2 train")  # fmt: skip
    _table(rows)
    mean, low, longest = statistics.mean(accuracies), min(accuracies), max(r[2] for r in rows)
    print(f"mean accuracy {mean:.4f}, minimum {low:.4f}, longest training {longest:.1f} min")
    keys = ("run", "train_examples", "train_minutes", "tokens_per_s", "validation_accuracy")
    return {"mode": "samples", "rows": [dict(zip(keys, r)) for r in rows], "mean_accuracy": mean,
            "min_accuracy": low, "max_train_minutes": longest}  # fmt: skip


def _table(rows: list[tuple]) -> None:
    print(f"{'run':<44} {'examples':>8} {'train min':>9} {'tokens/s':>9} {'accuracy':>8}")
    for name, examples, minutes, tps, acc in rows:
        print(f"{name:<44} {examples:>8} {minutes:>9.1f} {tps:>9.1f} {acc:>8.4f}")


if __name__ == "__main__":
    main()
