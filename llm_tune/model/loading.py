"""Loading the base model and tokenizer: local HF folders, .gguf files and Hub ids.

torch and transformers are imported inside the functions so that `validate` stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.recipe.schema import ModelConfig, StrategyConfig
from llm_tune.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Tokens that may serve as padding without masking EOS or an end-of-turn marker out of the labels.
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]", "<|endoftext|>", "<unk>")


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained reads: a folder or Hub id, plus the GGUF file name inside it if any."""

    folder: str
    gguf_file: str | None = None

    @classmethod
    def parse(cls, name_or_path: str) -> ModelSource:
        path = Path(name_or_path)
        if path.suffix == ".gguf":
            return cls(str(path.parent), path.name)
        return cls(name_or_path)

    @property
    def is_local(self) -> bool:
        return self.gguf_file is not None or Path(self.folder).exists() or self.folder.startswith((".", "/"))

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def check_model_source(cfg: ModelConfig) -> list[str]:
    """Problems findable without loading weights: a missing local path, a Hub id while offline."""
    source = ModelSource.parse(cfg.name_or_path)
    target = Path(source.folder) / source.gguf_file if source.gguf_file else Path(source.folder)
    if source.is_local and not target.exists():
        hint = " (run `make model` to fetch the default model)" if "SmolLM2" in cfg.name_or_path else ""
        return [f"model.name_or_path: {target} does not exist{hint}"]
    if not source.is_local and os.environ.get("HF_HUB_OFFLINE") == "1":
        return [f"model.name_or_path: {cfg.name_or_path!r} is not a local path and HF_HUB_OFFLINE=1 is set"]
    return []


def num_hidden_layers(cfg: ModelConfig) -> int | None:
    """The model's block count read from its config or GGUF header, without loading weights."""
    source = ModelSource.parse(cfg.name_or_path)
    if source.gguf_file:
        from gguf import GGUFReader

        reader = GGUFReader(str(Path(source.folder) / source.gguf_file))
        for name, field in reader.fields.items():
            if name.endswith(".block_count"):
                return int(field.parts[field.data[0]][0])
        return None
    config = Path(source.folder) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    return data.get("num_hidden_layers") or data.get("n_layer")


def resolve_dtype(name: str) -> torch.dtype:
    import torch

    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, name)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    source = ModelSource.parse(cfg.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        source.folder, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **source.kwargs()
    )
    choose_pad_token(tokenizer)
    return tokenizer


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


def quantization_config(strategy: StrategyConfig, dtype: torch.dtype) -> Any:
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
    strategy: StrategyConfig,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str] | None = None,
) -> PreTrainedModel:
    """The base model: a causal LM, or a sequence classifier when `labels` are given."""
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
    if strategy.kind == "qlora":
        kwargs["quantization_config"] = quantization_config(strategy, dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    if labels is not None:
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        model = AutoModelForSequenceClassification.from_pretrained(source.folder, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(source.folder, **kwargs)
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
