"""The memory a training step needs, itemised: what the loaded model holds, and what one step of the recipe's
batch adds on top.

The weights, adapter, optimizer and gradient terms are counted from the loaded model's own tensors after the trainer
is built (so every dtype, LoRA's matrices, QLoRA's packed 4-bit storage and TRL's bfloat16 QLoRA adapters are what
they really are). Activations and logits follow the recipe's batch, the longest row it will pad to and the blocks
the gradient reaches. Their factors were calibrated by measurement, the peak resident memory (os.wait4's
ru_maxrss) of short real `python -m llm_tune` runs of SmolLM2-135M on a 2-core CPU in float32: LoRA at batch 1 to 8
x 256 tokens, 2 x 512 and 4 x 481 (mostly prompt, or every token trained), full with and without gradient
checkpointing, frozen, QLoRA and the sentiment classifier at batch 8 and 32; every estimate came within 5% of its
run but the sentiment one (+7%). bfloat16 autocast (no native bfloat16 on that CPU) was checked against
bench/results/speed-cpu.json's LoRA run: 4.61 GiB estimated for 4.73 measured. tests/test_doctor.py checks two
shipped recipes against real runs, within 30%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30

# Activations kept for the backward pass, per token, per block the gradient reaches, in values per hidden unit
# (times the compute dtype's bytes). Counting a Llama block's saved tensors gives about 23 (two RMSNorms ~2 each,
# q/k/v, RoPE's rotated q and k, sdpa's output, o_proj's input, the residuals, and the MLP's gate, up, SiLU and
# product at 2.7x hidden each); a LoRA-adapted linear also keeps its adapter's output and the sum (~12 more with all
# seven adapted). Measured on SmolLM2 (hidden 576, intermediate 1536, float32): 2.3 MiB per token over 30 blocks
# with LoRA on every linear layer, 35 values per hidden unit; full and frozen blocks 25. Other models scale by
# hidden size and depth; an MLP wider than SmolLM2's 2.7x hidden keeps more.
ACTIVATION_VALUES_LORA = 35.0
ACTIVATION_VALUES_PLAIN = 25.0
# With gradient checkpointing each block keeps only its input; the block being recomputed holds the full set.
CHECKPOINTED_VALUES = 1.0

# The loss at a label position needs the logits over the vocabulary: the float32 logits, the log-softmax that
# cross-entropy keeps for the backward, and its gradient are alive together, 3 x 4 bytes per vocabulary entry
# (measured: 12.2 bytes on SmolLM2, from the difference between training on every token and on the answer only).
# Under bfloat16 autocast the LM head's bfloat16 output comes on top (2 bytes).
LOGIT_COPIES = 3
# On a GPU TRL's fused LM head projects the label positions in tiles of 4096 tokens x 32768 vocabulary entries
# (trl/kernels/chunked_logprob.py) and never holds the whole [positions, vocab] logits. Not measured: no GPU here.
GPU_LOGIT_TILE = (4096, 32768)


@dataclass(frozen=True)
class Device:
    """Where the run computes and in which dtype, with the memory there."""

    device: str  # cpu | cuda
    name: str  # the GPU, or the CPU and its threads
    weights_dtype: str
    compute: str  # the weights' dtype, or "bfloat16 autocast"
    why: str  # the recipe's model.dtype, in words
    base: str  # the base weights as stored (a 4-bit type for qlora)
    compute_bytes: int
    memory_total: int
    memory_available: int


@dataclass(frozen=True)
class MemoryItem:
    """One term of the estimate: its bytes, and how they were counted."""

    bytes: int
    how: str


@dataclass(frozen=True)
class StepShape:
    """The largest step the recipe will take: the batch padded to its longest row."""

    batch: int
    tokens: int  # padded length of that batch: min(max_length, the longest tokenized row)
    label_positions: int  # positions of that batch that predict a label (they get logits)
    reached_blocks: int  # blocks the gradient flows through (the lowest trainable one and everything above)
    gradient_checkpointing: bool
    compute_bytes: int  # 2 under bfloat16 autocast or bfloat16 weights, 4 in float32
    autocast: bool  # float32 weights computed under bfloat16 autocast
    lm_head: bool  # a causal LM's loss (False: a sequence-classification head, a few logits per row)
    device: str


@dataclass
class ModelTally:
    """Bytes the loaded model holds, by role, and the shape numbers the per-step terms need."""

    base_bytes: int  # frozen weights as stored (float32 4, bfloat16 2, NF4 ~0.5 byte per parameter) and buffers
    trainable_bytes: int
    trainable_params: int
    base_params: int  # the frozen ones (4-bit weights counted as the values they pack)
    trainable_element_bytes: int  # bytes per trainable value: the optimizer's moments and gradients share it
    reached_linear_params: int  # weights of the linear layers the backward passes through (autocast copies)
    hidden: int
    blocks: int
    vocab: int
    adapter: bool  # lora / qlora: trainable weights are an adapter beside the base


def tally_model(model: Any, adapter: bool) -> tuple[ModelTally, int]:
    """The model's bytes by role, and the number of blocks the gradient reaches."""
    import torch

    from llm_tune.model.strategies import transformer_blocks

    seen: set[int] = set()
    base = trainable = trainable_params = base_params = 0
    element = 4
    for param in model.parameters():  # tied weights are one tensor: counted once
        if id(param) in seen:
            continue
        seen.add(id(param))
        stored = param.numel() * param.element_size() + _quant_state_bytes(param)
        if param.requires_grad:
            trainable += stored
            trainable_params += param.numel()
            element = param.element_size()
        else:
            base += stored
            base_params += _logical_params(param)
    base += sum(buffer.numel() * buffer.element_size() for buffer in model.buffers())
    blocks = transformer_blocks(model)
    lowest = _lowest_trained_block(model, blocks)
    reached = len(blocks) - lowest
    linear = sum(
        m.weight.numel() for block in list(blocks)[lowest:] for m in block.modules() if isinstance(m, torch.nn.Linear)
    )
    config = model.config.get_text_config()
    tally = ModelTally(
        base_bytes=base, trainable_bytes=trainable, trainable_params=trainable_params, base_params=base_params,
        trainable_element_bytes=element, reached_linear_params=linear, hidden=config.hidden_size,
        blocks=len(blocks), vocab=config.vocab_size, adapter=adapter,
    )  # fmt: skip
    return tally, reached


def _logical_params(param: Any) -> int:
    """A 4-bit weight packs two values per byte of its storage dtype."""
    if type(param).__name__ == "Params4bit":
        return param.numel() * param.element_size() * 2
    return param.numel()


def _quant_state_bytes(param: Any) -> int:
    """QLoRA's quantization constants beside each 4-bit weight: one absmax per 64 values, itself quantized to
    8 bits with double quantization (QuantState.state2)."""
    state = getattr(param, "quant_state", None)
    total = 0
    while state is not None:
        total += sum(t.numel() * t.element_size() for t in (state.absmax, state.code) if t is not None)
        state = getattr(state, "state2", None)
    return total


def _lowest_trained_block(model: Any, blocks: Any) -> int:
    """The lowest block with a trainable weight (0 when the embeddings train: the gradient then crosses every block);
    the blocks below it run their forward pass without keeping anything for a backward."""
    embeddings = model.get_input_embeddings()
    if any(p.requires_grad for p in embeddings.parameters()):
        return 0
    for index, block in enumerate(blocks):
        if any(p.requires_grad for p in block.parameters()):
            return index
    return len(blocks)  # only a head on top trains


@dataclass(frozen=True)
class MemoryEstimate:
    items: dict[str, MemoryItem]  # in the order the report shows them
    peak_bytes: int
    peak_rule: str
    step: StepShape
    blocks: int


def estimate_memory(tally: ModelTally, step: StepShape, runtime_bytes: int) -> dict[str, MemoryItem]:
    """Each term's bytes and how it was computed, in the order a report shows them."""
    t, s = tally, step
    optimizer = 2 * t.trainable_params * t.trainable_element_bytes  # AdamW: exp_avg and exp_avg_sq per weight
    gradients = t.trainable_params * t.trainable_element_bytes
    values = ACTIVATION_VALUES_LORA if t.adapter else ACTIVATION_VALUES_PLAIN
    per_token = values * t.hidden * s.compute_bytes
    if s.gradient_checkpointing:
        kept = CHECKPOINTED_VALUES * t.hidden * s.compute_bytes * s.reached_blocks + per_token * min(
            s.reached_blocks, 1
        )
        how = f"{s.batch} x {s.tokens} tokens x {t.hidden} hidden x ({s.reached_blocks} block inputs + 1 recomputed block)"
    else:
        kept = per_token * s.reached_blocks
        how = f"{s.batch} x {s.tokens} tokens x {t.hidden} hidden x {s.reached_blocks} blocks x {values:g} values"
    activations = int(s.batch * s.tokens * kept)
    items: dict[str, MemoryItem] = {
        "weights": _item(t.base_bytes + (0 if t.adapter else t.trainable_bytes),
                         f"{(t.base_params + (0 if t.adapter else t.trainable_params)) / 1e6:.1f}M params as stored"
                         f" ({_bytes_per_param(t)})"),
        "adapter": _item(t.trainable_bytes if t.adapter else 0,
                         f"{t.trainable_params / 1e6:.2f}M params" if t.adapter else "none (the weights train)"),
        "optimizer state": _item(optimizer, f"AdamW: 2 moments x {t.trainable_params / 1e6:.2f}M trainable"
                                            f" x {t.trainable_element_bytes} bytes"),
        "gradients": _item(gradients, f"{t.trainable_params / 1e6:.2f}M x {t.trainable_element_bytes} bytes"),
        "activations": _item(activations, f"{how} x {s.compute_bytes} bytes"),
        "logits": _logits(t, s),
    }  # fmt: skip
    if s.autocast:
        # Autocast casts each float32 weight to bfloat16 per call, and autograd keeps the cast for the input gradient.
        items["autocast copies"] = _item(
            2 * t.reached_linear_params, f"{t.reached_linear_params / 1e6:.1f}M reached linear weights x 2 bytes"
        )
    if runtime_bytes:
        items["runtime"] = _item(
            runtime_bytes, "this process before the model loaded: Python, libraries, tokenizer, data"
        )
    return items


def _bytes_per_param(t: ModelTally) -> str:
    """Bytes per base parameter: 4 float32, 2 bfloat16, about 0.6 for QLoRA's NF4 (embeddings stay unquantized)."""
    return f"{t.base_bytes / max(t.base_params, 1):.2f} bytes each"


def _logits(t: ModelTally, s: StepShape) -> MemoryItem:
    if not s.lm_head:
        return _item(s.batch * s.tokens * 4 * 8, "a classifier head: a few logits per position")
    if s.device == "cuda":
        rows, vocab = min(s.label_positions, GPU_LOGIT_TILE[0]), min(t.vocab, GPU_LOGIT_TILE[1])
        return _item(rows * vocab * 4, f"TRL's fused head: one {rows} x {vocab} tile x 4 bytes")
    extra = 2 if s.compute_bytes == 2 else 0
    bytes_per = LOGIT_COPIES * 4 + extra
    return _item(
        s.label_positions * t.vocab * bytes_per,
        f"{s.label_positions} label positions x {t.vocab} vocab x {bytes_per} bytes (label-only loss)",
    )


def _item(size: float, how: str) -> MemoryItem:
    return MemoryItem(int(size), how)


def peak_bytes(items: dict[str, MemoryItem]) -> int:
    """The step's peak: what stays (runtime, weights, adapter, optimizer state) plus the larger of the two phases.
    Forward and backward hold the activations and logits (the backward frees them as the gradients arrive); the
    optimizer step holds the gradients and one temporary of their size (torch's foreach AdamW computes the update
    in a list of tensors like the weights). Measured: full fine-tuning with gradient checkpointing peaks there."""
    size = {name: item.bytes for name, item in items.items()}
    stays = sum(size.get(k, 0) for k in ("runtime", "weights", "adapter", "optimizer state"))
    step = size["activations"] + size["logits"] + size.get("autocast copies", 0)
    return stays + max(step, 2 * size["gradients"])


PEAK_RULE = "runtime + weights + adapter + optimizer state + the larger of activations + logits and 2 x gradients"


def gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB"
