"""Loading the base model and tokenizer: local HF folders, .gguf files and Hub ids.

torch and transformers are imported inside the functions so that `validate` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.errors import UserError
from llm_tune.model.precision import resolve_dtype
from llm_tune.ranks import local_rank
from llm_tune.recipe.schema import ModelConfig, QLoraStrategy
from llm_tune.recipe.sources import ModelSource

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Tokens that may serve as padding without masking EOS or an end-of-turn marker out of the labels.
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]", "<|endoftext|>", "<unk>")


def idle_cores_warning(world_size: int) -> str | None:
    """A one-process CPU run under `accelerate launch` on fewer threads than the cores it may use: the launcher
    sets OMP_NUM_THREADS=1 unless given --num_cpu_threads_per_process, which makes a 2-core run about 1.4x slower.
    (A plain `python -m llm_tune` with OMP_NUM_THREADS set is the user's choice and is left alone.)"""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = torch.get_num_threads()
    launched = "ACCELERATE_DYNAMO_BACKEND" in os.environ  # set by accelerate's launcher for its child
    if not launched or torch.cuda.is_available() or world_size > 1 or threads >= cores:
        return None
    return (
        f"warning: torch computes on {threads} of this machine's {cores} cores (OMP_NUM_THREADS={threads});"
        f" `accelerate launch` sets it to 1 unless given --num_cpu_threads_per_process {cores}"
    )


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    source = ModelSource.parse(cfg.name_or_path)
    with _unloadable(cfg.name_or_path, "a tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(
            source.folder, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **source.kwargs()
        )
    choose_pad_token(tokenizer)
    return tokenizer


@contextmanager
def _unloadable(name: str, what: str) -> Iterator[None]:
    """transformers' loading errors on a model's files (OSError, ValueError, KeyError) as one line naming the key:
    files that are there but are not what they claim (weights of another shape, an architecture transformers has no
    such head for) are the user's to fix, not a crash."""
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.name_or_path: {name} could not be loaded as {what}: {text}") from None


def choose_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Use a pad token distinct from EOS, so that EOS stays a trained label and pooling finds the last token."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    vocab = tokenizer.get_vocab()
    reserved = {tokenizer.eos_token, tokenizer.bos_token}
    for candidate in (tokenizer.unk_token, *_PAD_CANDIDATES):
        if candidate and candidate in vocab and candidate not in reserved:
            tokenizer.pad_token = candidate
            return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def quantization_config(strategy: QLoraStrategy, dtype: torch.dtype) -> Any:
    """QLoRA's 4-bit base: NF4 with double quantization; storage in the compute dtype so FSDP can shard it."""
    from transformers import BitsAndBytesConfig

    compute = dtype if strategy.bnb_4bit_compute_dtype == "auto" else resolve_dtype(strategy.bnb_4bit_compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=strategy.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=strategy.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )


def load_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str] | None = None,
    four_bit: QLoraStrategy | None = None,
) -> PreTrainedModel:
    """The base model: a causal LM, or a sequence classifier when `labels` are given; 4-bit with `four_bit`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = ModelSource.parse(cfg.name_or_path)
    dtype = resolve_dtype(cfg.dtype)
    kwargs: dict[str, Any] = dict(
        dtype=dtype,
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        **source.kwargs(),
    )
    if four_bit is not None:
        kwargs["quantization_config"] = quantization_config(four_bit, dtype)
        # One whole 4-bit copy on this rank's GPU, for one process or DDP. FSDP and ZeRO-3 load without a device
        # map (they place the shards themselves; transformers refuses a device map under ZeRO-3).
        if torch.cuda.is_available() and not shards_parameters():
            kwargs["device_map"] = {"": local_rank()}
    if labels is not None:
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    auto = AutoModelForSequenceClassification if labels is not None else AutoModelForCausalLM
    with _unloadable(cfg.name_or_path, auto.__name__):
        model = auto.from_pretrained(source.folder, **kwargs)
    if source.gguf_file:
        forget_gguf_quantization(model)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    # Packed rows are kept apart by position_ids only with the KV cache off.
    model.config.use_cache = False
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def shards_parameters() -> bool:
    """Whether this run shards its weights over the ranks: an FSDP launch, or ZeRO-3 (known once the trainer's
    arguments exist: they register the DeepSpeed config with transformers)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") or is_deepspeed_zero3_enabled()


@contextmanager
def whole_parameters(*params: Any, modify: bool = False) -> Iterator[None]:
    """Under ZeRO-3 each rank holds a slice of every weight (an empty tensor outside the forward pass): gather
    `params` whole for the block, and with `modify` spread rank 0's changes back. Elsewhere nothing to do."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params), modifier_rank=0 if modify else None):
        yield


def forget_gguf_quantization(model: PreTrainedModel) -> None:
    """transformers dequantizes GGUF weights on load but keeps marking the model as GGUF-quantized, which
    blocks training and saving; the weights are plain tensors, so the quantizer's own API drops the marks."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and "gguf" in str(quantizer.quantization_config.quant_method).lower():
        quantizer.remove_quantization_config(model)


def save_as_hf_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: str | Path) -> None:
    """A model as a plain transformers folder (a GGUF-loaded one without its GGUF markers)."""
    forget_gguf_quantization(model)
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
