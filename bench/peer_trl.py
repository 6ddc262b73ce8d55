"""The peer of bench/speed.py: LoRA SFT (or DPO, --format preference) as a user would write it with TRL alone, on a CPU.

TRL's defaults throughout (gradient checkpointing on, bf16 autocast where the CPU has it, no packing, loss on the
completion) plus peft's defaults (lora_dropout 0) for the adapter shape llm_tune trains (r 16, alpha 32,
all-linear); the only switch is use_cpu=True, with which TRL keeps its bf16 default on a CPU. --no-checkpointing
is the second peer row: what a user who reads the docs also turns off. --format preference trains DPOTrainer with
DPOConfig's defaults the same way (its rows are TRL's conversational {prompt, chosen, rejected} as they are). --epochs trains whole epochs (the same
rows as llm_tune's run of the same epochs); --steps caps the run instead.

    python bench/peer_trl.py --model models/SmolLM2-135M-Instruct --data rows.jsonl --format alpaca \
        --batch 8 --max-length 256 --epochs 1 --out result.json [--no-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

PROMPT = "Is the sentiment of this review positive or negative?\n\n{text}"  # as in recipes/sentiment.yaml


def to_row(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """One JSONL row as TRL's conversational prompt/completion (alpaca, classification) or messages (chat)."""
    if fmt == "chat":
        return {"messages": row["messages"]}
    if fmt == "preference":
        return {key: row[key] for key in ("prompt", "chosen", "rejected")}
    if fmt == "alpaca":
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        answer = row["output"]
    else:
        user, answer = PROMPT.format(text=row["text"]), row["label"]
    return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": answer}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--model", "--data", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--format", choices=["alpaca", "chat", "classification", "preference"], required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=-1, help="a step cap; -1 (default): --epochs whole epochs")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--no-checkpointing", action="store_true", help="the second peer: activation checkpointing off")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    with open(args.data, encoding="utf-8") as f:
        rows = [to_row(json.loads(line), args.format) for line in f if line.strip()]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")  # peft's dropout: 0
    # use_cpu is the one switch; the rest is the run's shape, and no saving or reporting (not timed work).
    shape: dict[str, Any] = dict(
        output_dir=tempfile.mkdtemp(prefix="peer-trl-"), per_device_train_batch_size=args.batch,
        max_length=args.max_length, max_steps=args.steps, num_train_epochs=args.epochs, report_to="none",
        logging_steps=5, include_num_input_tokens_seen="non_padding", save_strategy="no", use_cpu=True,
    )  # fmt: skip
    if args.no_checkpointing:
        shape["gradient_checkpointing"] = False
    preference = args.format == "preference"
    config = (DPOConfig if preference else SFTConfig)(**shape)
    trainer = (DPOTrainer if preference else SFTTrainer)(
        model=model, args=config, train_dataset=Dataset.from_list(rows), peft_config=lora
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens, steps = int(trainer.state.num_input_tokens_seen), trainer.state.global_step
    result = {
        "tokens": tokens,
        "seconds": seconds,
        "steps": steps,
        "tokens_per_s": tokens / seconds,
        "s_per_step": seconds / max(steps, 1),
        "gradient_checkpointing": config.gradient_checkpointing,
        "bf16": config.bf16,
        "rows": len(rows),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
