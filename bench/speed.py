"""Training speed of llm_tune against two peers, plain TRL scripts (bench/peer_trl.py), on the same rows.

    python bench/speed.py                                    # every case, 3 repeats, whole epochs (CPU)
    python bench/speed.py --rows 64 --pairs 12               # the README's table: 64 rows per kind, 12 DPO pairs
    python bench/speed.py --repeats 3 --cases instruct-lora sentiment-sequence --rows 120
    python bench/speed.py --device cuda                      # Llama-3.2-1B-shaped random model, on a GPU

The peers: `peer (trl)` is TRL's SFTConfig defaults plus peft's LoraConfig defaults with use_cpu=True and no
other switch (TRL keeps its bf16 autocast and activation checkpointing there); `peer (trl, no ckpt)` also turns
activation checkpointing off, as a user who reads the docs does. Every run is a fresh subprocess trained for one
whole epoch of the same --rows rows (alpaca and chat: the first Code Alpaca rows; classification: the first SST-2
rows), batch 8, no gradient accumulation, max_length 256, no warmup, no validation, no checkpoint, no logger: both
sides train exactly the same rows, in their own order. Per data kind the peers run first, then each llm_tune case;
with --repeats R (default 3) the sequence repeats R times, and the table shows the median of each with the spread
(lowest-highest tokens/s). THE MACHINE MUST BE OTHERWISE IDLE: on 2 cores, torch's threads oversubscribe as soon
as anything else runs and the numbers come out ~10x off.

Columns:
    tokens/s         non-padding tokens trained / seconds inside trainer.train(), median of the repeats
    spread           the lowest and highest tokens/s of the repeats
    s/step           those seconds / optimizer steps (median)
    RSS GiB          the subprocess's peak resident memory (os.wait4's ru_maxrss), model loading included;
                     on a GPU the CUDA memory is not in it (the parent cannot see the child's)
    × peer, × nockpt tokens/s over each peer's tokens/s on the same rows. Instruct rows tokenize the same in
                     both; sentiment.yaml's short system prompt makes its rows shorter than the peer's (SmolLM2's
                     default one), so compare tokens/s there, not s/step
    model %          tokens/s x MODEL FLOPs/token / the FLOP/s of the faster of a bfloat16 and a float32 square
                     matmul of the same shape timed in this run (--device cuda: against --peak-tflops, i.e. MFU)
    executed %       the same with the FLOPs each run actually executes
FLOP conventions: FLOPS_CONVENTION
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
    # DPO on HH-RLHF pairs against DPOTrainer with DPOConfig's defaults (max_length aligned; the template's own
    # system turn on both sides, as the peer renders it, so both train the same tokens)
    "dpo-lora": ("preference", "dpo.yaml", ["training.eval_steps=null", "data.system_prompt=null"]),
}
BATCHES = {"preference": 4}  # pairs per step (two answers each); the other kinds train BATCH rows
MAX_LENGTHS = {"preference": 384}  # recipes/dpo.yaml's; prompts are long multi-turn chats
CUDA_CASES = ["instruct-lora", "instruct-qlora", "instruct-full"]
FLOPS_CONVENTION = (
    "linear layers only (attention scores, norms and LoRA's small adapters not counted). N = the params of "
    "every block's q,k,v,o,gate,up,down (N_blocks) plus the LM head (vocab x hidden). MODEL FLOPs: 6N per "
    "trained token, the head at every position, whatever the strategy (the usual MFU convention: the same "
    "figure for every case, so it ranks them as tokens/s does). EXECUTED FLOPs: forward 2 per param; backward 2 "
    "per param for the activation gradient from the output down to the lowest trained block, plus 2 per "
    "trained param for weight gradients (LoRA: 0); activation checkpointing adds the blocks' forward again; the "
    "head counts only at the positions where it is computed: every token for the peers (TRL's chunked head "
    "projects every position; its padding is not counted), the label positions for llm_tune's label-only loss "
    "on a CPU (their share measured on the rows), none for the sequence head (labels x hidden)."
)


def write_rows(kind: str, n: int, folder: Path, data: Path = DATA) -> Path:
    """The first n rows of the shared data set as kind's JSONL; chat rows are Code Alpaca as 2-turn chats."""
    name = {"classification": "sst2", "preference": "hh_rlhf_helpful_pairs"}.get(kind, "code_alpaca_2k")
    src = data / name / "train.jsonl"
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


PEERS = {"peer (trl)": [], "peer (trl, no ckpt)": ["--no-checkpointing"]}


def run_peer(peer: str, kind: str, rows: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One whole epoch of the peer script on rows."""
    name = peer.replace(" ", "").replace("(", "-").replace(")", "").replace(",", "-")
    out = work / f"{name}-{kind}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "peer_trl.py"), "--model", str(MODEL), "--data", str(rows),
           "--format", kind, "--batch", str(BATCHES.get(kind, BATCH)), "--max-length",
           str(MAX_LENGTHS.get(kind, MAX_LENGTH)), "--epochs", "1",
           "--out", str(out), *PEERS[peer]]  # fmt: skip
    rss = run_child(cmd, work / f"{name}-{kind}.log", env)
    r = json.loads(out.read_text())
    cfg = model_config(MODEL)  # LoRA on every block; TRL's head projects every position
    executed = executed_flops_per_token(cfg, "lora", None, 1.0, r["gradient_checkpointing"])
    if kind == "preference":  # DPO's reference: one more forward pass over every token
        executed += reference_flops_per_token(cfg)
    return {"case": peer, "kind": kind, "peak_rss_kib": rss, "model_flops_per_token": model_flops_per_token(cfg),
            "executed_flops_per_token": executed, "head_share": 1.0,
            **{k: r[k] for k in ("tokens", "seconds", "steps", "gradient_checkpointing", "bf16")}}  # fmt: skip


def run_case(case: str, rows: Path, work: Path, env: dict[str, str], extra: list[str], share: float) -> dict[str, Any]:
    """One whole epoch of llm_tune's recipe on rows, aligned to the peers' shape."""
    kind, recipe, overrides = CASES[case]
    out = work / case.replace(" ", "-")
    # extra comes last: --device cuda's model and max_length win over the aligned ones
    cmd = [sys.executable, "-m", "llm_tune", str(ROOT / "recipes" / recipe), *overrides,
           f"training.per_device_train_batch_size={BATCHES.get(kind, BATCH)}", "training.gradient_accumulation_steps=1",
           f"data.max_length={MAX_LENGTHS.get(kind, MAX_LENGTH)}", "training.max_steps=-1", "training.num_train_epochs=1",
           "training.warmup_steps=0", f"data.train={rows}", "data.validation=null", "training.save_steps=100000",
           "training.report_to=none", f"output_dir={out}",
           *extra]  # fmt: skip
    rss = run_child(cmd, work / f"{out.name}.log", env)
    m = json.loads((out / "metrics.json").read_text())
    resolved = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    checkpointing = resolved["training"]["gradient_checkpointing"]
    return {"case": case, "kind": kind, "tokens": m["train_tokens"], "seconds": m["train_runtime_s"],
            "steps": m["train_steps"], "peak_rss_kib": rss, **recipe_flops(resolved, share, checkpointing),
            "cuda_peak_gib": m.get("cuda_max_memory_allocated_gib"), "gradient_checkpointing": checkpointing,
            "cmd": cmd[2:]}  # fmt: skip


def recipe_flops(resolved: dict[str, Any], share: float, checkpointing: bool) -> dict[str, Any]:
    """Both FLOP figures of a resolved recipe: its model's shape, strategy, head and the blocks that train."""
    s, cfg = resolved["strategy"], model_config(ROOT / resolved["model"]["name_or_path"])
    sequence = resolved.get("task") == "classification" and resolved["classification"]["head"] == "sequence"
    top = s.get("trainable_layers") if s["kind"] == "frozen" else None
    if s["kind"] in ("lora", "qlora") and s.get("layers_to_transform"):
        top = cfg["num_hidden_layers"] - min(s["layers_to_transform"])  # the gradient stops at the lowest
    head_share = 0.0 if sequence else share
    executed = executed_flops_per_token(cfg, s["kind"], top, head_share, checkpointing)
    if resolved.get("task") == "preference" and resolved["preference"]["method"] in ("dpo", "kto"):
        executed += reference_flops_per_token(cfg)
    return {"strategy": s["kind"], "top_blocks": top, "head_share": head_share,
            "model_flops_per_token": model_flops_per_token(cfg), "executed_flops_per_token": executed}  # fmt: skip


def model_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def linear_params(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(params of one block's linear layers, blocks, LM head params)."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    q, kv = heads * head_dim, cfg.get("num_key_value_heads", heads) * head_dim
    block = 2 * h * q + 2 * h * kv + 3 * h * cfg["intermediate_size"]  # q,o + k,v + gate,up,down
    return block, cfg["num_hidden_layers"], cfg["vocab_size"] * h


def model_flops_per_token(cfg: dict[str, Any]) -> float:
    """MODEL FLOPs per trained token under FLOPS_CONVENTION: 6N, the head at every position."""
    block, layers, head = linear_params(cfg)
    return 6.0 * (layers * block + head)


def executed_flops_per_token(
    cfg: dict[str, Any], kind: str, top: int | None, head_share: float, checkpointing: bool
) -> float:
    """EXECUTED FLOPs per trained token under FLOPS_CONVENTION; top = the blocks the gradient reaches (None: all),
    head_share = the share of tokens at which the LM head is computed."""
    block, layers, head_all = linear_params(cfg)
    head, blocks, reached = head_all * head_share, layers * block, (layers if top is None else top) * block
    forward = 2.0 * (blocks + head)
    activation_grad = 2.0 * (reached + head)
    weight_grad = {"full": 2.0 * (blocks + head), "frozen": 2.0 * reached}.get(kind, 0.0)  # frozen: the tied head stays
    recompute = 2.0 * reached if checkpointing else 0.0  # the checkpointed blocks' forward, again in the backward
    return forward + activation_grad + weight_grad + recompute


def reference_flops_per_token(cfg: dict[str, Any]) -> float:
    """A DPO reference's forward pass over a token, its head at every position (TRL scores the whole sequence)."""
    block, layers, head = linear_params(cfg)
    return 2.0 * (layers * block + head)


def label_share(kind: str, rows: Path, tokenizer: Path = MODEL) -> float:
    """The share of a kind's trained (non-padding) tokens that are answer tokens, where the label-only loss
    computes the LM head: the rows as the peer writes them, through the chat template, cut at MAX_LENGTH."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    if kind == "preference":
        return _answer_share(tok, rows, MAX_LENGTHS[kind])
    total = answer = 0
    for line in rows.read_text(encoding="utf-8").splitlines():
        row = to_row(json.loads(line), kind)
        turns = row.get("messages") or row["prompt"] + row["completion"]
        prompt_turns = turns[:-1]  # every format here ends with the one answer turn
        ids = tok.apply_chat_template(turns, return_dict=True)["input_ids"]
        prompt = tok.apply_chat_template(prompt_turns, add_generation_prompt=True, return_dict=True)["input_ids"]
        total += min(len(ids), MAX_LENGTH)
        answer += max(min(len(ids), MAX_LENGTH) - len(prompt), 0)
    return answer / total


def _answer_share(tok: Any, rows: Path, limit: int) -> float:
    """DPO trains both answers of a pair after the same prompt; the label-only head computes the answer positions."""
    total = answer = 0
    for line in rows.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt = len(tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"])
        for side in ("chosen", "rejected"):
            ids = tok.apply_chat_template(row["prompt"] + row[side], return_dict=True)["input_ids"]
            total += min(len(ids), limit)
            answer += max(min(len(ids), limit) - prompt, 0)
    return answer / total


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
    """Median and spread over repeats per case (peers per rows kind), with the ratio to each peer on the same rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["case"], r["kind"]), []).append(r)
    rows = []
    for (case, kind), rs in groups.items():
        rates = [r["tokens"] / r["seconds"] for r in rs]
        tps = statistics.median(rates)
        rows.append({"case": case, "kind": kind, "tokens_per_s": tps, "repeats": len(rs),
                     "tokens_per_s_min": min(rates), "tokens_per_s_max": max(rates), "tokens": rs[0]["tokens"],
                     "s_per_step": statistics.median(r["seconds"] / max(r["steps"], 1) for r in rs),
                     "peak_rss_gib": statistics.median(r["peak_rss_kib"] for r in rs) / 2**20,
                     "cuda_peak_gib": rs[0].get("cuda_peak_gib"), "head_share": rs[0]["head_share"],
                     "model_flops_per_token": rs[0]["model_flops_per_token"],
                     "executed_flops_per_token": rs[0]["executed_flops_per_token"],
                     "model_pct_of_limit": 100.0 * tps * rs[0]["model_flops_per_token"] / limit,
                     "executed_pct_of_limit": 100.0 * tps * rs[0]["executed_flops_per_token"] / limit})  # fmt: skip
    for peer, key in (("peer (trl)", "x_peer"), ("peer (trl, no ckpt)", "x_peer_no_ckpt")):
        rates = {r["kind"]: r["tokens_per_s"] for r in rows if r["case"] == peer}
        for r in rows:
            r[key] = r["tokens_per_s"] / rates[r["kind"]] if r["kind"] in rates else None
    return rows


def print_table(rows: list[dict[str, Any]], limit_label: str) -> None:
    print(f"\n{'case':<26} {'rows kind':<15} {'tokens/s':>9} {'spread':>13} {'s/step':>7} {'RSS GiB':>7} "
          f"{'× peer':>7} {'× nockpt':>8} {limit_label + ' model':>14} {'executed':>9}")  # fmt: skip
    for r in rows:
        ratios = [f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("x_peer", "x_peer_no_ckpt")]
        spread = f"{r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f}"
        print(f"{r['case']:<26} {r['kind']:<15} {r['tokens_per_s']:>9.1f} {spread:>13} {r['s_per_step']:>7.2f} "
              f"{r['peak_rss_gib']:>7.2f} {ratios[0]:>7} {ratios[1]:>8} {r['model_pct_of_limit']:>13.2f}% "
              f"{r['executed_pct_of_limit']:>8.2f}%")  # fmt: skip


def measure_limits(device: str, peak_tflops: float) -> dict[str, float]:
    """Matmul FLOP/s in bfloat16 and float32; `best_gflops` is the faster, the ceiling whichever dtype a run picks."""
    import torch

    n = 8192 if device == "cuda" else 2048  # 2048 leaves an H100 mostly idle
    # Both ceilings on the same shape: a smaller bf16 matmul would understate its ceiling and flatter the runs.
    limits = {f"{name}_matmul_gflops": matmul_flops(dtype, device, n) / 1e9
              for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}  # fmt: skip
    limits["matmul_n"] = n
    limits["best_gflops"] = max(limits["bf16_matmul_gflops"], limits["fp32_matmul_gflops"])
    if device == "cuda":
        torch.cuda.empty_cache()
        limits["peak_tflops"] = peak_tflops
    return limits


def parse_args() -> argparse.Namespace:
    doc = __doc__.replace("FLOPS_CONVENTION", FLOPS_CONVENTION)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="rows per kind, one whole epoch; default 120 (CPU)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=12,
        help="preference rows (pairs), one whole epoch; DPO steps cost ~5x an SFT step here",
    )
    parser.add_argument("--repeats", type=int, default=3)
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
    args.rows = args.rows or (400 if args.device == "cuda" else 120)
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
    env: dict[str, str] = child_env(args.threads)
    extra: list[str] = []
    if args.device == "cuda":
        model = llama_1b(work / "llama-1b-shape", args.tokenizer)
        extra = [f"model.name_or_path={model}", "model.dtype=bfloat16", "data.max_length=2048"]
    kinds = list(dict.fromkeys(CASES[c][0] for c in args.cases))
    files = {
        kind: write_rows(kind, args.pairs if kind == "preference" else args.rows, work, args.data) for kind in kinds
    }
    shares = {kind: label_share(kind, files[kind]) for kind in kinds}
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for kind in kinds:
            for peer in PEERS if args.device == "cpu" else ():  # CPU scripts: no peer on the GPU
                runs.append({**run_peer(peer, kind, files[kind], work, env), "repeat": repeat})
                print(f"[{repeat}] {peer} {kind}: {runs[-1]['tokens'] / runs[-1]['seconds']:.1f} tokens/s", flush=True)
            for case in (c for c in args.cases if CASES[c][0] == kind):
                runs.append({**run_case(case, files[kind], work, env, extra, shares[kind]), "repeat": repeat})
                print(f"[{repeat}] {case}: {runs[-1]['tokens'] / runs[-1]['seconds']:.1f} tokens/s", flush=True)
    limit = args.peak_tflops * 1e12 if args.device == "cuda" else limits["best_gflops"] * 1e9
    summary = summarise(runs, limit)
    label = "MFU" if args.device == "cuda" else "% limit"
    print(f"\none epoch of {args.rows} rows per kind x batch {BATCH} ({args.pairs} pairs x batch {BATCHES['preference']}), median of {args.repeats}; bf16 matmul "
          f"{limits['bf16_matmul_gflops']:.0f} GFLOP/s, fp32 {limits['fp32_matmul_gflops']:.0f} GFLOP/s "
          f"({limits['matmul_n']}x{limits['matmul_n']}); label share of the tokens: "
          + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))  # fmt: skip
    print_table(summary, label)
    print("(valid only on an otherwise idle machine; FLOP conventions and every run in the JSON)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"machine": machine, "limits": limits, "settings": {**settings, "batch": BATCH},
              "flops_convention": FLOPS_CONVENTION, "label_share": shares, "summary": summary,
              "runs": runs}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work)  # saved weights (a full run's too); kept when a run fails, for its log
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
