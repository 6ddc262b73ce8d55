"""The peer of bench/speed.py: LoRA SFT as a user would write it with TRL alone, on a CPU.

TRL's defaults throughout (gradient checkpointing on, no packing, loss on the completion), except what a
CPU user must set: bf16=False (TRL refuses its default bf16 without a GPU) and the run's shape.

    python bench/peer_trl.py --model models/SmolLM2-135M-Instruct --data rows.jsonl --format alpaca \
        --batch 8 --max-length 256 --steps 10 --out result.json
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
    parser.add_argument("--format", choices=["alpaca", "chat", "classification"], required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    with open(args.data, encoding="utf-8") as f:
        rows = [to_row(json.loads(line), args.format) for line in f if line.strip()]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    # Only what a CPU run needs, plus the run's shape; logging_steps as in the instruct recipes.
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="peer-trl-"), per_device_train_batch_size=args.batch,
        max_length=args.max_length, max_steps=args.steps, bf16=False, report_to="none", logging_steps=5,
        include_num_input_tokens_seen="non_padding", save_strategy="no",
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), peft_config=lora)
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
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
