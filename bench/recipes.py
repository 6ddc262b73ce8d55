"""Every shipped recipe for a few steps on its own model: seconds per step and tokens/s, in one table.

python bench/recipes.py              # 5 steps each
python bench/recipes.py --steps 10 recipes/instruct-lora.yaml recipes/chat-lora.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(recipe: Path, steps: int, work: Path) -> dict:
    out = work / recipe.stem
    cmd = [
        sys.executable, "-m", "llm_tune", str(recipe), f"training.max_steps={steps}", "training.logging_steps=1",
        "training.report_to=none", f"output_dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    resolved = (out / "recipe.resolved.yaml").read_text()
    metrics["kind"] = next(line.split(":")[1].strip() for line in resolved.splitlines() if line.startswith("  kind:"))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-recipes")
    args = parser.parse_args()
    recipes = args.recipes or sorted(p for p in (ROOT / "recipes").glob("*.yaml"))
    rows = []
    for recipe in recipes:
        m = run(recipe, args.steps, args.work)
        rows.append((recipe.name, m["kind"], m["train_steps"], m["train_runtime_s"] / m["train_steps"],
                     m["tokens_per_s"], m["train_loss"]))  # fmt: skip
        print(f"done {recipe.name}", flush=True)
    print(f"\n{'recipe':<22} {'strategy':<8} {'steps':>5} {'s/step':>7} {'tokens/s':>9} {'train_loss':>10}")
    for name, kind, steps, sps, tps, loss in rows:
        print(f"{name:<22} {kind:<8} {steps:>5} {sps:>7.2f} {tps:>9.1f} {loss:>10.4f}")


if __name__ == "__main__":
    main()
