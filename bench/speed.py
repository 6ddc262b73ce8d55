"""Training speed of llm_tune against a peer, a plain TRL script (bench/peer_trl.py), on the same rows.

    python bench/speed.py                                    # every case, 10 steps, 1 repeat (CPU)
    python bench/speed.py --repeats 3 --cases instruct-lora chat-lora --threads 2
    python bench/speed.py --device cuda                      # Llama-3.2-1B-shaped random model, on a GPU

Every run is a fresh subprocess (`python -m llm_tune RECIPE ...` or the peer), aligned to the peer:
batch 8, no gradient accumulation, max_length 256, no warmup, no validation, no checkpoint, no logger.
Per data kind (alpaca and chat: the first --rows Code Alpaca rows; classification: the first SST-2
rows) the peer runs first, then each llm_tune case on that kind; with --repeats R the sequence repeats
R times, and the table shows the median of each. THE MACHINE MUST BE OTHERWISE IDLE: on 2 cores,
torch's threads oversubscribe as soon as anything else runs and the numbers come out ~10x off.

Columns:
    tokens/s         non-padding tokens trained / seconds inside trainer.train()
    s/step           those seconds / optimizer steps
    peak RSS GiB     the subprocess's peak resident memory (os.wait4's ru_maxrss), model loading included;
                     on a GPU the CUDA memory is not in it (the parent cannot see the child's)
    × peer           tokens/s over the peer's tokens/s on the same rows. Instruct rows tokenize the same
                     in both; sentiment.yaml's short system prompt makes its rows shorter than the peer's
                     (SmolLM2's default one), so compare tokens/s there, not s/step
    % of matmul limit  tokens/s x model FLOPs/token / the FLOP/s of the faster of a bfloat16 and a float32
                     square matmul timed in this run: what the cores can do at best (bfloat16 where the CPU
                     computes it natively, which is where llm_tune uses it; float32 elsewhere). --device cuda: MFU, against
                     --peak-tflops. FLOP convention: FLOPS_CONVENTION
The JSON (--out) holds the machine, the limits, the medians and every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from peer_trl import to_row  # bench/ is sys.path[0] when this file runs as a script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
BATCH, MAX_LENGTH = 8, 256  # the peer's shape; every llm_tune run is aligned to it
# case -> (rows kind, recipe, extra overrides)
CASES: dict[str, tuple[str, str, list[str]]] = {
    "instruct-lora": ("alpaca", "instruct-lora.yaml", []),
    # The same recipe with one default changed back, to show what each default is worth against the peer.
    "instruct-lora dropout0.05": ("alpaca", "instruct-lora.yaml", ["strategy.lora_dropout=0.05"]),
    "instruct-lora float32": ("alpaca", "instruct-lora.yaml", ["model.dtype=float32"]),
    "instruct-qlora": ("alpaca", "instruct-qlora.yaml", []),
    "instruct-full": ("alpaca", "instruct-full.yaml", []),
    "instruct-frozen": ("alpaca", "instruct-frozen.yaml", []),
    "chat-lora": ("chat", "chat-lora.yaml", []),
    "sentiment-sequence": ("classification", "sentiment.yaml", ["classification.head=sequence"]),
    "sentiment-generate": ("classification", "sentiment.yaml", ["classification.head=generate"]),
}
CUDA_CASES = ["instruct-lora", "instruct-qlora", "instruct-full"]
FLOPS_CONVENTION = (
    "model FLOPs of the linear layers only (attention scores, norms and gradient-checkpointing recompute "
    "not counted). N = per-token params of every block's q,k,v,o,gate,up,down plus the LM head (vocab x "
    "hidden; none for the sequence head). Forward 2N. Backward: 2 per param for the activation gradient "
    "of every linear layer from the output down to the lowest trained block, plus 2 per trained param "
    "for weight gradients (LoRA's adapters: ~0). So LoRA on all blocks 4N, full 6N, frozen "
    "2N + 4*N_top + 2*N_head, LoRA on the top blocks only 2N + 2*(N_top + N_head)."
)


def write_rows(kind: str, n: int, folder: Path, data: Path = DATA) -> Path:
    """The first n rows of the shared data set as kind's JSONL; chat rows are Code Alpaca as 2-turn chats."""
    src = data / ("sst2" if kind == "classification" else "code_alpaca_2k") / "train.jsonl"
    with src.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in islice(f, n)]
    if kind == "chat":
        rows = [{"messages": (r := to_row(row, "alpaca"))["prompt"] + r["completion"]} for row in rows]
    path = folder / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def child_env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:  # torch sizes its intra-op pool from OMP_NUM_THREADS at import
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_child(cmd: list[str], log: Path, env: dict[str, str]) -> int:
    """Run cmd to completion; its peak RSS in KiB. wait4 reports that child's own rusage, which
    subprocess.run would discard, and getrusage(RUSAGE_CHILDREN) would mix with earlier runs."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait on it again
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n--- {log} ---\n{tail}")
    return usage.ru_maxrss  # KiB on Linux


def run_peer(kind: str, rows: Path, steps: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"peer-{kind}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "peer_trl.py"), "--model", str(MODEL), "--data", str(rows),
           "--format", kind, "--batch", str(BATCH), "--max-length", str(MAX_LENGTH), "--steps", str(steps),
           "--out", str(out)]  # fmt: skip
    rss = run_child(cmd, work / f"peer-{kind}.log", env)
    r = json.loads(out.read_text())
    flops = flops_per_token(model_config(MODEL), "lora", None, True)  # LoRA on every block, LM head
    return {"case": "peer (trl)", "kind": kind, "peak_rss_kib": rss, "flops_per_token": flops,
            **{k: r[k] for k in ("tokens", "seconds", "steps", "gradient_checkpointing")}}  # fmt: skip


def run_case(case: str, rows: Path, steps: int, work: Path, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    kind, recipe, overrides = CASES[case]
    out = work / case
    # extra comes last: --device cuda's model and max_length win over the aligned ones
    cmd = [sys.executable, "-m", "llm_tune", str(ROOT / "recipes" / recipe), *overrides,
           f"training.per_device_train_batch_size={BATCH}", "training.gradient_accumulation_steps=1",
           f"data.max_length={MAX_LENGTH}", f"training.max_steps={steps}", "training.warmup_steps=0",
           f"data.train={rows}", "data.validation=null", "training.save_steps=100000", "training.report_to=none",
           f"output_dir={out}",
           *extra]  # fmt: skip
    rss = run_child(cmd, work / f"{case}.log", env)
    m = json.loads((out / "metrics.json").read_text())
    resolved = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    return {"case": case, "kind": kind, "tokens": m["train_tokens"], "seconds": m["train_runtime_s"],
            "steps": m["train_steps"], "peak_rss_kib": rss, **recipe_flops(resolved),
            "cuda_peak_gib": m.get("cuda_max_memory_allocated_gib"),
            "gradient_checkpointing": resolved["training"]["gradient_checkpointing"], "cmd": cmd[2:]}  # fmt: skip


def recipe_flops(resolved: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per token of a resolved recipe: its model's shape, strategy, head and the blocks that train."""
    s, cfg = resolved["strategy"], model_config(ROOT / resolved["model"]["name_or_path"])
    lm_head = not (resolved.get("task") == "classification" and resolved["classification"]["head"] == "sequence")
    top = s.get("trainable_layers") if s["kind"] == "frozen" else None
    if s["kind"] in ("lora", "qlora") and s.get("layers_to_transform"):
        top = cfg["num_hidden_layers"] - min(s["layers_to_transform"])  # the gradient stops at the lowest
    return {"strategy": s["kind"], "top_blocks": top, "flops_per_token": flops_per_token(cfg, s["kind"], top, lm_head)}


def model_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def flops_per_token(cfg: dict[str, Any], kind: str, top: int | None, lm_head: bool) -> float:
    """Model FLOPs per trained token under FLOPS_CONVENTION; top = the blocks the gradient reaches
    (None: all of them)."""
    h, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or h // heads
    q, kv = heads * head_dim, cfg.get("num_key_value_heads", heads) * head_dim
    block = 2 * h * q + 2 * h * kv + 3 * h * cfg["intermediate_size"]  # q,o + k,v + gate,up,down
    head = cfg["vocab_size"] * h if lm_head else 0
    n = layers * block + head
    reached = (layers if top is None else top) * block + head
    if kind == "full":
        return 6.0 * n
    trained = reached - head if kind == "frozen" else 0  # frozen: the top blocks' weights; the tied head stays
    return 2.0 * n + 2.0 * reached + 2.0 * trained


def matmul_flops(dtype: Any, device: str, n: int, seconds: float = 2.0) -> float:
    """FLOP/s of an n x n matmul in dtype: the machine's practical ceiling for training's dense layers. Timed for
    about `seconds` rather than a fixed count: a CPU without native bfloat16 emulates it ~50x slower."""
    import torch

    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warmup: thread pool, oneDNN/cuBLAS kernel choice
    sync()
    reps, started = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - started < seconds:
        torch.matmul(a, b)
        reps += 1
    sync()
    return 2.0 * n**3 * reps / (time.perf_counter() - started)


def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "load_average_1min": os.getloadavg()[0]}  # fmt: skip
    info.update({pkg: version(pkg) for pkg in ("torch", "transformers", "trl", "peft")})
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def llama_1b(folder: Path, tokenizer: Path = MODEL) -> Path:
    """Llama-3.2-1B's shape with random weights (speed does not depend on the values) and SmolLM2's
    tokenizer, for its chat template: its 49k ids all fall inside the 128k embedding."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=8192, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    with torch.device("cuda"):  # initialising 1.2B weights on the GPU takes seconds, not a minute
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()  # the children need the GPU's memory, not this process
    return folder


def summarise(runs: list[dict[str, Any]], limit: float) -> list[dict[str, Any]]:
    """Median over repeats per case (peers per rows kind), with the ratio to the peer on the same rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["case"], r["kind"]), []).append(r)
    rows = []
    for (case, kind), rs in groups.items():
        tps = statistics.median(r["tokens"] / r["seconds"] for r in rs)
        rows.append({"case": case, "kind": kind, "tokens_per_s": tps, "repeats": len(rs),
                     "s_per_step": statistics.median(r["seconds"] / max(r["steps"], 1) for r in rs),
                     "peak_rss_gib": statistics.median(r["peak_rss_kib"] for r in rs) / 2**20,
                     "flops_per_token": rs[0]["flops_per_token"], "cuda_peak_gib": rs[0].get("cuda_peak_gib"),
                     "pct_of_limit": 100.0 * tps * rs[0]["flops_per_token"] / limit})  # fmt: skip
    peers = {r["kind"]: r["tokens_per_s"] for r in rows if r["case"] == "peer (trl)"}
    for r in rows:
        r["x_peer"] = r["tokens_per_s"] / peers[r["kind"]] if r["kind"] in peers else None
    return rows


def print_table(rows: list[dict[str, Any]], limit_label: str) -> None:
    print(f"\n{'case':<26} {'rows kind':<15} {'tokens/s':>9} {'s/step':>8} {'peak RSS GiB':>12} "
          f"{'× peer':>7} {limit_label:>18}")  # fmt: skip
    for r in rows:
        ratio = f"{r['x_peer']:.2f}" if r["x_peer"] is not None else "-"
        print(f"{r['case']:<26} {r['kind']:<15} {r['tokens_per_s']:>9.1f} {r['s_per_step']:>8.2f} "
              f"{r['peak_rss_gib']:>12.2f} {ratio:>7} {r['pct_of_limit']:>17.2f}%")  # fmt: skip


def measure_limits(device: str, peak_tflops: float) -> dict[str, float]:
    """Matmul FLOP/s in bfloat16 and float32; `best_gflops` is the faster, the ceiling whichever dtype a run picks."""
    import torch

    n = 8192 if device == "cuda" else 2048  # 2048 leaves an H100 mostly idle
    # Both ceilings on the same shape: a smaller bf16 matmul would understate its ceiling and flatter the runs.
    limits = {f"{name}_matmul_gflops": matmul_flops(dtype, device, n) / 1e9
              for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}  # fmt: skip
    limits["best_gflops"] = max(limits["bf16_matmul_gflops"], limits["fp32_matmul_gflops"])
    if device == "cuda":
        torch.cuda.empty_cache()
        limits["peak_tflops"] = peak_tflops
    return limits


def parse_args() -> argparse.Namespace:
    doc = __doc__.replace("FLOPS_CONVENTION", FLOPS_CONVENTION)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on a CPU, 50 on a GPU")
    parser.add_argument("--rows", type=int, default=400, help="rows per kind; at least batch x steps are used")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=None, help="default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speed.json")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of every run; default: as is")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with code_alpaca_2k/ and sst2/ (default: ../shared/data)"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=MODEL, help="--device cuda: the tokenizer of the random model"
    )
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200 SXM: 989)")
    args = parser.parse_args()
    args.steps = args.steps or (50 if args.device == "cuda" else 10)
    args.cases = args.cases or (CUDA_CASES if args.device == "cuda" else list(CASES))
    return args


def main() -> None:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "NOTE: the machine must be otherwise idle; on 2 cores anything else running oversubscribes torch's "
        f"threads and the numbers come out ~10x off (1-min load average now: {os.getloadavg()[0]:.2f})"
    )
    machine = machine_info(args.device)  # before any run: the load average says whether the machine was idle
    limits = measure_limits(args.device, args.peak_tflops)
    work = Path(tempfile.mkdtemp(prefix="llm-tune-speed-"))
    env, n_rows = child_env(args.threads), max(args.rows, BATCH * args.steps)
    extra: list[str] = []
    if args.device == "cuda":
        model = llama_1b(work / "llama-1b-shape", args.tokenizer)
        extra = [f"model.name_or_path={model}", "model.dtype=bfloat16", "data.max_length=2048"]
    kinds = list(dict.fromkeys(CASES[c][0] for c in args.cases))
    files = {kind: write_rows(kind, n_rows, work, args.data) for kind in kinds}
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for kind in kinds:
            if args.device == "cpu":  # the peer is a float32 CPU script: no peer on the GPU
                runs.append({**run_peer(kind, files[kind], args.steps, work, env), "repeat": repeat})
                print(f"[{repeat}] peer {kind}: {runs[-1]['tokens'] / runs[-1]['seconds']:.1f} tokens/s", flush=True)
            for case in (c for c in args.cases if CASES[c][0] == kind):
                runs.append({**run_case(case, files[kind], args.steps, work, env, extra), "repeat": repeat})
                print(f"[{repeat}] {case}: {runs[-1]['tokens'] / runs[-1]['seconds']:.1f} tokens/s", flush=True)
    limit = args.peak_tflops * 1e12 if args.device == "cuda" else limits["best_gflops"] * 1e9
    summary = summarise(runs, limit)
    label = f"MFU (of {args.peak_tflops:.0f} TF)" if args.device == "cuda" else "% of matmul limit"
    print(f"\n{args.steps} steps x batch {BATCH}, median of {args.repeats}; bf16 matmul "
          f"{limits['bf16_matmul_gflops']:.0f} GFLOP/s, fp32 {limits['fp32_matmul_gflops']:.0f} GFLOP/s")  # fmt: skip
    print_table(summary, label)
    print("(valid only on an otherwise idle machine; FLOP convention and every run in the JSON)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"machine": machine, "limits": limits, "settings": {**settings, "batch": BATCH},
              "flops_convention": FLOPS_CONVENTION, "summary": summary, "runs": runs}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work)  # saved weights (a full run's too); kept when a run fails, for its log
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
