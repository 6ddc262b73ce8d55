"""Shared fixtures: a tiny random Llama with SmolLM2's real tokenizer, small data files, and two runners for the
real entry point: `call_cli` (in this process: `llm_tune.cli.main([...])`, the fast tier) and `run_cli` (`python -m
llm_tune ...` in a subprocess, where a process boundary is the point: signals, launches, tracebacks, imports)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: str, cwd: Path = ROOT, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run `python -m llm_tune ARGS`; returns the CompletedProcess (stdout+stderr text)."""
    done = subprocess.run(
        [sys.executable, "-m", "llm_tune", *map(str, args)],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"llm_tune {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def call_cli(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """`llm_tune.cli.main(ARGS)` in this process, as `run_cli` would run it: stdout and stderr captured, the exit code
    from SystemExit (0 when main returns). What main changes for the process (environment variables, warnings
    filters, library log levels, the working folder) is put back afterwards, so one case cannot leak into the next."""
    from llm_tune.cli import main

    environ, cwd_before = dict(os.environ), Path.cwd()
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.update({k: v for k, v in ENV.items() if k.startswith(("HF_", "TOKENIZERS"))})
        os.chdir(cwd)
        # catch_warnings puts the filters back (quiet_libraries adds some) and resets the registries' caches
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
        for name in list(logging.root.manager.loggerDict):
            logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
    done = subprocess.CompletedProcess(["llm_tune", *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"llm_tune {' '.join(map(str, args))} exited {code}:\n{done.stdout}\n{done.stderr}")
    return done


def run_cli_together(*commands: list, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Independent `python -m llm_tune` commands (each a list of args) run at the same time, so a module's set-up
    of several runs takes the wall time of the slowest; each must exit 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llm_tune", *map(str, args)],
            cwd=ROOT,
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    done = []
    for args, proc in zip(commands, procs):
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"llm_tune {' '.join(map(str, args))} exited {proc.returncode}:\n{stdout}\n{stderr}")
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_model(out: Path, seed: int = 0, tokenizer=None) -> Path:
    """A 2-layer Llama (random weights) with SmolLM2's tokenizer and chat template, or with `tokenizer`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(SMOLLM2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Small files in every format, shared by the tests."""
    d = tmp_path_factory.mktemp("data")
    alpaca = [
        {"instruction": f"Add {a} and {b}.", "input": "" if a % 2 else "Show the sum only.", "output": str(a + b)}
        for a, b in zip(range(1, 25), range(30, 54))
    ]
    write_jsonl(d / "alpaca.jsonl", alpaca[:20])
    write_jsonl(d / "alpaca_val.jsonl", alpaca[20:])
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"Say {w}."},
                {"role": "assistant", "content": w},
                {"role": "user", "content": "Again, louder."},
                {"role": "assistant", "content": w.upper() + "!"},
            ]
        }
        for w in ["hello", "apple", "river", "stone", "cloud", "green", "tiger", "piano"]
    ]
    write_jsonl(d / "chat.jsonl", chats)
    write_jsonl(d / "text.jsonl", [{"text": f"The number after {i} is {i + 1}."} for i in range(16)])
    words = ["great", "awful", "superb", "dreadful", "lovely", "boring", "brilliant", "terrible"]
    reviews = [
        {"text": f"The film was {w} from start to end, number {i}.", "label": "positive" if j % 2 == 0 else "negative"}
        for i in range(4)
        for j, w in enumerate(words)
    ]
    write_jsonl(d / "reviews.jsonl", reviews[:24])
    write_jsonl(d / "reviews_val.jsonl", reviews[24:])
    return d


def base_recipe(model: Path, data_dir: Path, out: Path, **sections) -> dict:
    """A recipe dict for the tiny model; `sections` deep-update it."""
    recipe = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "strategy": {"kind": "lora", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "data": {"train": str(data_dir / "alpaca.jsonl"), "format": "alpaca", "max_length": 128},
        "training": {
            "max_steps": 3,
            "learning_rate": 1e-3,
            "per_device_train_batch_size": 2,
            "logging_steps": 1,
            "save_steps": 100,
            "report_to": "none",
        },
        "output_dir": str(out),
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            recipe.setdefault(key, {}).update(value)
        else:
            recipe[key] = value
    set_strategy(recipe, recipe["strategy"]["kind"])
    return recipe


def set_strategy(recipe: dict, kind: str) -> dict:
    """Switch the recipe's strategy kind, keeping only the keys that kind takes (as `inherits:` does)."""
    from llm_tune.recipe.schema import STRATEGIES

    keys = STRATEGIES[kind].model_fields
    recipe["strategy"] = {k: v for k, v in recipe["strategy"].items() if k in keys} | {"kind": kind}
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def card_snippet_output(folder: Path, **replace: str) -> str:
    """Run the Python snippet of an export's model card as a user would (this folder in place of its placeholder,
    `replace` swapping the snippet's example strings) and return what it prints."""
    import re

    from llm_tune.export.card import HERE

    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace(HERE, str(folder))
    for old, new in replace.items():
        code = code.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()
