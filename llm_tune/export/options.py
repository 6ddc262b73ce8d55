"""The `export` and `push` commands' option checks: the command line accepts exactly the values the recipe's
`export:` section does. Nothing heavy is imported here."""

from __future__ import annotations

import argparse
from typing import get_args

from llm_tune.errors import UserError
from llm_tune.recipe.schema import ExportConfig

DTYPES = ("bfloat16", "float16", "float32")
QLORA_BASES = ("dequantized", "original")
# The recipe schema's own choices, so the command line and `export:` accept the same values.
FORMATS = get_args(ExportConfig.model_fields["format"].annotation)
GGUF_TYPES = get_args(ExportConfig.model_fields["gguf_type"].annotation)


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise UserError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def export_from_args(args: argparse.Namespace) -> None:
    from llm_tune.export.exporter import export_command

    export_command(
        args.run_dir,
        out=str(args.out) if args.out else None,
        format=_choice("--format", args.format, FORMATS),
        gguf_type=_choice("--gguf-type", args.gguf_type, GGUF_TYPES),
        merge=args.merge,
        dtype=_choice("--dtype", args.dtype, DTYPES),
        qlora_merge_base=_choice("--qlora-base", args.qlora_base, QLORA_BASES),
        max_shard_size=args.max_shard_size,
    )


def push_from_args(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise UserError(f"--timeout: must be a positive number of seconds, got {args.timeout}")
    from llm_tune.export.push import push_command

    push_command(
        args.path, args.repo_id, private=args.private, merged=args.merged, revision=args.revision, timeout=args.timeout
    )
