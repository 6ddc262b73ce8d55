"""Multi-process launches: is the job what was asked for, can it run here, and small collectives.

`accelerate launch` and `torchrun` start one process per rank and set WORLD_SIZE, RANK and LOCAL_RANK.
accelerate 1.15 has launches that silently start one process where several were asked (`--cpu
--num_processes N`, or a MULTI_CPU config file); the launcher's command line is our parent process's, so we
read it from /proc (Linux) and refuse such a launch instead of training N times slower than expected.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.ranks import world_size

WORKING_CPU_LAUNCH = "accelerate launch --config_file recipes/accelerate/cpu-ddp.yaml --num_processes N -m llm_tune"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def parent_command() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def launcher_command() -> list[str] | None:
    """The `accelerate launch ...` or `torchrun ...` command that started this process, if one did."""
    cmd = parent_command()
    for i, part in enumerate(cmd):
        name = Path(part).name
        if name == "accelerate" and cmd[i + 1 : i + 2] == ["launch"]:
            return ["accelerate", *cmd[i + 1 :]]
        if name == "torchrun":
            return ["torchrun", *cmd[i + 1 :]]
        if part == "torch.distributed.run":
            return ["torchrun", *cmd[i + 1 :]]
    return None


def _option(cmd: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` (accelerate accepts - and _ alike) before the script's own args."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    for i, part in enumerate(cmd):
        if part in ("-m", "--module") or part.endswith(".py"):
            break
        if part in spellings and i + 1 < len(cmd):
            return cmd[i + 1]
        key, _, value = part.partition("=")
        if key in spellings and value:
            return value
    return None


def _accelerate_config(cmd: list[str]) -> dict[str, Any]:
    import yaml

    given = _option(cmd, "config_file")
    if given:
        path = Path(given)
    else:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        path = Path(os.environ.get("ACCELERATE_CONFIG_FILE", os.path.join(home, "accelerate", "default_config.yaml")))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def requested_processes(cmd: list[str]) -> int | None:
    """How many processes an `accelerate launch` command asked for (flag first, then its config file)."""
    value = _option(cmd, "num_processes") or _accelerate_config(cmd).get("num_processes")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def check_launch() -> None:
    """Refuse, before any model loads, a launch that would not train the way it was asked to."""
    cmd = launcher_command()
    if cmd and Path(cmd[0]).name == "accelerate":
        asked, started = requested_processes(cmd), world_size()
        if asked is not None and asked > 1 and started != asked:
            raise UserError(
                f"`{shlex.join(cmd)}` asked for {asked} processes but started {started}:"
                " accelerate 1.15 starts one process for --cpu or a MULTI_CPU config",
                f"on CPUs launch with: {WORKING_CPU_LAUNCH} ... (or torchrun --nproc_per_node N -m llm_tune ...)",
            )
    sharded = _truthy("ACCELERATE_USE_FSDP") or _truthy("ACCELERATE_USE_DEEPSPEED")
    gpus = sharded and _has_cuda() and not _truthy("ACCELERATE_USE_CPU")  # torch only when it matters
    if _truthy("ACCELERATE_USE_FSDP") and not gpus:
        raise UserError(
            "the accelerate config asks for FSDP, which needs GPUs: on a CPU accelerate quietly runs plain DDP instead",
            f"on CPUs use {WORKING_CPU_LAUNCH} ...; FSDP configs are for GPU machines",
        )
    if _truthy("ACCELERATE_USE_DEEPSPEED") and not gpus:
        raise UserError(
            "the accelerate config asks for DeepSpeed, which needs GPUs: it does not train on a CPU here",
            f"on CPUs use {WORKING_CPU_LAUNCH} ...; DeepSpeed configs are for GPU machines",
        )
    if _truthy("ACCELERATE_USE_DEEPSPEED"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("the accelerate config asks for DeepSpeed, which is not installed: pip install deepspeed")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
