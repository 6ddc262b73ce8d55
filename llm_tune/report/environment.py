"""What a run trained on, recorded when it starts (RUN_DIR/environment.json): library versions, device, dtype."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_tune import __version__
from llm_tune.recipe.schema import Recipe

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes")


def environment(recipe: Recipe, kind: str) -> dict[str, Any]:
    """What the run ran on and as (`kind`: the task's description), for environment.json and the report."""
    from llm_tune.model.precision import mixed_precision, weights_dtype_name
    from llm_tune.ranks import world_size

    versions = {"llm_tune": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    dtype = weights_dtype_name(recipe.model) + " weights"
    if recipe.four_bit is not None:
        dtype = f"4-bit {recipe.four_bit.bnb_4bit_quant_type} base + {dtype.replace(' weights', ' adapter')}"
    if mixed_precision(recipe.model):
        dtype += ", bfloat16 autocast"
    return {
        "versions": versions,
        "device": _device(),
        "processes": world_size(),
        "run": kind,
        "dtype": dtype,
        "platform": platform.platform(),
    }


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def cpu_name() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux (neither psutil nor platform reports it there)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
