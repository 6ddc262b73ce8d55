"""Greedy decoding of one prompt: the single place llm_tune calls `generate` (export verification, training's
samples, the generate and chat commands)."""

from __future__ import annotations

from typing import Any


def greedy(
    model: Any,
    prompt: list[int],
    *,
    max_new_tokens: int,
    stop: list[int],
    pad: int | None,
    autocast: bool = False,
    streamer: Any = None,
) -> list[int]:
    """The new tokens of a greedy continuation of `prompt` (one row, so no padding), ending with a stop token
    unless `max_new_tokens` ran out first. `autocast`: compute under bfloat16 autocast, as training did."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        # Passed as arguments, not a GenerationConfig: arguments always win over the model's own defaults
        # (a base model's sampling settings must not turn greedy decoding into sampling).
        generated = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,  # training configs turn the cache off (packing); generation wants it
            eos_token_id=stop,
            pad_token_id=pad,
            streamer=streamer,
        )
    return generated[0, len(prompt) :].tolist()
