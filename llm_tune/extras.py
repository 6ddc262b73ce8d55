"""Optional features and the pip extra that brings each. `pip install llm_tune` brings what SFT, LoRA and
classification need; a feature whose package is missing is one `error:` line naming the install command."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from llm_tune.errors import UserError

# module -> the extra of pyproject.toml's [project.optional-dependencies] that installs it
EXTRAS = {"bitsandbytes": "qlora", "gguf": "gguf", "matplotlib": "report", "optuna": "sweep", "deepspeed": "deepspeed"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def install_command(module: str) -> str:
    return f"pip install 'llm_tune[{EXTRAS[module]}]'"


def missing(module: str, feature: str) -> str:
    """The one line that says `feature` needs `module` and how to install it."""
    return f"{feature} needs {module}, which is not installed: {install_command(module)}"


def require(module: str, feature: str) -> ModuleType:
    """The module, or a UserError naming the extra that installs it."""
    if not installed(module):
        raise UserError(missing(module, feature))
    return importlib.import_module(module)
