"""Every recipe key, under every kind of run: a value away from its default either changes what the run does or is
refused before anything loads (recipe/kinds.py). Generated from the schema: a key added later is checked here
without anyone listing it, and one that changes nothing fails by itself.

"What the run does" is read from the real steps the pipeline takes (tasks/): the prepared rows, the trainer's
arguments, its class and the state its mixins hold, its callbacks, the model's configuration and its trainable
weights, and what the run does after training (the evaluation's fits and predictions, the export's options, the
run folder). A key whose effect only shows once a run trains or resumes is listed in AFTER_TRAINING with the test
that shows it."""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from conftest import base_recipe, write_jsonl

# Keys whose effect shows only in a trained run, and the test that shows it.
AFTER_TRAINING = {
    "training.resume": "test_resume.py (a killed run resumed gives the same per-step losses)",
    "model.revision": "test_units.py::test_the_hub_revision_reaches_from_pretrained (local folders have no revisions)",
    "model.trust_remote_code": "test_units.py::test_the_hub_revision_reaches_from_pretrained (passed to from_pretrained)",
}
# Values for keys whose type alone does not give a valid one; "with": keys the value needs (in the baseline too).
SPECIAL: dict[str, dict[str, Any]] = {
    "model.name_or_path": {"value": "{other_model}"},
    "model.revision": {"value": "main"},
    "model.from_run": {"value": "{sft_run}"},
    "data.train": {"value": "{train_copy}"},
    "data.validation": {"value": "{validation_copy}"},
    "data.validation_fraction": {"value": 0.25, "with": {"data.validation": None}},
    "data.validation_seed": {"value": 7, "with": {"data.validation": None, "data.validation_fraction": 0.25}},
    "data.mix_by": {"value": "tokens", "with": {"data.train": "{two_sources}"}},
    "data.shuffle_buffer": {"value": 4, "with": {"data.streaming": True, "training.max_steps": 2}},
    "data.streaming": {"value": True, "with": {"data.validation": None}},
    "data.system_prompt": {"value": "Answer briefly."},
    "data.skip_bad_rows": {"value": True, "with": {"data.train": "{with_bad_row}"}},
    "data.chat_template": {"value": "{template}"},
    "data.prompt": {"value": "Text: {text}\nLabels: {labels}\nLabel:"},
    "data.label_separator": {"value": ";"},
    "data.max_length": {"value": 24},
    "data.fields.text_pair": {"value": "pair", "with": {"data.prompt": "A: {text} B: {text_pair} ({labels})"}},
    "classification.labels": {"value": "{labels_reordered}"},
    "classification.class_weights": {"value": "balanced"},
    "classification.thresholds": {"value": "{thresholds}"},
    "classification.temperature": {"value": 2.0},
    "classification.target_mean": {"value": 2.0, "with": {"classification.target_std": 1.0}},
    "classification.target_std": {"value": 3.0, "with": {"classification.target_mean": 1.0}},
    "strategy.target_modules": {"value": ["q_proj", "v_proj"]},
    "strategy.trainable_modules": {"value": ["norm"]},
    "strategy.layers_to_transform": {"value": [1]},
    "strategy.trainable_layers": {"value": 1},
    "strategy.unfreeze_every_steps": {"value": 1, "with": {"strategy.trainable_layers": 1}},
    "training.max_steps": {"value": 2},
    "training.eval_steps": {"value": 1},
    "training.early_stopping_patience": {"value": 2, "with": {"training.eval_steps": 1}},
    "training.early_stopping_threshold": {"value": 0.5, "with": {"training.eval_steps": 1, "training.early_stopping_patience": 2}},
    "training.metric_for_best_model": {"value": "{best_metric}", "with": {"training.eval_steps": 1, "training.early_stopping_patience": 2}},
    "preference.loss_weights": {"value": [0.5]},
    "preference.loss_type": {"value": ["hinge"]},
    "training.resume": {"value": "auto"},
    "export.out": {"value": "{export_out}"},
    "export.max_shard_size": {"value": "1GB"},
    "export.base_model_id": {"value": "me/base"},
    "export.license": {"value": "mit"},
    "output_dir": {"value": "{other_out}"},
}  # fmt: skip

KINDS = ("sft", "sft:labelled", "classification:generate", "classification:sequence", "multi_label", "regression",
         "preference")  # fmt: skip
# Keys that name the kind itself (and so change everything); each is still run through the check.
KIND_KEYS = {"task", "data.format", "classification.head", "strategy.kind", "preference.method"}
STRATEGY_BASES = {"lora": {}, "frozen": {"trainable_layers": 2}, "full": {}, "qlora": {}}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model, data_dir):
    """The rows of every kind, a second model, a finished SFT run to start from, a template with markers."""
    from conftest import build_tiny_model, call_cli, write_recipe

    w = tmp_path_factory.mktemp("keys")
    words = ["joy", "anger", "calm"]
    write_jsonl(w / "multi.jsonl", [{"text": f"a {words[i % 3]} day {i}", "labels": [words[i % 3], words[(i + 1) % 3]]
                                     if i % 2 else [words[i % 3]], "pair": f"p{i}"} for i in range(12)])  # fmt: skip
    write_jsonl(
        w / "score.jsonl", [{"text": f"a {i} here", "score": float(i % 5), "pair": f"b {i}"} for i in range(12)]
    )
    write_jsonl(w / "reviews.jsonl", [{**json.loads(line), "pair": "x"} for line in
                                      (data_dir / "reviews.jsonl").read_text().splitlines()])  # fmt: skip
    pairs = [{"prompt": [{"role": "user", "content": f"Name a colour, {i}."}],
              "chosen": [{"role": "assistant", "content": f"Blue, number {i}."}],
              "rejected": [{"role": "assistant", "content": f"I will not, {i}."}]} for i in range(12)]  # fmt: skip
    write_jsonl(w / "pairs.jsonl", pairs)
    for name in ("alpaca", "multi", "score", "reviews", "pairs"):
        source = data_dir / f"{name}.jsonl" if name == "alpaca" else w / f"{name}.jsonl"
        rows = source.read_text().splitlines()
        (w / f"{name}-copy.jsonl").write_text("\n".join(reversed(rows)) + "\n")  # other rows, in another order
        (w / f"{name}-bad.jsonl").write_text("\n".join([*rows, "{}"]) + "\n")  # one row with nothing in it
        longer = [
            {k: v * 4 if k in ("text", "output", "instruction") else v for k, v in json.loads(r).items()}
            for r in rows[:6]
        ]
        write_jsonl(w / f"{name}-long.jsonl", longer)  # rows of other lengths: shares by tokens differ from rows
        (w / f"{name}-val.jsonl").write_text("\n".join(rows[-4:]) + "\n")
    template = Path(tiny_model / "tokenizer_config.json")
    from transformers import AutoTokenizer

    from llm_tune.data.chat_templates import training_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    (w / "template.jinja").write_text(training_chat_template(tokenizer, None) or tokenizer.chat_template)
    other = build_tiny_model(w / "other-model", seed=1)
    sft = base_recipe(tiny_model, data_dir, w / "sft-run", training={"max_steps": 1, "save_steps": 1})
    call_cli(str(write_recipe(w / "sft.yaml", sft)))
    assert template.is_file()
    return {"w": w, "other_model": str(other), "sft_run": str(w / "sft-run"), "template": str(w / "template.jinja"),
            "export_out": str(w / "exported"), "other_out": str(w / "elsewhere")}  # fmt: skip


def kind_recipe(kind: str, files: dict, tiny_model: Path, data_dir: Path) -> dict:
    w = files["w"]
    data = {"alpaca": "alpaca", "multi": "multi", "score": "score", "reviews": "reviews", "pairs": "pairs"}
    name, sections = {
        "sft": ("alpaca", {"data": {"format": "alpaca"}}),
        "sft:labelled": ("reviews", {"data": {"format": "classification"}}),
        "classification:generate": ("reviews", {"task": "classification", "data": {"format": "classification"},
                                                "classification": {"head": "generate"}}),
        "classification:sequence": ("reviews", {"task": "classification", "data": {"format": "classification"},
                                                "classification": {"head": "sequence"}}),
        "multi_label": ("multi", {"task": "classification", "data": {"format": "multi_label"},
                                  "classification": {"head": "sequence"}}),
        "regression": ("score", {"task": "classification", "data": {"format": "regression"},
                                 "classification": {"head": "sequence"}}),
        "preference": ("pairs", {"task": "preference", "data": {"format": "preference"}}),
    }[kind]  # fmt: skip
    source = w / f"{data[name]}.jsonl" if name != "alpaca" else data_dir / "alpaca.jsonl"
    sections["data"] |= {"train": str(source), "validation": str(w / f"{data[name]}-val.jsonl"), "max_length": 256}
    recipe = base_recipe(tiny_model, data_dir, w / "out", **sections)
    recipe["training"] |= {"max_steps": 3, "save_steps": 100}
    return recipe


def leaf_keys(section: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, its field, its value) for every key of a recipe's sections as they are (the strategy's and the
    preference method's own classes)."""
    from pydantic import BaseModel

    found = []
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            found += leaf_keys(value, key + ".")
        elif key == "export":
            from llm_tune.recipe.schema import ExportConfig

            found += leaf_keys(ExportConfig(), "export.")
        else:
            found.append((key, info, value))
    return found


def alternative(key: str, info: Any, current: Any, context: dict) -> tuple[Any, dict]:
    """A valid value away from the default, and the keys it needs set with it (also set in its baseline)."""
    special = SPECIAL.get(key)
    if special is not None:
        return _filled(special["value"], context), {k: _filled(v, context) for k, v in special.get("with", {}).items()}
    annotation = info.annotation
    args = [annotation] if typing.get_origin(annotation) is typing.Literal else typing.get_args(annotation)
    args = [a for a in args if a is not type(None)] or [annotation]
    literal = next((a for a in args if typing.get_origin(a) is typing.Literal), None)
    if info.annotation is bool or bool in args:
        return not current, {}
    if literal is not None:
        return next(v for v in typing.get_args(literal) if v != current), {}
    if int in args and float not in args:
        return (current or 0) + 1, {}
    if float in args:
        return (current / 2) if current else 0.5, {}
    if key.startswith("data.fields."):  # a column the rows do not have: read (an error naming it) or refused
        return f"{current or 'column'}_renamed", {}
    raise AssertionError(f"{key}: no alternative value for {info.annotation}; add it to SPECIAL")


def _filled(value: Any, context: dict) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in context:
        return context[value[1:-1]]
    return value


def apply(recipe: dict, key: str, value: Any) -> dict:
    import copy

    recipe = copy.deepcopy(recipe)
    *path, name = key.split(".")
    section = recipe
    for part in path:
        section = section.setdefault(part, {})
    if value is None:
        section.pop(name, None)
    else:
        section[name] = value
    return recipe


def digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def stages(recipe_dict: dict) -> Any:
    """What the run does, cheapest first: a generator of (stage, digest); a refusal is ("refused", its lines)."""
    from llm_tune.errors import UserError
    from llm_tune.recipe.checks import check_recipe
    from llm_tune.recipe.schema import Recipe
    from llm_tune.run_folder import RunFolder
    from llm_tune.tasks import task_for
    from llm_tune.train.progress import use_progress

    try:
        recipe = Recipe.model_validate(recipe_dict)
    except Exception as exc:  # the schema's own refusal (pydantic)
        yield "refused", str(exc).splitlines()[:3]
        return
    if problems := check_recipe(recipe):
        yield "refused", problems
        return
    out = RunFolder(Path(recipe.output_dir))
    yield "after training", digest(_after_training(recipe))
    yield "arguments", digest(_arguments(recipe, out))
    task = task_for(recipe)
    try:
        prepared = task.prepare()
    except UserError as exc:
        yield "refused", list(exc.problems)
        return
    yield "data", digest(_data(prepared))
    model, counts = task.model(prepared)
    yield "model", digest(_model(model, counts))
    try:
        trainer = task.trainer(prepared, model, task.arguments(prepared, out), out)
    except UserError as exc:
        yield "refused", list(exc.problems)
        return
    use_progress(trainer, prepared.recipe.training.progress_every_s)  # as the pipeline does next
    yield "trainer", digest(_trainer(trainer))


def _after_training(recipe: Any) -> dict:
    """The evaluation's fits and predictions, the export's options, the run folder."""
    import numpy as np

    from llm_tune.export.job import export_options

    facts: dict[str, Any] = {"output_dir": recipe.output_dir}
    if recipe.export is not None:
        facts["export"] = export_options(recipe).model_dump()
    if recipe.is_classification:
        from llm_tune.classification.problems import problem_of

        problem = problem_of(recipe)
        c = recipe.classification
        labels = c.labels or ["l0", "l1", "l2"]  # discovered from the rows when the recipe names none
        named = recipe.model_copy(update={"classification": c.model_copy(update={"labels": labels})})
        output = np.linspace(-1.0, 1.0, len(labels)) if problem.named_outputs else np.float32(0.25)
        facts |= {"fits": problem.fits(c), "prediction": problem.prediction(named, output)}
    return facts


def _arguments(recipe: Any, out: Any) -> dict:
    from llm_tune.train.trainer import sft_config, trainer_arguments

    arguments = trainer_arguments(
        recipe, out, recipe.data.validation is not None or bool(recipe.data.validation_fraction)
    )
    if recipe.is_preference:
        from llm_tune.preference.trainer import preference_config

        config = preference_config(recipe, arguments).to_dict()
    elif recipe.sequence_head:
        config = arguments
    else:
        config = sft_config(recipe, arguments).to_dict()
    return {k: v for k, v in config.items() if k not in ("output_dir", "logging_dir")}


def _data(prepared: Any) -> dict:
    splits = prepared.splits
    rows = {name: getattr(splits, name) for name in ("train", "validation")}
    return {
        "rows": {name: split.to_list() if hasattr(split, "to_list") else repr(split) for name, split in rows.items() if split is not None},
        "labels": splits.labels,
        "template": prepared.tokenizer.chat_template,
        "resolved": prepared.recipe.classification.model_dump(include={"labels", "class_weights", "target_mean", "target_std"}),
        "stream": getattr(splits, "stream", None) is not None,
    }  # fmt: skip


def _model(model: Any, counts: Any) -> dict:
    import torch

    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    trained = {n: (list(p.shape), str(p.dtype), float(p.detach().float().sum()), float(p.detach().float().abs().sum()))
               for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
    frozen = sum(float(p.detach().float().abs().sum()) for p in model.parameters() if not p.requires_grad)
    peft = {name: c.to_dict() for name, c in getattr(model, "peft_config", {}).items()}
    attention = getattr(model.config, "_attn_implementation", None)
    return {"config": config, "peft": peft, "attention": attention, "trained": trained, "frozen": round(frozen, 3), "counts": counts,
            "checkpointing": getattr(model, "is_gradient_checkpointing", None), "cuda": torch.cuda.is_available()}  # fmt: skip


def _rows(dataset: Any) -> Any:
    """A dataset's rows; a stream's first ones (it passes over its file until training stops)."""
    import itertools

    if hasattr(dataset, "__len__"):
        return dataset.to_list()
    return list(itertools.islice(iter(dataset), 16))


def _trainer(trainer: Any) -> dict:
    state = {
        key: getattr(trainer, key, None)
        for key in ("mixture", "validation_sources", "layerwise_lr_decay", "unfreeze", "label_only")
    }
    rows = getattr(trainer, "label_rows", None)
    token_weight = getattr(trainer, "token_weight", None)
    datasets = {name: getattr(trainer, name) for name in ("train_dataset", "eval_dataset")}
    return {
        "class": type(trainer).__name__,
        "state": state,
        "label_rows": None if rows is None else [rows.prompts, rows.truth, rows.batch_size, rows.sources],
        "token_weight": None if token_weight is None else token_weight.tolist(),
        "loss": getattr(trainer, "compute_loss_func", None) is not None,
        "callbacks": [(type(c).__name__, {k: v for k, v in vars(c).items() if isinstance(v, (int, float, str, bool))})
                      for c in trainer.callback_handler.callbacks],
        "datasets": {name: _rows(d) for name, d in datasets.items() if d is not None},
        "args": trainer.args.to_dict(),
    }  # fmt: skip


def variants(kind: str, base: dict) -> list[tuple[str, dict, list[str]]]:
    """(name, base recipe, keys to check on it): every key on the kind's LoRA base, and each other strategy's and
    preference method's own keys on a base of that strategy (method)."""
    from conftest import set_strategy
    from llm_tune.recipe.preference import PREFERENCE_METHODS
    from llm_tune.recipe.schema import STRATEGIES, Recipe

    everything = [key for key, _, _ in leaf_keys(Recipe.model_validate(base))]
    found = [("lora", base, everything)]
    for strategy in ("frozen", "full", "qlora"):
        other = set_strategy(apply(base, "strategy", dict(base["strategy"])), strategy)
        other["strategy"] |= STRATEGY_BASES[strategy]
        keys = [f"strategy.{k}" for k in STRATEGIES[strategy].model_fields if f"strategy.{k}" not in everything]
        found.append((strategy, other, keys))
    if kind == "preference":
        for method, cls in PREFERENCE_METHODS.items():
            if method != "dpo":
                keys = [f"preference.{k}" for k in cls.model_fields if f"preference.{k}" not in everything]
                found.append((method, apply(base, "preference", {"method": method}), keys))
    return found


@pytest.fixture
def tokenizers(monkeypatch):
    """Each tokenizer read from disk once (a copy each time: a run sets its chat template), by what it loads with."""
    import copy

    from llm_tune.model import loading

    read: dict[tuple, Any] = {}
    original = loading.load_tokenizer

    def cached(cfg: Any) -> Any:
        key = (cfg.name_or_path, cfg.revision, cfg.trust_remote_code)
        if key not in read:
            read[key] = original(cfg)
        return copy.deepcopy(read[key])

    monkeypatch.setattr(loading, "load_tokenizer", cached)


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_changes_the_run_or_is_refused(kind, files, tiny_model, data_dir, tmp_path, monkeypatch, tokenizers):
    from llm_tune.recipe.schema import Recipe

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    context = files | _context(kind, files, data_dir)
    base = kind_recipe(kind, files, tiny_model, data_dir)
    baselines: dict[str, list] = {}
    results: dict[str, str] = {}
    for variant, recipe, keys in variants(kind, base):
        fields = {key: (info, value) for key, info, value in leaf_keys(Recipe.model_validate(recipe))}
        for key in keys:
            if key in KIND_KEYS or key not in fields:
                continue
            value, needs = alternative(key, *fields[key], context)
            start = recipe
            for k, v in needs.items():
                start = apply(start, k, v)
            label = f"{variant}: {key}"
            results[label] = _effect(start, apply(start, key, value), baselines)
    silent = {k: v for k, v in results.items() if v == "no effect" and k.split(": ")[1] not in AFTER_TRAINING}
    record = {"kind": kind, "checked": len(results), "refused": sum(v == "refused" for v in results.values()),
              "changed": sum(v.startswith("changes") for v in results.values()), "results": results}  # fmt: skip
    (Path(__file__).parent / ".keys").mkdir(exist_ok=True)
    (Path(__file__).parent / ".keys" / f"{kind.replace(':', '-')}.json").write_text(json.dumps(record, indent=1))
    assert not silent, f"{kind}: keys accepted that change nothing the run does: {sorted(silent)}"


def _effect(baseline: dict, changed: dict, cache: dict[str, list]) -> str:
    """'refused', 'changes STAGE' (the first stage that differs) or 'no effect'."""
    key = digest(baseline)
    if key not in cache:
        cache[key] = list(stages(baseline))
    if cache[key][0][0] == "refused":  # refused without it (bad rows), or what it needs is refused in this kind
        return "refused" if next(stages(changed))[0] == "refused" else "changes refusal"
    import gc

    try:
        for index, (stage, value) in enumerate(stages(changed)):
            if stage == "refused":
                return "refused"
            if index >= len(cache[key]) or cache[key][index] != (stage, value):
                return f"changes {stage}"
        return "no effect"
    finally:
        gc.collect()


def _context(kind: str, files: dict, data_dir: Path) -> dict:
    w = files["w"]
    name = {"sft": "alpaca", "preference": "pairs", "multi_label": "multi", "regression": "score"}.get(kind, "reviews")
    labels = {"multi_label": ["calm", "joy", "anger"]}.get(kind, ["positive", "negative"])
    return {
        "train_copy": str(w / f"{name}-copy.jsonl"),
        "validation_copy": str(w / f"{name}-copy.jsonl"),
        "two_sources": [{"path": str(w / f"{name}-copy.jsonl")}, {"path": str(w / f"{name}-long.jsonl"), "weight": 2}],
        "with_bad_row": str(w / f"{name}-bad.jsonl"),
        "labels_reordered": labels,
        "thresholds": {"joy": 0.3},
        "best_metric": "eval_rewards/accuracies" if kind == "preference" else "eval_accuracy",
    }
