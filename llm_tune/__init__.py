"""llm_tune: a strict, PEFT-focused fine-tuner for language models."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)
