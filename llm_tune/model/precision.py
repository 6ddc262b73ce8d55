"""The dtype and precision policy, in one place: which dtype the weights load in, when the compute runs under
bfloat16 autocast, and what the trained weights computed in. Training, evaluation, generation, exports, the doctor
and the report all ask here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm_tune.recipe.schema import ModelConfig, Recipe

if TYPE_CHECKING:
    import torch


def resolve_dtype(name: str) -> torch.dtype:
    """The dtype the weights are loaded in. `auto` keeps float32 weights, which are the optimizer's master copies;
    the compute runs under bfloat16 autocast where the hardware has it (`mixed_precision`)."""
    import torch

    return torch.float32 if name == "auto" else getattr(torch, name)


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively: a CUDA GPU that has it, or a CPU with AVX512-BF16 or AMX
    (elsewhere bfloat16 matmuls are emulated and slower than float32)."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    return any(
        bool(getattr(cpu, probe, lambda: False)()) for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def mixed_precision(cfg: ModelConfig) -> bool:
    """Whether training, evaluation and prediction compute under bfloat16 autocast."""
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and native_bf16())


def weights_dtype_name(cfg: ModelConfig) -> str:
    """The weights' dtype in words: float32, bfloat16 or float16."""
    return str(resolve_dtype(cfg.dtype)).removeprefix("torch.")


def trained_dtype(recipe: Recipe) -> str:
    """The dtype the trained weights computed in (qlora: the 4-bit compute dtype)."""
    name: str = recipe.four_bit.bnb_4bit_compute_dtype if recipe.four_bit else "auto"
    if name == "auto":
        name = str(resolve_dtype(recipe.model.dtype)).removeprefix("torch.")
    return name


def describe_device(cfg: ModelConfig) -> str:
    """Where and in what the run computes, in words: `float32 weights, bfloat16 autocast on cpu (2 threads)`."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name()})"
    else:
        threads = torch.get_num_threads()
        device = f"cpu ({threads} thread{'s' if threads > 1 else ''})"
    if mixed_precision(cfg) and cfg.dtype == "auto":
        return f"float32 weights, bfloat16 autocast on {device}"
    if cfg.dtype == "auto":
        return f"float32 on {device} (no native bfloat16 here)"
    return f"{cfg.dtype} on {device}"
