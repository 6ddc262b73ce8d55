"""The device check's sections (bench/gpu_check.sh runs each under its own time limit) and its report.

    python bench/gpu_check.py SECTION --work DIR [--cpu]     # versions, precision, sentiment, export, fsdp
    python bench/gpu_check.py report --work DIR --out DIR    # gpu_check.md + gpu_check.json from every section

Every run is the real entry point (`python -m llm_tune ...`, `accelerate launch ... -m llm_tune ...`) on a small
random Llama with SmolLM2's tokenizer (.device_bundle/, made by bench/gpu_bundle.sh). Each section writes
WORK/SECTION.json: {"verdict": "pass" | "fail" | "skipped", "why": ..., measured values}. --cpu is the dry run on
a machine without a GPU: the same plumbing on tiny sizes, the CPU's DDP config in place of FSDP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".device_bundle"
TOKENIZER = BUNDLE / "tokenizer"
ALPACA = BUNDLE / "data" / "code_alpaca_2k" / "train.jsonl"
SST2 = BUNDLE / "data" / "sst2"
PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "trl",
    "datasets",
    "bitsandbytes",
    "gguf",
    "pydantic",
    "huggingface_hub",
    "tokenizers",
    "pyarrow",
    "evaluate",
)


def run(cmd: list[str], log: Path) -> int:
    """Run a command to completion, its output into `log` and echoed; its exit code. (No limit of its own: the
    section's `timeout` in gpu_check.sh stops the whole process group.)"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print("$ " + " ".join(map(str, cmd)), flush=True)
    with log.open("w") as out:
        done = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text(errors="replace")
    print("".join(line + "\n" for line in text.splitlines() if "it/s]" not in line and "s/it]" not in line)[-3000:])
    return done.returncode


def llm_tune(*args: Any) -> list[str]:
    return [sys.executable, "-m", "llm_tune", *map(str, args)]


def small_llama(work: Path, cpu: bool) -> Path:
    """The checks' model: 4 blocks of 256 on the GPU; 2 of 64 for the CPU dry run."""
    return llama(work / "llama-tiny", 2, 64) if cpu else llama(work / "llama-small", 4, 256)


def llama(folder: Path, layers: int, hidden: int) -> Path:
    """A random Llama with SmolLM2's tokenizer and chat template: small enough to train in seconds, deep enough
    for the checks (its loss starts near ln(vocab) and falls fast on real rows)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=True,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def recipe(work: Path, name: str, model: Path, kind: str = "lora", steps: int = 20, **training: Any) -> Path:
    strategy: dict[str, Any] = {"kind": kind}
    if kind in ("lora", "qlora"):
        strategy.update(r=8, lora_alpha=16, lora_dropout=0.0)
    body = {
        "model": {"name_or_path": str(model), "dtype": "auto"},
        "strategy": strategy,
        "data": {"train": str(ALPACA), "format": "alpaca", "max_length": 256},
        "training": {"max_steps": steps, "learning_rate": 1e-3, "warmup_steps": 0, "per_device_train_batch_size": 8,
                     "logging_steps": 1, "save_steps": 1000, "report_to": "none", "group_by_length": False,
                     "gradient_checkpointing": False, **training},
        "output_dir": str(work / name),
    }  # fmt: skip
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def step_losses(run_dir: Path) -> dict[int, float]:
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def versions(work: Path, cpu: bool) -> dict[str, Any]:
    """What this machine imports (the carried wheels must win over the image's older ones)."""
    import importlib
    from importlib.metadata import version

    import torch

    found = {}
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            found[name] = f"{version(name)} ({Path(module.__file__).parent.parent})"
        except Exception as exc:  # a missing or broken package is what this section is for
            found[name] = f"MISSING: {type(exc).__name__}: {exc}"
    import llm_tune.pipeline  # noqa: F401  (every module a training run imports)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    ok = not any(v.startswith("MISSING") for v in found.values()) and (cpu or gpu != "none")
    return {"verdict": "pass" if ok else "fail", "gpu": gpu, "packages": found}


def speed(work: Path, cpu: bool) -> dict[str, Any]:
    """lora, qlora and full on the Llama-3.2-1B-shaped random model (bench/speed.py --device cuda): tokens/s, peak
    GPU memory (the run's torch.cuda.max_memory_allocated) and MFU against the H200's bf16 dense peak (989 TF).
    --cpu: the plumbing only (speed_plumbing)."""
    if cpu:
        return speed_plumbing()
    out = work / "speed.json"
    code = run(
        [
            sys.executable,
            ROOT / "bench" / "speed.py",
            "--device",
            "cuda",
            "--steps",
            "20",
            "--rows",
            "200",
            "--tokenizer",
            TOKENIZER,
            "--data",
            BUNDLE / "data",
            "--out",
            out,
        ],
        work / "speed.log",
    )
    if code != 0:
        return {"verdict": "fail", "why": f"bench/speed.py exit {code} (log: speed.log)"}
    summary = json.loads(out.read_text())["summary"]
    rows = [{"case": r["case"], "tokens_per_s": round(r["tokens_per_s"], 1), "s_per_step": round(r["s_per_step"], 3),
             "cuda_peak_gib": r.get("cuda_peak_gib"), "mfu": f"{r['pct_of_limit']:.1f}%"}
            for r in summary if r["case"] != "peer (trl)"]  # fmt: skip
    return {"verdict": "pass", "rows": rows}


def speed_plumbing() -> dict[str, Any]:
    """The CPU dry run of the speed section: its CUDA path needs a GPU; what can be checked here is that speed.py
    takes these arguments and reads the bundled rows and tokenizer."""
    sys.path.insert(0, str(ROOT / "bench"))
    import tempfile

    import speed as bench
    from transformers import AutoTokenizer

    sys.argv = ["speed.py", "--device", "cuda", "--tokenizer", str(TOKENIZER), "--data", str(BUNDLE / "data")]
    args = bench.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench.write_rows("alpaca", 200, Path(tmp), args.data).read_text().count("\n")
    vocab = len(AutoTokenizer.from_pretrained(args.tokenizer))
    return {
        "verdict": "skipped",
        "why": f"no GPU: speed.py --device cuda parses its arguments, writes {rows}"
        f" bundled rows and loads the bundled tokenizer ({vocab} tokens); the timed runs need the GPU",
    }


def precision(work: Path, cpu: bool) -> dict[str, Any]:
    """bfloat16 against float32 on the same rows and weights: full fine-tuning (every weight moves), 30 steps.
    Step 1 runs the same weights under different arithmetic: its difference is bfloat16's rounding alone, gated at
    1% of the loss (bfloat16 keeps 8 significant bits, 0.4% per rounding). Later steps follow different
    trajectories: their largest difference is gated at 5% of the loss's fall over the run (the signal)."""
    model = small_llama(work, cpu)
    steps = 4 if cpu else 30
    losses = {}
    for name, dtype in (("float32", "float32"), ("bf16-autocast", "auto"), ("bf16-weights", "bfloat16")):
        path = recipe(work, f"precision-{name}", model, kind="full", steps=steps, learning_rate=3e-4)
        if run(llm_tune(path, f"model.dtype={dtype}"), work / f"precision-{name}.log") != 0:
            return {"verdict": "fail", "why": f"the {name} run failed (log: precision-{name}.log)"}
        losses[name] = step_losses(work / f"precision-{name}")
    ref = losses["float32"]
    fall = ref[1] - min(ref.values())
    rows, ok = {}, fall > 0
    for name in ("bf16-autocast", "bf16-weights"):
        first = abs(losses[name][1] - ref[1])
        worst = max(abs(losses[name][s] - ref[s]) for s in ref)
        passed = first <= 0.01 * ref[1] and worst <= 0.05 * fall
        rows[name] = {"step1_abs_diff": first, "max_abs_diff": worst, "pass": passed}
        ok = ok and passed
    return {"verdict": "pass" if ok else "fail", "steps": steps, "float32_first_loss": ref[1],
            "float32_loss_fall": fall, "gates": "step 1 <= 1% of the loss; any step <= 5% of the fall",
            "vs_float32": rows, "losses": losses}  # fmt: skip


def sentiment(work: Path, cpu: bool) -> dict[str, Any]:
    """recipes/sentiment.yaml as shipped on SmolLM2-135M-Instruct, on the 4,000-row SST-2 sample the README's CPU
    result (0.9037) used: only where SMOLLM2_DIR names the model's folder (its weights are over the transfer limit)."""
    folder = Path(os.environ.get("SMOLLM2_DIR", ""))
    if not os.environ.get("SMOLLM2_DIR") or not (folder / "model.safetensors").is_file():
        return {
            "verdict": "skipped",
            "why": "SMOLLM2_DIR does not name a SmolLM2-135M-Instruct folder (the 540 MB"
            " weights are over the device's 64 MiB transfer limit; carry them and set SMOLLM2_DIR)",
        }
    out = work / "sentiment"
    extra = ["training.max_steps=4"] if cpu else []
    code = run(
        llm_tune(
            ROOT / "recipes" / "sentiment.yaml",
            f"model.name_or_path={folder}",
            f"data.train={SST2 / 'train.jsonl'}",
            f"data.validation={SST2 / 'validation.jsonl'}",
            f"output_dir={out}",
            "training.report_to=none",
            *extra,
        ),
        work / "sentiment.log",
    )
    if code != 0:
        return {"verdict": "fail", "why": f"exit {code} (log: sentiment.log)"}
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "verdict": "pass",
        "eval_accuracy": metrics.get("eval_accuracy"),
        "train_runtime_s": metrics.get("train_runtime_s"),
        "cpu_reference_accuracy": 0.9037,
    }


def export(work: Path, cpu: bool) -> dict[str, Any]:
    """A LoRA run trained on the GPU, merged (safetensors) and exported as GGUF: both exports verify themselves
    against the trained model (max |logit diff| within the dtype's tolerance) or are not written."""
    model = small_llama(work, cpu)
    path = recipe(work, "export-lora", model, steps=4 if cpu else 20)
    if run(llm_tune(path), work / "export-train.log") != 0:
        return {"verdict": "fail", "why": "training failed (log: export-train.log)"}
    results = {}
    for name, args in (("merged", ["--merge"]), ("gguf", ["--format", "gguf"])):
        code = run(llm_tune("export", work / "export-lora", *args), work / f"export-{name}.log")
        folder = work / "export-lora" / "export" / name
        verification = folder / "verification.json"
        gate = json.loads(verification.read_text())["gate"] if verification.is_file() else None
        results[name] = {"exit": code, "gate": gate}
    ok = all(r["exit"] == 0 and r["gate"] for r in results.values())
    return {"verdict": "pass" if ok else "fail", **results}


def fsdp(work: Path, cpu: bool) -> dict[str, Any]:
    """FSDP2 through the real launcher on one GPU (world size 1: the code path, not the scaling): a LoRA run that
    saves at step 3 of 6; the same run resumed from that checkpoint must log the same losses for steps 4-6 and end
    with the same adapter (gated at 1% of the adapter's largest weight: the signal); a QLoRA run (4-bit storage in
    bfloat16, LoRA weights cast to it); a merged export of the FSDP-saved adapter. --cpu: cpu-ddp.yaml."""
    from safetensors.torch import load_file

    model = small_llama(work, cpu)
    config = ROOT / "recipes" / "accelerate" / ("cpu-ddp.yaml" if cpu else "fsdp.yaml")
    launch = [Path(sys.executable).with_name("accelerate"), "launch", "--config_file", config, "--num_processes",
              "2" if cpu else "1", "--num_cpu_threads_per_process", "1", "-m", "llm_tune"]  # fmt: skip
    if not Path(launch[0]).exists():
        launch[:2] = [sys.executable, "-m", "accelerate.commands.launch"]
    dtype = "float32" if cpu else "auto"  # auto on the H200: float32 weights under bf16 autocast, as fsdp.yaml says
    lora = recipe(work, "fsdp-lora", model, steps=6, save_steps=3)
    if run([*launch, lora, f"model.dtype={dtype}"], work / "fsdp-lora.log") != 0:
        return {"verdict": "fail", "why": "the FSDP LoRA run failed (log: fsdp-lora.log)"}
    resumed = work / "fsdp-resumed"
    shutil.rmtree(resumed, ignore_errors=True)
    shutil.copytree(work / "fsdp-lora", resumed)
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-6")
    code = run(
        [*launch, lora, f"model.dtype={dtype}", f"output_dir={resumed}", "training.resume=auto"],
        work / "fsdp-resume.log",
    )
    if code != 0:
        return {"verdict": "fail", "why": "the FSDP resume failed (log: fsdp-resume.log)"}
    whole, again = step_losses(work / "fsdp-lora"), step_losses(resumed)
    a, b = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (work / "fsdp-lora", resumed))
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    scale = max(a[k].float().abs().max().item() for k in a if "lora_B" in k)
    same_losses = all(abs(whole[s] - again[s]) <= 1e-3 * abs(whole[s]) for s in (4, 5, 6))
    qlora = recipe(work, "fsdp-qlora", model, kind="qlora", steps=4)
    qlora_code = 0 if cpu else run([*launch, qlora, "model.dtype=bfloat16"], work / "fsdp-qlora.log")
    merge_code = run(llm_tune("export", work / "fsdp-lora", "--merge"), work / "fsdp-export.log")
    ok = same_losses and diff <= 0.01 * scale and qlora_code == 0 and merge_code == 0
    return {"verdict": "pass" if ok else "fail", "config": config.name,
            "losses_whole": whole, "losses_resumed": again, "adapter_max_abs_diff": diff, "lora_B_max_abs": scale,
            "qlora_exit": "not run on a CPU" if cpu else qlora_code, "merged_export_exit": merge_code}  # fmt: skip


SECTIONS = {
    "versions": versions,
    "speed": speed,
    "precision": precision,
    "sentiment": sentiment,
    "export": export,
    "fsdp": fsdp,
}


def report(work: Path, out: Path) -> None:
    """gpu_check.md (a table, one row per section) and gpu_check.json (every section's values) in `out`."""
    status = {}
    for line in (work / "status.jsonl").read_text().splitlines() if (work / "status.jsonl").is_file() else []:
        entry = json.loads(line)
        status[entry["section"]] = entry
    sections, lines = {}, ["| section | verdict | seconds | result |", "|---|---|---|---|"]
    for name, entry in status.items():
        path = work / f"{name}.json"
        result = (
            json.loads(path.read_text())
            if path.is_file()
            else {"verdict": "fail", "why": "timed out" if entry["exit"] == 124 else f"exit {entry['exit']}"}
        )
        sections[name] = {**result, "exit": entry["exit"], "seconds": entry["seconds"]}
        lines.append(f"| {name} | {result.get('verdict')} | {entry['seconds']} | {summary(name, result)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_check.json").write_text(json.dumps(sections, indent=2) + "\n")
    print("\n".join(lines))


def summary(name: str, r: dict[str, Any]) -> str:
    if r.get("why"):
        return str(r["why"])
    if name == "versions":
        return f"{r['gpu']}; " + ", ".join(f"{k} {v.split()[0]}" for k, v in r["packages"].items())
    if name == "speed":
        return "; ".join(
            f"{row['case']}: {row['tokens_per_s']} tok/s, {row['s_per_step']} s/step, peak"
            f" {row['cuda_peak_gib']} GiB, MFU {row['mfu']}"
            for row in r["rows"]
        )
    if name == "precision":
        return (
            f"float32 loss {r['float32_first_loss']:.3f}, falls {r['float32_loss_fall']:.3f} in {r['steps']} steps; "
            + "; ".join(
                f"{k}: step 1 |d| {v['step1_abs_diff']:.2e}, max |d| {v['max_abs_diff']:.2e}"
                for k, v in r["vs_float32"].items()
            )
            + f" ({r['gates']})"
        )
    if name == "sentiment":
        return f"accuracy {r['eval_accuracy']} (CPU: {r['cpu_reference_accuracy']}), {r['train_runtime_s']} s"
    if name == "export":
        return "; ".join(f"{k}: exit {v['exit']}, gate {v['gate']}" for k, v in r.items() if isinstance(v, dict))
    if name == "fsdp":
        return (
            f"{r['config']}: resumed steps 4-6 {[r['losses_resumed'].get(str(s), r['losses_resumed'].get(s)) for s in (4, 5, 6)]}"
            f" vs {[r['losses_whole'].get(str(s), r['losses_whole'].get(s)) for s in (4, 5, 6)]}; adapter max |d|"
            f" {r['adapter_max_abs_diff']:.2e} (lora_B max {r['lora_B_max_abs']:.2e}); qlora exit {r['qlora_exit']};"
            f" merged export exit {r['merged_export_exit']}"
        )
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=[*SECTIONS, "report"])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cpu", action="store_true", help="dry run without a GPU: tiny sizes, cpu-ddp.yaml")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.section == "report":
        return report(args.work, args.out or args.work)
    result = SECTIONS[args.section](args.work, args.cpu)
    (args.work / f"{args.section}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.section}: {result['verdict']}" + (f" ({result['why']})" if result.get("why") else ""))


if __name__ == "__main__":
    main()
