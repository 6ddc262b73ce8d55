"""Cross-field rules and the paths a recipe names, checked before any model loads: each problem is one line
naming its key. Torch-free: `validate` answers in a fraction of a second."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from llm_tune.errors import UserError
from llm_tune.extras import installed, missing
from llm_tune.recipe.data import DataConfig
from llm_tune.recipe.kinds import unhonoured_keys
from llm_tune.recipe.schema import FrozenStrategy, LoraStrategy, ModelConfig, Recipe
from llm_tune.recipe.sources import DATA_LOADERS, DEFAULT_MODEL_FOLDER, ModelSource
from llm_tune.recipe.target_checks import target_problems

# Files any of which holds a transformers tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_checked(recipe_path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """The resolved recipe, after the schema and every cross-field rule; UserError lists each problem."""
    from llm_tune.recipe.loading import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    problems = check_recipe(recipe)
    if problems:
        raise UserError(*(f"{recipe_path}: {p}" for p in problems))
    return recipe


def check_recipe(recipe: Recipe) -> list[str]:
    problems = check_model_source(recipe.model) + check_data_paths(recipe.data) + check_output_dir(recipe.output_dir)
    strategy, data, training = recipe.strategy, recipe.data, recipe.training
    problems += missing_extras(recipe)
    layers = num_hidden_layers(recipe.model) if not problems else None
    if isinstance(strategy, LoraStrategy) and layers is not None and strategy.layers_to_transform:
        outside = [i for i in strategy.layers_to_transform if not 0 <= i < layers]
        if outside:
            problems.append(f"strategy.layers_to_transform: {outside} outside the model's blocks 0 to {layers - 1}")
    if isinstance(strategy, FrozenStrategy) and layers is not None and strategy.trainable_layers > layers:
        problems.append(
            f"strategy.trainable_layers: {strategy.trainable_layers}, but the model has {layers} blocks;"
            f" choose 1 to {layers}"
        )
    if getattr(recipe.preference, "reference", "start") == "base" and recipe.model.from_run is None:
        problems.append(
            "preference.reference: base differs from start only when the run starts from another run"
            " (model.from_run); without it the start is the base: remove it"
        )
    if (recipe.task == "preference") != (data.format == "preference"):
        problems.append(
            f"data.format: {data.format} with task {recipe.task}; task preference and data.format"
            " preference go together"
        )
    if recipe.export and recipe.export.format == "gguf":
        if recipe.sequence_head and recipe.data.format != "classification":
            problems.append(
                f"export.format: gguf folds a single-label head into LM-head rows; a {recipe.data.format} head has no"
                " such form: use export.format: safetensors"
            )
        if recipe.export.dtype is not None:
            problems.append(
                "export.dtype: applies to export.format safetensors; a GGUF's weights take export.gguf_type"
            )
    if training.packing and data.mixed:
        problems.append(
            "training.packing: packs rows of every source into shared sequences, so a mixture's shares (data.train as"
            " a list) cannot be kept; set packing: false, or give data.train one file"
        )
    if training.resume not in (None, "auto") and not Path(training.resume).is_dir():
        problems.append(f"training.resume: {training.resume} is not a checkpoint folder; use auto or a checkpoint path")
    if recipe.classification.labels is not None and len(set(recipe.classification.labels)) < 2:
        problems.append("classification.labels: give at least two distinct labels")
    if isinstance(strategy, FrozenStrategy) and strategy.trainable_layers == 0 and not strategy.trainable_modules:
        if not recipe.sequence_head:
            problems.append(
                "strategy.trainable_layers: 0 with no strategy.trainable_modules trains nothing; a linear probe needs"
                " a classification head (classification.head: sequence) or modules to train (e.g. [lm_head])"
            )
    problems += unhonoured_keys(recipe)  # a key this kind of run would ignore (recipe/kinds.py)
    return problems + _evaluation_problems(recipe) + _streaming_problems(recipe) + target_problems(recipe)


def _evaluation_problems(recipe: Recipe) -> list[str]:
    """Evaluation during training needs validation rows; the best-checkpoint keys need evaluations to compare."""
    training, data = recipe.training, recipe.data
    problems = []
    has_validation = data.validation is not None or data.validation_fraction is not None
    if training.eval_steps is not None and not has_validation:
        problems.append(
            f"training.eval_steps: {training.eval_steps}, but there are no validation rows to evaluate;"
            " set data.validation or data.validation_fraction"
        )
    for key in ("early_stopping_patience", "early_stopping_threshold"):
        value = getattr(training, key)
        if value is not None and (training.eval_steps is None or not has_validation):
            problems.append(
                f"training.{key}: {value} needs evaluations to compare; set training.eval_steps and validation rows"
                " (data.validation or data.validation_fraction)"
            )
    if training.early_stopping_threshold is not None and training.early_stopping_patience is None:
        problems.append(
            f"training.early_stopping_threshold: {training.early_stopping_threshold} without"
            " training.early_stopping_patience has no effect (it only decides when early stopping counts an"
            " evaluation as better); set training.early_stopping_patience, or drop the threshold"
        )
    metric = training.metric_for_best_model
    preference_metric = metric.startswith("eval_rewards/")
    task_of_metric = "preference" if preference_metric else "classification"
    fits = recipe.task == "preference" if preference_metric else recipe.is_classification
    if metric != "eval_loss" and not fits:
        problems.append(f"training.metric_for_best_model: {metric} is a {task_of_metric} metric; use eval_loss")
    return problems


def _streaming_problems(recipe: Recipe) -> list[str]:
    """data.streaming reads one file of SFT rows in passes until training.max_steps: what needs the whole file (an
    epoch's length, packing, a mixture's shares, carving validation rows, a label set) cannot stream."""
    data, training = recipe.data, recipe.training
    if not data.streaming:
        default = DataConfig.model_fields["shuffle_buffer"].default
        if data.shuffle_buffer != default:
            return [
                f"data.shuffle_buffer: {data.shuffle_buffer} shuffles a stream; set data.streaming: true, or drop it"
            ]
        return []
    problems = []
    if training.max_steps <= 0:
        problems.append(
            "data.streaming: a stream has no length to count epochs in; set training.max_steps (the steps to train)"
        )
    if data.format not in ("alpaca", "chat", "completion"):
        problems.append(
            f"data.streaming: streams alpaca, chat and completion rows; {data.format} rows are loaded whole (a label"
            " set, pairs): set data.streaming: false"
        )
    refused = {
        "training.packing": (training.packing, "packs a loaded split; set packing: false"),
        "data.train": (data.mixed, "a list of sources is drawn by shares of a loaded epoch; stream one file"),
        "data.validation_fraction": (
            data.validation_fraction is not None,
            "carves rows out of a loaded file; give data.validation a file",
        ),
    }
    problems += [f"{key}: with data.streaming, {why}" for key, (given, why) in refused.items() if given]
    if not data.mixed and Path(data.train_sources[0].path).suffix == ".json":
        problems.append(
            f"data.train: {data.train_label} is one JSON document, read whole; stream JSON Lines (.jsonl), .csv or"
            " .parquet"
        )
    return problems


def check_model_source(cfg: ModelConfig) -> list[str]:
    """Problems findable without loading weights: a missing local path, a Hub id while offline."""
    source = ModelSource.parse(cfg.name_or_path)
    default = Path(cfg.name_or_path) == Path(DEFAULT_MODEL_FOLDER)
    hint = " (run `make model` to write the default model there)" if default else ""
    if source.is_local and not source.path.exists():
        return [f"model.name_or_path: {source.path} does not exist{hint}"]
    if source.is_local:
        return _local_model_problems(source)
    if not source.is_local and os.environ.get("HF_HUB_OFFLINE") == "1":
        if default:
            return [f"model.name_or_path: {cfg.name_or_path} does not exist{hint}"]
        return [
            f"model.name_or_path: {cfg.name_or_path!r} is not a local folder or file, and HF_HUB_OFFLINE=1 keeps"
            " the Hub out of reach; give a local path, or unset HF_HUB_OFFLINE to download it"
        ]
    return []


def _local_model_problems(source: ModelSource) -> list[str]:
    """A local model that cannot load: not a GGUF file, or a folder without a readable config or a tokenizer."""
    where = f"model.name_or_path: {source.path}"
    if source.gguf_file:
        if not source.path.is_file():
            return [f"{where} is not a file"]
        with source.path.open("rb") as handle:
            magic = handle.read(4)
        return [] if magic == b"GGUF" else [f"{where} is not a GGUF file (it starts with {magic!r}, not b'GGUF')"]
    if not source.path.is_dir():
        return [f"{where} is a file; give a transformers model folder or a .gguf file"]
    config = source.path / "config.json"
    if not config.is_file():
        return [f"{where} holds no model (no config.json); give a transformers model folder or a .gguf file"]
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"{where}/config.json is not valid JSON ({str(exc).splitlines()[0]})"]
    if not any((source.path / name).is_file() for name in TOKENIZER_FILES):
        return [f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer with the model"]
    return []


def check_output_dir(output_dir: str) -> list[str]:
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        return [f"output_dir: {output_dir} is a file, not a folder; choose another output_dir"]
    existing = next((parent for parent in (path, *path.parents) if parent.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        return [f"output_dir: {output_dir} cannot be written ({existing} is read-only); choose another output_dir"]
    return []


def check_data_paths(cfg: DataConfig) -> list[str]:
    problems = []
    for key in ("train", "validation"):
        value = getattr(cfg, key)
        sources = cfg.train_sources if key == "train" else cfg.validation_sources
        for i, source in enumerate(sources):
            where = f"data.{key}[{i}].path" if isinstance(value, list) else f"data.{key}"
            problems += _data_path_problems(where, source.path)
    if cfg.mixed and cfg.format == "preference":
        problems.append(
            "data.train: a list of sources mixes SFT and classification rows; a preference run trains on one file"
        )
    if isinstance(cfg.validation, list) and (cfg.format == "preference" or cfg.labelled):
        problems.append(
            f"data.validation: a list of sources is for SFT runs; a {cfg.format} run validates on one file (with a"
            " data.train mixture, data.validation_fraction carves validation rows that keep their sources)"
        )
    if cfg.chat_template and not Path(cfg.chat_template).is_file():
        problems.append(f"data.chat_template: file not found: {cfg.chat_template}")
    return problems


def _data_path_problems(where: str, spec: str) -> list[str]:
    path = Path(spec)
    if path.suffix in DATA_LOADERS and not path.is_file():
        return [f"{where}: file not found: {spec}"]
    if path.suffix and path.suffix not in DATA_LOADERS:
        return [f"{where}: {spec}: unsupported file type; use .jsonl, .json, .csv or .parquet"]
    if not path.suffix and not path.exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        return [f"{where}: {spec!r} is not a local file and HF_HUB_OFFLINE=1 is set"]
    return []


def missing_extras(recipe: Recipe) -> list[str]:
    """The optional packages (pip extras) this recipe's features need and this install lacks, one line each."""
    needs = {  # key: (module, the feature, as the user wrote it)
        "strategy.kind": ("bitsandbytes", "qlora") if recipe.four_bit else None,
        "model.name_or_path": ("gguf", "a .gguf model")
        if ModelSource.parse(recipe.model.name_or_path).gguf_file
        else None,
        "export.format": ("gguf", "a gguf export") if recipe.export and recipe.export.format == "gguf" else None,
    }
    return [f"{key}: {missing(*need)}" for key, need in needs.items() if need and not installed(need[0])]


def num_hidden_layers(cfg: ModelConfig) -> int | None:
    """The model's block count read from its config or GGUF header, without loading weights."""
    source = ModelSource.parse(cfg.name_or_path)
    if source.gguf_file:
        from gguf import GGUFReader

        reader = GGUFReader(str(source.path))
        for name, field in reader.fields.items():
            if name.endswith(".block_count"):
                return int(field.parts[field.data[0]][0])
        return None
    config = source.path / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    layers = data.get("num_hidden_layers") or data.get("n_layer")
    return int(layers) if layers is not None else None
