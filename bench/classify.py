"""Classification beyond one label: the shipped recipes' scores and the class-weight, calibration and folded-GGUF checks.

Every number comes from a real run of `python -m llm_tune` on SmolLM2-135M-Instruct with the shared public data
(../shared/data, see its README), scored by the run's own end-of-training evaluation on the validation split:

- multilabel: recipes/multilabel.yaml on GoEmotions; validation micro-/macro-F1 and training minutes.
- regression: recipes/regression.yaml on STS-B sentence pairs; validation Pearson/Spearman and training minutes.
- weights: recipes/sentiment.yaml on a seeded SST-2 sample with 10% positives, with and without
  classification.class_weights=balanced (both with classification.calibrate=true); the minority (positive) class's
  recall on SST-2's balanced validation split, and the expected calibration error before/after temperature scaling.
- gguf: `export RUN --format gguf` on the unweighted run: the folded classifier reloaded from the GGUF file against
  the run's classifier on the validation rows (prediction agreement, largest probability difference).

    python bench/classify.py                       # every section, one after the other (run it on a quiet machine)
    python bench/classify.py --sections weights gguf

Prints a table and writes bench/results/classify.json.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SECTIONS = ("multilabel", "regression", "weights", "gguf")


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def llm_tune(*args: str) -> float:
    """Run `python -m llm_tune ARGS` here; the wall minutes. A failure stops the benchmark with its output's tail."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "llm_tune", *args], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"llm_tune {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return (time.perf_counter() - started) / 60


def train(recipe: str, out: Path, *overrides: str) -> dict[str, Any]:
    wall = llm_tune(recipe, f"output_dir={out}", "training.report_to=none", *overrides)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_minutes"] = wall
    return metrics


# The validation scores each shipped recipe reports, by section (metrics.json's eval_KEY).
RECIPE_SCORES = {
    "multilabel": ("micro_f1", "macro_f1", "subset_accuracy"),
    "regression": ("pearson", "spearman", "mse"),
}
# The shipped recipes read data/'s demo-size cuts; the benchmark measures them on the full files they were cut from.
RECIPE_DATA = {"multilabel": "goemotions", "regression": "stsb"}


def shipped_recipe(work: Path, section: str) -> dict[str, Any]:
    """recipes/SECTION.yaml as shipped but on ../shared's full files: its validation scores and training minutes."""
    full = DATA / RECIPE_DATA[section]
    m = train(
        f"recipes/{section}.yaml",
        work / section,
        f"data.train={full / 'train.jsonl'}",
        f"data.validation={full / 'validation.jsonl'}",
    )
    scores = {key: m[f"eval_{key}"] for key in RECIPE_SCORES[section]}
    return {**scores, "train_minutes": m["train_runtime_s"] / 60, "wall_minutes": m["wall_minutes"]}


def imbalanced_sample(dst: Path, rows: int, positive_share: float, seed: int) -> Path:
    """`rows` SST-2 train rows of which `positive_share` are positive, drawn with a seeded RNG."""
    lines = (DATA / "sst2" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    by_label: dict[str, list[str]] = {"positive": [], "negative": []}
    for line in lines:
        by_label[json.loads(line)["label"]].append(line)
    rng = random.Random(seed)
    positives = round(rows * positive_share)
    chosen = rng.sample(by_label["positive"], positives) + rng.sample(by_label["negative"], rows - positives)
    rng.shuffle(chosen)
    dst.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return dst


def weights(work: Path, rows: int, epochs: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    train_file = imbalanced_sample(work / "sst2-10pct-positive.jsonl", rows, 0.10, seed=0)
    common = (
        f"data.train={train_file}",
        f"data.validation={DATA / 'sst2' / 'validation.jsonl'}",
        f"training.num_train_epochs={epochs}",
        "classification.calibrate=true",
    )
    result: dict[str, Any] = {"train_rows": rows, "positive_share": 0.10, "epochs": epochs}
    for name, extra in (("unweighted", ()), ("balanced", ("classification.class_weights=balanced",))):
        out = work / name
        m = train("recipes/sentiment.yaml", out, *common, *extra)
        scores = json.loads((out / "eval" / "metrics.json").read_text())
        labels = scores["labels"]
        result[name] = {
            "positive_recall": scores["recall"][labels.index("positive")],
            "negative_recall": scores["recall"][labels.index("negative")],
            "accuracy": m["eval_accuracy"],
            "macro_f1": m["eval_macro_f1"],
            "ece_before": m["eval_ece_before"],
            "ece_after": m["eval_ece"],
            "temperature": m["temperature"],
            "train_minutes": m["train_runtime_s"] / 60,
            "run": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        }
    return result


def gguf(run: Path) -> dict[str, Any]:
    if not (run / "metrics.json").is_file():
        raise SystemExit(f"{run}: no finished run to export; run the weights section first")
    wall = llm_tune("export", str(run), "--format", "gguf")
    checks = json.loads(next((run / "export" / "gguf").rglob("verification.json")).read_text())
    found = {name: check for name, check in checks.get("checks", checks).items() if isinstance(check, dict)}
    return {"run": str(run), "wall_minutes": wall, "checks": found, "against_eval": gguf_against_eval(run)}


def gguf_against_eval(run: Path) -> dict[str, Any]:
    """The GGUF file read back by plain transformers, scored on the validation rows (softmax over the label tokens'
    next-token logits after the classifier's prompt), against the run's own `eval/predictions.jsonl`: the export
    checks compare with the float32 classifier; this compares with what `eval` reported (bf16 autocast here)."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from llm_tune.classification.heads import classifier_prompt_ids, label_token_ids
    from llm_tune.classification.rows import classification_rows
    from llm_tune.model.trained import load_trained

    trained = load_trained(run)  # the recipe and the tokenizer the run trained with
    recipe, tokenizer = trained.recipe, trained.tokenizer
    del trained
    folder = run / "export" / "gguf"
    name = json.loads((folder / "export.json").read_text())["gguf_file"]
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    labels = recipe.classification.labels
    tokens = [ids[0] for ids in label_token_ids(tokenizer, labels)]
    rows = classification_rows(recipe, str(recipe.data.validation), tokenizer)
    # eval/predictions.jsonl holds the rows the evaluation reported on (with calibrate, the half T was not fitted on)
    evaluated = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    by_text = {row["text"]: row for row in evaluated}
    same, worst = 0, 0.0
    with torch.inference_mode():
        for prompt, text in zip(rows["prompt"], rows["text"], strict=True):
            if (seen := by_text.get(text)) is None:
                continue
            ids = torch.tensor([classifier_prompt_ids(tokenizer, prompt, recipe.data.max_length)])
            probs = torch.softmax(lm(input_ids=ids).logits[0, -1, tokens].float(), -1).tolist()
            same += labels[max(range(len(labels)), key=probs.__getitem__)] == seen["prediction"]
            worst = max(worst, *(abs(p - seen["probabilities"][label]) for label, p in zip(labels, probs)))
    return {"rows": len(evaluated), "prediction_agreement": same / len(evaluated), "max_abs_probability_diff": worst}


def show(results: dict[str, Any]) -> None:
    if "multilabel" in results:
        r = results["multilabel"]
        print(f"GoEmotions (recipes/multilabel.yaml): micro-F1 {r['micro_f1']:.4f}  macro-F1 {r['macro_f1']:.4f}"
              f"  subset accuracy {r['subset_accuracy']:.4f}  training {r['train_minutes']:.1f} min")  # fmt: skip
    if "regression" in results:
        r = results["regression"]
        print(f"STS-B (recipes/regression.yaml): Pearson {r['pearson']:.4f}  Spearman {r['spearman']:.4f}"
              f"  MSE {r['mse']:.4f}  training {r['train_minutes']:.1f} min")  # fmt: skip
    if "weights" in results:
        r = results["weights"]
        print(
            f"\nSST-2 sample, {r['train_rows']} rows with 10% positives, {r['epochs']} epoch(s); SST-2 validation: T fitted"
            " on a seeded half, every figure on the other half (436 rows)"
        )
        print(f"{'class_weights':<14} {'pos recall':>10} {'neg recall':>10} {'accuracy':>8} {'macro-F1':>8}"
              f" {'ECE before':>10} {'ECE after':>9} {'T':>6} {'train min':>9}")  # fmt: skip
        for name in ("unweighted", "balanced"):
            w = r[name]
            print(f"{name:<14} {w['positive_recall']:>10.4f} {w['negative_recall']:>10.4f} {w['accuracy']:>8.4f}"
                  f" {w['macro_f1']:>8.4f} {w['ece_before']:>10.4f} {w['ece_after']:>9.4f} {w['temperature']:>6.3f}"
                  f" {w['train_minutes']:>9.1f}")  # fmt: skip
    if "gguf" in results:
        print(f"\nfolded classifier exported to GGUF from {results['gguf']['run']}:")
        for name, check in results["gguf"]["checks"].items():
            if "prediction_agreement" in check:
                print(f"  {name}: {check['rows']} rows, same prediction {check['prediction_agreement']:.2%},"
                      f" max |p diff| {check['max_abs_probability_diff']:.3g},"
                      f" max |label logit diff| {check['max_abs_logit_diff']:.3g}")  # fmt: skip
        if e := results["gguf"].get("against_eval"):  # absent from results written before this comparison
            print(f"  GGUF read back by transformers vs the run's eval/predictions.jsonl: {e['rows']} rows, same prediction"
                  f" {e['prediction_agreement']:.2%}, max |p diff| {e['max_abs_probability_diff']:.3g}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-classify")
    parser.add_argument("--weights-rows", type=int, default=2000, help="rows of the 10%%-positive SST-2 sample")
    parser.add_argument("--weights-epochs", type=int, default=1)
    parser.add_argument("--gguf-eval-only", action="store_true", help="gguf: compare an existing export with eval")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "classify.json")
    args = parser.parse_args()

    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results: dict[str, Any] = {}
    for section in args.sections:
        if section in RECIPE_SCORES:
            results[section] = shipped_recipe(args.work, section)
        elif section == "weights":
            results[section] = weights(args.work / "weights", args.weights_rows, args.weights_epochs)
        elif args.gguf_eval_only:  # the export is there already: only the comparison with the run's eval
            run = args.work / "weights" / "unweighted"
            results[section] = {**previous.get("gguf", {}), "against_eval": gguf_against_eval(run)}
        else:
            results[section] = gguf(args.work / "weights" / "unweighted")
        print(f"done {section}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)  # each section as it lands: a later failure keeps it
        args.out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    show(results)


if __name__ == "__main__":
    main()
