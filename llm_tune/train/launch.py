"""Multi-process launches: what a launch asked for, read with accelerate's own parser and config loader
(train/launch_checks.py holds the rules and the check that refuses a launch that would not train as asked).

`accelerate launch` and `torchrun` start one process per rank and set WORLD_SIZE, RANK and LOCAL_RANK. The
launcher's command line is our parent process's, so a launched run reads it from /proc (Linux) and parses it with
`accelerate.commands.launch.launch_command_parser`, then reads its config file with `load_config_from_file`, as
`accelerate launch` itself does; `doctor RECIPE --launch CONFIG` parses `--config_file CONFIG` the same way.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tune.errors import UserError
from llm_tune.ranks import world_size

WORKING_CPU_LAUNCH = "accelerate launch --config_file recipes/accelerate/cpu-ddp.yaml --num_processes N -m llm_tune"
SHARDED = ("FSDP", "DEEPSPEED")


@dataclass(frozen=True)
class Launch:
    """What a launch asks for, flags over config file as `accelerate launch` merges them."""

    source: str  # the config file or command, for messages
    distributed_type: str = "NO"  # accelerate's DistributedType value: NO, MULTI_GPU, FSDP, DEEPSPEED, ...
    num_processes: int = 1  # in total, over all machines
    num_machines: int = 1
    mixed_precision: str = "no"  # no, bf16, fp16, fp8
    use_cpu: bool = False
    fsdp: dict[str, Any] = field(default_factory=dict)
    deepspeed: dict[str, Any] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return self.distributed_type in SHARDED

    @property
    def zero_stage(self) -> int | None:
        return int(self.deepspeed.get("zero_stage", 0)) if self.distributed_type == "DEEPSPEED" else None

    @property
    def fsdp_version(self) -> int | None:
        return int(self.fsdp.get("fsdp_version", 1)) if self.distributed_type == "FSDP" else None

    @property
    def shards_parameters(self) -> bool:
        """FSDP or ZeRO-3: each rank holds a slice of every weight, so saving and evaluating are collectives."""
        return self.distributed_type == "FSDP" or self.zero_stage == 3

    @property
    def processes_per_machine(self) -> int:
        return max(1, self.num_processes // max(1, self.num_machines))


def parse_launch(argv: list[str], source: str | None = None) -> Launch:
    """The launch that `accelerate launch ARGV` asks for (ARGV without `accelerate launch`)."""
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()) as said:
            args = launch_command_parser().parse_args(argv)
    except SystemExit:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        raise UserError(
            f"`accelerate launch {shlex.join(argv)}`: {lines[-1] if lines else 'not a valid launch'}"
        ) from None
    config_path = args.config_file or (default_config_file if os.path.isfile(default_config_file) else None)
    config = None
    if config_path is not None:
        if not os.path.isfile(config_path):
            raise UserError(f"--launch: accelerate config file not found: {config_path}")
        try:
            config = load_config_from_file(config_path)
        except Exception as exc:  # accelerate's own loader: a YAML error or a key its config classes do not know
            raise UserError(f"{config_path}: not an accelerate config file: {type(exc).__name__}: {exc}") from None
    return _merged(args, config, source or config_path or f"accelerate launch {shlex.join(argv)}")


def _merged(args: Any, config: Any, source: str) -> Launch:
    """Flags over the config file, the way accelerate's `_validate_launch_command` lets them."""
    kind = getattr(getattr(config, "distributed_type", None), "value", None) or "NO"
    flag_kind = {"use_fsdp": "FSDP", "use_deepspeed": "DEEPSPEED", "multi_gpu": "MULTI_GPU"}
    for flag, name in flag_kind.items():
        if getattr(args, flag, False):
            kind = name
    processes = args.num_processes or getattr(config, "num_processes", None)
    return Launch(
        source=source,
        distributed_type=kind,
        num_processes=processes if processes and processes > 0 else 1,
        num_machines=args.num_machines or getattr(config, "num_machines", None) or 1,
        mixed_precision=str(args.mixed_precision or getattr(config, "mixed_precision", None) or "no"),
        use_cpu=bool(args.cpu or getattr(config, "use_cpu", False)),
        fsdp=dict(getattr(config, "fsdp_config", None) or {}),
        deepspeed=dict(getattr(config, "deepspeed_config", None) or {}),
    )


def launch_from_environment() -> Launch:
    """A run started without `accelerate launch` in its parent (torchrun, or a launcher we cannot see): what the
    environment accelerate reads says."""
    kind = "FSDP" if _truthy("ACCELERATE_USE_FSDP") else "DEEPSPEED" if _truthy("ACCELERATE_USE_DEEPSPEED") else "NO"
    if kind == "NO" and world_size() > 1:
        kind = "MULTI_GPU"
    deepspeed = {}
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        deepspeed["zero_stage"] = int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"):
        deepspeed["zero3_save_16bit_model"] = _truthy("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL")
    fsdp = {"fsdp_version": int(os.environ.get("FSDP_VERSION", "1"))} if kind == "FSDP" else {}
    return Launch(
        source="the launch environment",
        distributed_type=kind,
        num_processes=world_size(),
        num_machines=max(1, world_size() // int(os.environ.get("LOCAL_WORLD_SIZE", world_size()) or 1)),
        mixed_precision=os.environ.get("ACCELERATE_MIXED_PRECISION", "no"),
        use_cpu=_truthy("ACCELERATE_USE_CPU"),
        fsdp=fsdp,
        deepspeed=deepspeed,
    )


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
        if part == "accelerate.commands.launch":  # python -m accelerate.commands.launch
            return ["accelerate", "launch", *cmd[i + 1 :]]
        if name == "torchrun" or part == "torch.distributed.run":
            return ["torchrun", *cmd[i + 1 :]]
    return None


def current_launch() -> tuple[Launch, list[str] | None]:
    """This process's launch, and the accelerate command that made it (None for torchrun or no launcher)."""
    cmd = launcher_command()
    if cmd and cmd[0] == "accelerate":
        return parse_launch(cmd[2:], source=shlex.join(cmd)), cmd
    return launch_from_environment(), None
