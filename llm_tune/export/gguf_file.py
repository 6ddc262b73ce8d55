"""The merged model as one GGUF file (llama.cpp's format), written with the `gguf` package, llama.cpp's own
Python writer: the weights under llama.cpp's tensor names, the architecture metadata that llama.cpp and
transformers read back, and the tokenizer (vocabulary, merges, special tokens and the chat template training
rendered with), so that the file runs on its own in llama.cpp, Ollama or LM Studio.

Llama-architecture models with a byte-level BPE tokenizer (GPT-2 style, as SmolLM2's) for now; anything else
is refused, naming what it is, before a weight is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_tune.errors import UserError

if TYPE_CHECKING:
    from llm_tune.export.job import Job

ARCHITECTURES = ("llama",)
WHERE = "export --format gguf"
# How the tokenizer splits text before its merges (tokenizer.json's pre-tokenizer steps) -> llama.cpp's name
# for the same split (tokenizer.ggml.pre; llama.cpp refuses a file whose name it does not know). SmolLM2's
# GGUF-born tokenizer is the plain GPT-2 split; the Hub's SmolLM tokenizers put single digits apart first,
# which llama.cpp calls smollm.
PRE_TOKENIZERS = {("ByteLevel",): "gpt-2", ("Digits", "ByteLevel"): "smollm"}


def check_convertible(job: Job) -> None:
    """Refuse, before anything loads, a run that a GGUF cannot hold or that this writer cannot express."""
    from transformers import AutoTokenizer

    if job.classifier:  # GGUF has no classifier head: a single-label one is folded into LM-head rows
        from llm_tune.export.folded_head import check_foldable

        check_foldable(job, AutoTokenizer.from_pretrained(job.run.weights(job.recipe)))
    config = _model_config(job)
    if config.model_type not in ARCHITECTURES:
        raise UserError(
            f"{WHERE}: model architecture {config.model_type!r} is not supported yet (supported:"
            f" {', '.join(ARCHITECTURES)}); export it with --format safetensors"
        )
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    unsupported = {
        f"rope scaling {rope_type!r}": rope_type != "default",
        "attention biases": getattr(config, "attention_bias", False),
        "MLP biases": getattr(config, "mlp_bias", False),
        f"activation {config.hidden_act!r}": config.hidden_act != "silu",
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise UserError(
            f"{WHERE}: this llama model has {', '.join(found)}, which the GGUF writer does not carry yet;"
            " export it with --format safetensors"
        )
    pre_tokenizer_name(AutoTokenizer.from_pretrained(job.run.weights(job.recipe)))


def _model_config(job: Job) -> Any:
    """The config of the weights being exported: the run's own model/ (full, frozen) or the adapter's base."""
    from transformers import AutoConfig

    from llm_tune.recipe.sources import ModelSource

    if not job.adapter:
        return AutoConfig.from_pretrained(job.run.weights(job.recipe))
    model = job.recipe.model
    source = ModelSource.parse(model.name_or_path)
    return AutoConfig.from_pretrained(
        source.folder, revision=model.revision, trust_remote_code=model.trust_remote_code, **source.kwargs()
    )


def gguf_file_name(job: Job) -> str:
    """<name>-<type>.gguf, where name is the run folder's name (what the user called the run), made file-safe."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", job.run_dir.resolve().name).strip("-.") or "model"
    return f"{name}-{job.options.gguf_type}.gguf"


def write_gguf(model: Any, job: Job, path: Path) -> None:
    """`model` (the merged float32 model) and the run's tokenizer as one GGUF file at `path`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(path.stem)
    _architecture(writer, model.config)
    _tokenizer(writer, job, model.config.vocab_size)
    writer.add_file_type(_file_type(job.options.gguf_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, data, qtype in _tensors(model, job.options.gguf_type):
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _file_type(kind: str) -> Any:
    """general.file_type: what most of the weights are (1-D tensors stay f32 in every type)."""
    import gguf

    types = gguf.LlamaFileType
    return {"f32": types.ALL_F32, "f16": types.MOSTLY_F16, "bf16": types.MOSTLY_BF16, "q8_0": types.MOSTLY_Q8_0}[kind]


def _architecture(writer: Any, config: Any) -> None:
    """The llama.* keys: what llama.cpp builds the graph from, and what transformers turns back into a config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _tensors(model: Any, kind: str) -> Iterator[tuple[str, Any, Any]]:
    """(llama.cpp name, data, GGML type) for every weight of the merged model."""
    import gguf
    import torch

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    rotary_heads = {
        "q_proj": config.num_attention_heads,
        "k_proj": config.num_key_value_heads or config.num_attention_heads,
    }
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp and transformers both read a missing output.weight as tied to token_embd
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UserError(
                f"{WHERE}: the model's tensor {name} has no llama.cpp name; export it with --format safetensors"
            )
        array = tensor.detach().to("cpu", torch.float32).numpy()
        module = name.split(".")[-2]
        if module in rotary_heads and name.endswith(".weight"):
            array = _pair_rotary_rows(array, rotary_heads[module])
        qtype = _tensor_type(array, kind)
        yield target, gguf.quants.quantize(array, qtype), qtype


def _pair_rotary_rows(weight: Any, heads: int) -> Any:
    """transformers rotates each head's first half of query/key features against its second half; llama.cpp's
    llama graph rotates adjacent pairs. llama.cpp's converter reorders each head's rows to match, and
    transformers' GGUF loader reverses exactly this reordering on load."""
    per_head = weight.shape[0] // heads
    return weight.reshape(heads, 2, per_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensor_type(array: Any, kind: str) -> Any:
    import gguf

    types = gguf.GGMLQuantizationType
    if array.ndim == 1 or kind == "f32":
        return types.F32  # norms: tiny, and llama.cpp computes them in f32 whatever the file type
    if kind == "q8_0":
        block = gguf.GGML_QUANT_SIZES[types.Q8_0][0]
        # As llama.cpp's converter does: a matrix whose rows do not fill whole 32-value blocks stays f16.
        return types.Q8_0 if array.shape[-1] % block == 0 else types.F16
    return {"f16": types.F16, "bf16": types.BF16}[kind]


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's split (tokenizer.ggml.pre), or a UserError naming what it is."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = state.get("pre_tokenizer") or {}
    steps = tuple(_step(s) for s in (pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]))
    model = state.get("model", {}).get("type")
    if model == "BPE" and steps in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[steps]
    raise UserError(
        f"{WHERE}: the run's tokenizer ({model} model, pre-tokenizer {' + '.join(steps) or 'none'}) is not one the"
        " GGUF writer knows yet (a byte-level BPE: GPT-2's split, or SmolLM's digits + GPT-2); export it with"
        " --format safetensors"
    )


def _step(step: dict[str, Any]) -> str:
    kind = str(step.get("type"))
    if kind == "ByteLevel" and not step.get("use_regex", True):
        return "ByteLevel(no regex)"
    if kind == "Digits" and not step.get("individual_digits", False):
        return "Digits(grouped)"
    return kind


def _tokenizer(writer: Any, job: Job, vocab_size: int) -> None:
    """tokenizer.* keys: the byte-level BPE vocabulary and merges, special tokens and the chat template."""
    from llm_tune.data.prompts import export_chat_template, stop_token_ids

    tokenizer = job.tokenizer
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens, types = _vocabulary(tokenizer, state["model"]["vocab"], vocab_size)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    ids = {
        writer.add_bos_token_id: tokenizer.bos_token_id,
        writer.add_eos_token_id: tokenizer.eos_token_id,
        writer.add_unk_token_id: tokenizer.unk_token_id,
        writer.add_pad_token_id: tokenizer.pad_token_id,  # the run's own pad, never EOS
    }
    for add, token_id in ids.items():
        if token_id is not None:
            add(token_id)
    stop = stop_token_ids(tokenizer, job.recipe)
    if len(stop) > 1:
        writer.add_eot_token_id(stop[1])  # the end-of-turn token training taught the model to stop on
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(len(full) > len(plain) and full[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(len(full) > len(plain) and full[-1] == tokenizer.eos_token_id)
    template = export_chat_template(tokenizer, job.recipe)
    if template:
        writer.add_chat_template(template)


def _vocabulary(tokenizer: Any, vocab: dict[str, int], size: int) -> tuple[list[str], list[int]]:
    """Every id's token as llama.cpp spells it (byte-level characters) and its type; ids the tokenizer does not
    use (embedding rows padded beyond it) are llama.cpp's unused [PADn] entries."""
    import gguf

    kinds = gguf.TokenType
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [kinds.UNUSED] * size
    entries = [(i, token, kinds.NORMAL) for token, i in vocab.items()]
    entries += [
        (i, added.content, kinds.CONTROL if added.special else kinds.USER_DEFINED)
        for i, added in tokenizer.added_tokens_decoder.items()
    ]
    for i, token, kind in entries:
        if i >= size:
            raise UserError(f"{WHERE}: token {token!r} has id {i}, beyond the model's {size} embedding rows")
        tokens[i], types[i] = token, kind
    return tokens, types


def load_gguf(path: Path) -> tuple[Any, Any]:
    """The file loaded back exactly as a user of transformers would, model (in float32) and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer
