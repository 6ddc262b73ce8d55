"""`make lean`: every shipped recipe trains one step and runs its end-of-run evaluation in a virtual environment that
holds llm_tune's required dependencies only (`pip install .`, no extras, none of the test tools). A module that
arrives only through an extra or the test extra (scipy once came with scikit-learn) fails here, where a user's
`pip install llm_tune` would. Each recipe runs on a tiny random model with the default model's tokenizer, its own
data; a recipe whose feature needs an extra must stop at once with the one line naming it.

Run by the lean venv's python: `.venv-lean/bin/python .ci/lean_recipes.py [RECIPE_NAME ...]`. Prints a table;
exits 1 on a failure. The tiny model has 6 blocks, so every recipe's block counts fit it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
EXTRA_LINE = "pip install 'llm_tune["  # how a missing optional package is said (llm_tune/extras.py)


def tiny_model(out: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> int:
    extras = [m for m in ("sklearn", "pytest", "matplotlib", "gguf", "bitsandbytes", "optuna") if _importable(m)]
    if extras:
        print(f"not a lean environment: {extras} importable; run with .venv-lean/bin/python", file=sys.stderr)
        return 1
    wanted = set(sys.argv[1:])  # recipe names to run (default: every one)
    work = Path(tempfile.mkdtemp(prefix="llm-tune-lean-"))
    model = tiny_model(work / "tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "cache")}
    recipes = [r for r in sorted((ROOT / "recipes").glob("*.yaml")) if not wanted or r.stem in wanted]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: each is one process of a tiny model
        results = list(pool.map(lambda r: _run(r, model, work, env), recipes))
    print(f"{'recipe':<24} {'result':<10} {'s':>5}  last line")
    for recipe, (result, seconds, lines) in zip(recipes, results):
        print(f"{recipe.name:<24} {result:<10} {seconds:5.0f}  {lines[-1][:100]}", flush=True)
        if result == "FAILED":
            print("\n".join(lines[-20:]), file=sys.stderr)
    failed = sum(result == "FAILED" for result, _, _ in results)
    return 1 if failed else 0


def _run(recipe: Path, model: Path, work: Path, env: dict[str, str]) -> tuple[str, float, list[str]]:
    """One step of the recipe on the tiny model: 'trained', 'extra' (refused at once naming its extra) or 'FAILED'."""
    chained = "\n---" in recipe.read_text()
    overrides = [f"model.name_or_path={model}", "training.max_steps=1", "training.save_steps=1", "export=null"]
    if not chained:  # a chained recipe's stages name each other's folders: they stay where the recipe puts them
        overrides.append(f"output_dir={work / recipe.stem}")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llm_tune", str(recipe.relative_to(ROOT)), *overrides], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    if done.returncode == 0:
        result = "trained"
    elif done.returncode == 2 and EXTRA_LINE in lines[-1] and "Traceback" not in done.stderr:
        result = "extra"
    else:
        result = "FAILED"
    return result, time.perf_counter() - started, lines


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
