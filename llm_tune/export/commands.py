"""The `export` and `push` subcommands' arguments. Kept apart from cli.py so that file only dispatches;
nothing heavy is imported here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from llm_tune.errors import UserError
from llm_tune.recipe.schema import ExportConfig

DTYPES = ("bfloat16", "float16", "float32")
QLORA_BASES = ("dequantized", "original")
# The recipe schema's own choices, so the command line and `export:` accept the same values.
FORMATS = get_args(ExportConfig.model_fields["format"].annotation)
GGUF_TYPES = get_args(ExportConfig.model_fields["gguf_type"].annotation)


def add_export_commands(sub: Any) -> None:
    export = sub.add_parser("export", help="export a run as an adapter, a merged model folder or a GGUF, verified")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, help="export folder (default: RUN_DIR/export/adapter, .../merged or .../gguf)")
    export.add_argument("--format", help="safetensors (default: the recipe's export.format) or gguf (llama.cpp, Ollama)")
    export.add_argument("--gguf-type", help="--format gguf: f32, f16 (default), bf16 or q8_0")
    export.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                        help="merge the adapter into the base (default: the recipe's export.merge, else no)")
    # Checked by hand, not by argparse choices, so a mistake is one `error:` line like every other.
    export.add_argument("--dtype", help="bfloat16, float16 or float32 (default: the dtype it trained in)")
    export.add_argument("--qlora-base", help="qlora merges: dequantized (default, reproduces training) or original")
    export.add_argument("--max-shard-size", help="split merged weights above this size (default 2GB)")
    push = sub.add_parser("push", help="upload an export to the Hugging Face Hub in one commit")
    push.add_argument("path", type=Path, metavar="RUN_DIR|EXPORT_DIR")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--merged", action="store_true", help="from a RUN_DIR: push the merged export")
    push.add_argument("--revision", help="branch to commit to (created if missing)")
    push.add_argument("--timeout", type=float, default=60.0, help="seconds any one network call may take")


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise UserError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def run_export_command(args: argparse.Namespace) -> None:
    if args.command == "export":
        from llm_tune.export import export_command

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
        return
    if args.timeout <= 0:
        raise UserError(f"--timeout: must be a positive number of seconds, got {args.timeout}")
    from llm_tune.export.push import push_command

    push_command(args.path, args.repo_id, private=args.private, merged=args.merged,
                 revision=args.revision, timeout=args.timeout)
