"""Tokenize once: the main process runs TRL's own dataset preparation (tokenize, loss labels, truncate) and stores
the result under a key hashed from everything that shapes it; the other ranks, and later runs with the same
inputs, load it from there. SFTTrainer then sees `input_ids` and does not tokenize again.

The cache lives in $LLM_TUNE_CACHE (default ~/.cache/llm_tune/tokenized). On several machines it must be a folder
they all see, as OUTPUT_DIR must be.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from llm_tune.console import is_main_process, say
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe

if TYPE_CHECKING:
    from llm_tune.data.formats import Splits

CACHE_ENV = "LLM_TUNE_CACHE"
DONE = "llm_tune-cache.json"  # written before the folder is renamed into place: no folder, no cache
LAYOUT_VERSION = 1  # bump when what is stored changes


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm_tune" / "tokenized"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_identity(spec: str | None) -> str | None:
    """A local file by its content; a Hub dataset by its name (its revision is whatever datasets resolves)."""
    if spec is None:
        return None
    path = Path(spec)
    return f"sha256:{file_digest(path)}" if path.is_file() else f"hub:{spec}"


def _tokenizer_identity(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    parts = [
        type(tokenizer).__name__, vocabulary, tokenizer.chat_template or "", tokenizer.padding_side,
        json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_key(recipe: Recipe, tokenizer: Any, labels: list[str] | None, args: Any) -> str:
    import datasets
    import trl

    data = recipe.data
    inputs = {
        "layout": LAYOUT_VERSION,
        "versions": [trl.__version__, datasets.__version__],
        "data": data.model_dump(mode="json"),
        "files": [_source_identity(s) for s in (data.train, data.validation, data.chat_template)],
        "labels": labels,
        "tokenizer": _tokenizer_identity(tokenizer),
        "preparation": {
            name: getattr(args, name, None)
            for name in ("max_length", "packing", "eval_packing", "completion_only_loss", "assistant_only_loss",
                         "dataset_text_field", "truncation_mode", "shuffle_dataset")
        },
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tokenized_splits(recipe: Recipe, tokenizer: Any, splits: Splits, args: Any) -> Splits:
    """`splits` tokenized as SFTTrainer would, from the cache when it holds them (causal-LM training only)."""
    from llm_tune.ranks import agree, barrier

    preparer = _preparer(args, tokenizer, splits.train)
    if preparer is None:
        say("tokenized-data cache: this trl version prepares data differently; tokenizing in the trainer")
        return splits
    folder = cache_root() / cache_key(recipe, tokenizer, splits.labels, args)
    if agree((folder / DONE).is_file()):  # every rank must take the same branch: _build has collectives
        say(f"tokenized data: reusing the cache {folder} (same data, tokenizer and settings)")
    else:
        _build(folder, preparer, splits, tokenizer, args)
        barrier()
    return _load(folder, splits)


def _preparer(args: Any, tokenizer: Any, sample_split: Any) -> Any:
    """What SFTTrainer._prepare_dataset reads from its trainer, set the way SFTTrainer.__init__ sets it."""
    try:
        from trl import SFTTrainer
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    except ImportError:
        return None
    if not hasattr(SFTTrainer, "_prepare_dataset"):
        return None
    sample = sample_split[0]
    completion_only = args.completion_only_loss
    if completion_only is None:
        completion_only = "prompt" in sample and "completion" in sample
    template = None
    if args.assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
        template = get_training_chat_template(tokenizer)
    return SimpleNamespace(
        _tokenizer=getattr(tokenizer, "tokenizer", tokenizer),
        chat_template=template,
        completion_only_loss=completion_only,
        prepare=SFTTrainer._prepare_dataset,
    )


def _build(folder: Path, preparer: Any, splits: Splits, tokenizer: Any, args: Any) -> None:
    prepared = {}
    for name, split, packing in (
        ("train", splits.train, args.packing),
        ("validation", splits.validation, args.packing if args.eval_packing is None else args.eval_packing),
    ):
        if split is None:
            continue
        if "label" in split.column_names:
            split = split.remove_columns("label")
        # Packing stays with the trainer (it packs token ids, cheaply); so do truncation and the shuffle it owns.
        split_args = copy.copy(args)
        split_args.shuffle_dataset = False
        if packing:
            split_args.max_length = None
        # The other ranks prepare one row: TRL orders preparation main-process-first with barriers, and they
        # must reach the same barriers; their real data is loaded from the cache afterwards.
        rows = split if is_main_process() else split.select(range(1))
        prepared[name] = preparer.prepare(preparer, rows, tokenizer, split_args, False, None, name)
    if is_main_process():
        _save(folder, prepared)
        say(f"tokenized data cached in {folder}")


def _save(folder: Path, prepared: dict[str, Any]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for name, dataset in prepared.items():
        dataset.save_to_disk(str(staging / name))
    (staging / DONE).write_text(json.dumps({n: len(d) for n, d in prepared.items()}) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished earlier attempt
    os.replace(staging, folder)


def _load(folder: Path, splits: Splits) -> Splits:
    from datasets import load_from_disk

    if not (folder / DONE).is_file():
        raise UserError(
            f"the tokenized-data cache {folder} is not readable here;"
            f" set {CACHE_ENV} to a folder that every machine of the job shares"
        )
    train = load_from_disk(str(folder / "train"))
    validation = load_from_disk(str(folder / "validation")) if splits.validation is not None else None
    return replace(splits, train=train, validation=validation)
