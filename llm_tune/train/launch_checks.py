"""The known-bad combinations of recipe x accelerate config x installed versions x hardware, each found before
anything loads and said in one line: errors stop the launch (exit 2), warnings are printed.

Each rule names what would happen if the run went ahead; README "Sharded training: pitfalls" lists the library
bugs behind some of them."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.ranks import world_size
from llm_tune.recipe.schema import Recipe
from llm_tune.train.launch import WORKING_CPU_LAUNCH, Launch, current_launch

# accelerate before 1.16 reloads only rank 0's slice of each LoRA tensor when an FSDP2 run resumes from a
# FULL_STATE_DICT checkpoint: (N-1)/N of every adapter tensor silently restarts from its initial values (PR #4206).
FSDP2_RESUME_FIXED = (1, 16)


@dataclass(frozen=True)
class Hardware:
    """What the checks need to know about this machine and its libraries."""

    gpus: int
    bf16: bool  # the GPUs (or, without GPUs, the CPU) compute bfloat16 natively
    accelerate: tuple[int, int]  # installed accelerate (major, minor)
    deepspeed: bool  # deepspeed importable

    @classmethod
    def here(cls) -> Hardware:
        import importlib.util

        import accelerate
        import torch

        from llm_tune.model.precision import native_bf16

        major, minor = (int(p) for p in accelerate.__version__.split(".")[:2])
        return cls(
            torch.cuda.device_count(), native_bf16(), (major, minor), importlib.util.find_spec("deepspeed") is not None
        )


def launch_findings(recipe: Recipe, launch: Launch, hw: Hardware) -> tuple[list[str], list[str]]:
    """(errors, warnings) for running `recipe` under `launch` on `hw`."""
    errors: list[str] = []
    rules = (_sharding_needs_gpus, _processes_and_devices, _deepspeed_installed, _mixed_precision, _eight_bit,
             _qlora_storage, _fsdp2_resume, _zero3_gathers)  # fmt: skip
    for rule in rules:
        problem = rule(recipe, launch, hw)
        if problem:
            errors.append(f"{launch.source}: {problem}")
    return errors, _warnings(recipe, launch, hw)


def _sharding_needs_gpus(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    if not launch.sharded or (hw.gpus and not launch.use_cpu):
        return None
    where = "with use_cpu" if launch.use_cpu else "on this machine without GPUs"
    if launch.distributed_type == "FSDP":
        return (
            f"distributed_type FSDP {where}: accelerate assigns FSDP only on GPU-type setups, so this would"
            f" train plain DDP (a whole model copy per process, nothing sharded); on CPUs use {WORKING_CPU_LAUNCH}"
        )
    return (
        f"distributed_type DEEPSPEED {where}: DeepSpeed does not train on a CPU through the Trainer (it stops at"
        f" start); on CPUs use {WORKING_CPU_LAUNCH}"
    )


def _processes_and_devices(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    """More processes on a machine than it has GPUs. Without any GPU a DDP launch is fine: the trainer's arguments
    ask accelerate for CPU processes (use_cpu), which join over gloo."""
    per_machine = launch.processes_per_machine
    if launch.use_cpu or launch.distributed_type == "NO" or hw.gpus == 0 or per_machine <= hw.gpus:
        return None
    return (
        f"num_processes {launch.num_processes} ({per_machine} per machine) but this machine has {hw.gpus} GPU(s):"
        f" several processes would share a GPU; pass --num_processes {hw.gpus * launch.num_machines}"
    )


def _deepspeed_installed(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    if launch.distributed_type == "DEEPSPEED" and hw.gpus and not hw.deepspeed:
        return "distributed_type DEEPSPEED, but deepspeed is not installed: pip install deepspeed"
    return None


def recipe_precision(recipe: Recipe, hw: Hardware) -> str:
    """The mixed precision the recipe trains in, as accelerate spells it (the Trainer sets it from the recipe)."""
    dtype = recipe.model.dtype
    return "bf16" if dtype == "bfloat16" or (dtype == "auto" and hw.bf16) else "no"


def _mixed_precision(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    """The Trainer takes the recipe's bf16 when it is on; when it is off it takes the launcher's mixed precision
    (ACCELERATE_MIXED_PRECISION), so a config asking for an autocast the recipe does not want would win silently."""
    wanted = recipe_precision(recipe, hw)
    if launch.mixed_precision in ("no", wanted):
        return None
    why = {"bf16": "under bfloat16 autocast", "no": "without autocast"}[wanted]
    if recipe.model.dtype == "auto":
        why += " on this machine (" + ("it computes bfloat16 natively" if hw.bf16 else "no native bfloat16") + ")"
    return (
        f"mixed_precision {launch.mixed_precision} contradicts model.dtype {recipe.model.dtype}, which trains {why}"
        f" (llm_tune never computes in fp16 or fp8), and the config's autocast would win silently; set"
        f" mixed_precision: {wanted} in the config or pass --mixed_precision {wanted}"
    )


def _eight_bit(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    """A base model saved in bitsandbytes 8-bit: FSDP cannot shard Int8Params (they are not plain tensors)."""
    if launch.distributed_type != "FSDP":
        return None
    config = Path(recipe.model.name_or_path) / "config.json"
    try:
        quant = json.loads(config.read_text(encoding="utf-8")).get("quantization_config") or {}
    except (OSError, ValueError):
        return None
    if quant.get("load_in_8bit") or quant.get("quant_method") == "bitsandbytes" and "8" in str(quant.get("bits", "")):
        return (
            f"model.name_or_path: {recipe.model.name_or_path} holds bitsandbytes 8-bit weights, which FSDP cannot"
            f" shard; use the unquantized model (qlora for a 4-bit base) or a DDP config"
        )
    return None


def _qlora_storage(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    """FSDP2 and ZeRO-3 flatten every weight of a unit into one buffer of one dtype: the 4-bit weights are stored in
    bnb_4bit_quant_storage (llm_tune sets it to the compute dtype), so the other weights and the LoRA weights must
    be in that dtype too, which is model.dtype."""
    four_bit = recipe.four_bit
    if four_bit is None or not launch.shards_parameters:
        return None
    model_dtype = "float32" if recipe.model.dtype == "auto" else recipe.model.dtype
    storage = model_dtype if four_bit.bnb_4bit_compute_dtype == "auto" else four_bit.bnb_4bit_compute_dtype
    if storage == model_dtype:
        return None
    return (
        f"strategy.bnb_4bit_compute_dtype {storage} is the 4-bit weights' storage dtype, but model.dtype"
        f" {recipe.model.dtype} loads the other weights and the LoRA weights in {model_dtype}: sharding needs one"
        f" dtype; set model.dtype: {storage} (or bnb_4bit_compute_dtype: auto)"
    )


def _fsdp2_resume(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    if launch.fsdp_version != 2 or not recipe.adapter or hw.accelerate >= FSDP2_RESUME_FIXED:
        return None
    have = ".".join(map(str, hw.accelerate))
    return (
        f"FSDP2 with a LoRA adapter on accelerate {have}: resuming from its checkpoints silently resets most of"
        f" each adapter tensor to its initial values (fixed in accelerate 1.16, PR #4206); pip install"
        f" 'accelerate>=1.16'"
    )


def _zero3_gathers(recipe: Recipe, launch: Launch, hw: Hardware) -> str | None:
    if launch.zero_stage != 3 or _flag(launch.deepspeed.get("zero3_save_16bit_model")):
        return None
    head = " (a sequence-classification head is saved as a zero-size tensor, peft#2450)" if recipe.sequence_head else ""
    return (
        f"ZeRO-3 without zero3_save_16bit_model: the run folder would get each rank's empty weight shards, not"
        f" whole weights{head}; set deepspeed_config.zero3_save_16bit_model: true"
    )


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def _warnings(recipe: Recipe, launch: Launch, hw: Hardware) -> list[str]:
    found = []
    if launch.use_cpu and launch.processes_per_machine > (os.cpu_count() or 1):
        found.append(
            f"{launch.source}: {launch.processes_per_machine} processes on {os.cpu_count()} CPU cores:"
            " they take turns on the cores, which is slower than fewer processes"
        )
    return found


def batch_remainder_warning(rows: int, recipe: Recipe, launch: Launch) -> str | None:
    """What exactly happens when the global batch does not divide the rows: accelerate's sharded loader
    (even_batches) completes the last round of per-process batches with rows from the start of the data, which then
    count twice in that epoch; and the epoch's last optimizer step averages fewer rows than the others."""
    t = recipe.training
    per_round = t.per_device_train_batch_size * launch.num_processes
    global_batch = per_round * t.gradient_accumulation_steps
    if rows % global_batch == 0:
        return None
    parts = []
    repeated = -rows % per_round
    if launch.num_processes > 1 and repeated:
        parts.append(
            f"accelerate completes the last round of batches with {repeated} row(s) from the start of the data,"
            f" which count twice per epoch"
        )
    rounds = -(-rows // per_round)
    last = rounds % t.gradient_accumulation_steps or t.gradient_accumulation_steps
    padded = launch.num_processes > 1  # the last round is completed to full batches
    last_rows = last * per_round if padded else rows - (rounds - last) * per_round
    if last_rows != global_batch:
        parts.append(f"each epoch's last optimizer step averages {last_rows} row(s), the others {global_batch}")
    return (
        f"{rows} train rows do not divide into global batches of {global_batch} (per_device_train_batch_size"
        f" {t.per_device_train_batch_size} x gradient_accumulation_steps {t.gradient_accumulation_steps} x"
        f" {launch.num_processes} process{'es' * (launch.num_processes != 1)}): " + "; ".join(parts)
    )


def check_launch(recipe: Recipe) -> None:
    """Refuse, before any model loads, a launch that would not train the way it was asked to; print its warnings."""
    from llm_tune.console import say

    launch, cmd = current_launch()
    started = world_size()
    if cmd is not None and launch.num_processes > 1 and started != launch.num_processes:
        raise UserError(
            f"`{shlex.join(cmd)}` asked for {launch.num_processes} processes but started {started}:"
            " accelerate starts one process for --cpu or a MULTI_CPU config",
            f"on CPUs launch with: {WORKING_CPU_LAUNCH} ... (or torchrun --nproc_per_node N -m llm_tune ...)",
        )
    if cmd is None and launch.distributed_type == "NO":
        return  # a plain `python -m llm_tune`: nothing was launched
    errors, warnings = launch_findings(recipe, launch, Hardware.here())
    for warning in warnings:
        say(f"warning: {warning}")
    if errors:
        raise UserError(*errors)
