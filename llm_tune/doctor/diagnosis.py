"""`python -m llm_tune doctor RECIPE.yaml`: before any training, what the run will use and whether it is sound.

The device and dtype, a memory estimate (estimate.py), the rows as TRL tokenizes them with the trained tokens
marked, the EOS and pad checks, token lengths and truncation, label balance, duplicates and leakage (checks.py), and
the time per epoch from a few measured steps (timing.py). Problems are errors (exit 2), risks are warnings; nothing
is written but the optional --json file. Imported only by the `doctor` command.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from llm_tune.classification.problems import problem_of
from llm_tune.doctor import checks
from llm_tune.doctor.checks import Findings
from llm_tune.doctor.estimate import Device, MemoryEstimate
from llm_tune.doctor.report import DoctorReport, PreferenceReport, SourceCount, publish
from llm_tune.doctor.text import report_lines
from llm_tune.doctor.timing import TimeEstimate
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


def doctor_command(
    recipe_path: Path, overrides: list[str], json_path: Path | None, launch_config: str | None = None
) -> DoctorReport | PreferenceReport:
    from llm_tune.recipe.checks import load_checked

    return doctor(load_checked(recipe_path, overrides), recipe_path, json_path, launch_config)


def doctor(
    recipe: Recipe, recipe_path: Path, json_path: Path | None, launch_config: str | None = None
) -> DoctorReport | PreferenceReport:
    """Print the report (and write it to json_path); raise UserError listing the problems, if any. With
    `launch_config` (an accelerate config file), the launch is checked first: its errors stop before anything loads."""
    if recipe.data.streaming:  # doctor measures every row's length; a stream's rows are read as it trains
        raise UserError(
            f"{recipe_path}: data.streaming: doctor measures a loaded file's rows; run it with data.streaming=false"
            " on a sample of the file (the first rows), or train directly"
        )
    from llm_tune.tasks import task_for

    task = task_for(recipe)
    if task.doctor_measures:  # its memory (two answers a row, the reference) is measured, not modelled
        from llm_tune.doctor.preference import preference_doctor

        if launch_config:
            raise UserError(f"{recipe_path}: doctor --launch checks SFT and classification recipes; not {task.kind}")
        return preference_doctor(recipe, recipe_path, json_path, device_section(recipe))
    import peft  # noqa: F401  (imported before measuring the runtime: training imports them too)
    import trl  # noqa: F401

    found = Findings()
    launch = check_launch_config(recipe, launch_config, found) if launch_config else None
    prepared = task.prepare()
    recipe, tokenizer, splits = prepared.recipe, prepared.tokenizer, prepared.splits  # as the run resolves it
    runtime = resident_bytes()  # Python, torch, the libraries, tokenizer and data: all but the model
    model, (trainable, total) = task.model(prepared)
    device = device_section(recipe)
    rows = tokenized_rows(recipe, model, tokenizer, splits)
    sections = data_sections(recipe, tokenizer, splits, rows, found)
    launched = launch_section(recipe, launch, len(rows), found) if launch is not None else None
    memory = memory_section(recipe, model, rows, runtime, device, found)
    report = DoctorReport(
        recipe=str(recipe_path),
        model=recipe.model.name_or_path,
        strategy=recipe.strategy.kind,
        task=recipe.task,
        trainable_params=trainable,
        total_params=total,
        device=device,
        memory=memory,
        time=time_section(recipe, model, tokenizer, splits, rows, sections.get("sources")),
        warnings=found.warnings,
        errors=found.errors,
        launch=launched,
        **sections,
    )
    publish(report_lines(report), report.as_json(), json_path, found.errors)
    return report


def check_launch_config(recipe: Recipe, config: str, found: Findings) -> Any:
    """`--launch CONFIG`: the recipe under `accelerate launch --config_file CONFIG` on this machine; errors stop here,
    before the tokenizer, data or model load."""
    from llm_tune.train.launch import parse_launch
    from llm_tune.train.launch_checks import Hardware, launch_findings

    launch = parse_launch(["--config_file", config, "-m", "llm_tune", "RECIPE"], source=config)
    errors, warnings = launch_findings(recipe, launch, Hardware.here())
    if errors:
        raise UserError(*errors)
    found.warnings.extend(warnings)
    return launch


def launch_section(recipe: Recipe, launch: Any, rows: int, found: Findings) -> dict[str, Any]:
    from llm_tune.train.launch_checks import batch_remainder_warning

    t = recipe.training
    section = {
        "config": launch.source,
        "distributed_type": launch.distributed_type,
        "num_processes": launch.num_processes,
        "num_machines": launch.num_machines,
        "mixed_precision": launch.mixed_precision,
        "global_batch": t.per_device_train_batch_size * t.gradient_accumulation_steps * launch.num_processes,
    }
    # Packed rows are rebuilt into sequences, so the remainder is about sequences nobody can count before packing.
    remainder = None if t.packing else batch_remainder_warning(rows, recipe, launch)
    if remainder:
        found.warnings.append(remainder)
    return section


def data_sections(recipe: Recipe, tokenizer: Any, splits: Any, rows: list[dict[str, Any]], found: Findings) -> dict:
    """Token lengths, trained tokens, two rendered rows, label balance, duplicates and leakage."""
    max_length = recipe.data.max_length
    lengths = {name: _lengths(recipe, split, tokenizer)
               for name, split in (("train", splits.train), ("validation", splits.validation)) if split is not None}  # fmt: skip
    sections: dict[str, Any] = {"tokens": {split: checks.length_stats(n, max_length) for split, n in lengths.items()}}
    checks.truncation_findings(sections["tokens"], found)
    truncated = {i for i, n in enumerate(lengths["train"]) if n > max_length}
    sections["trained_tokens"] = trained_section(recipe, tokenizer, splits, rows, truncated, found)
    sections["rows"] = [_shown_row(recipe, tokenizer, row, splits) for row in rows[:2]]
    if splits.labels is not None and not problem_of(recipe).targets:  # one label a row
        train_labels, val_labels = (_labels(s) for s in (splits.train, splits.validation))
        sections["labels"] = checks.label_findings(train_labels, val_labels, splits.labels, found)
    classifying = recipe.reads_labels
    keys = {name: [checks.row_key(r, classifying) for r in split] if split is not None else None
            for name, split in (("train", splits.train), ("validation", splits.validation))}  # fmt: skip
    sections["duplicates"] = checks.duplicate_findings(keys["train"], keys["validation"], found)
    if splits.source_names:
        sections["sources"] = source_section(recipe, splits, rows, lengths)
    return sections


def source_section(
    recipe: Recipe, splits: Any, rows: list[dict[str, Any]], lengths: dict[str, list[int]]
) -> list[SourceCount]:
    """Rows and tokens per source of a mixture (the training rows as they train, truncated), with each source's
    rows per epoch; the validation sources' rows and tokens (before truncation)."""
    from llm_tune.data.mixture import SOURCE, epoch_shares

    found: list[SourceCount] = []
    names = splits.source_names
    if "train" in names:
        data = recipe.data
        column = splits.train[SOURCE]
        weights = [source.weight for source in data.train_sources]
        lengths_trained = [len(row["input_ids"]) for row in rows]
        shares = epoch_shares(names["train"], weights, lengths_trained, [column[r["row"]] for r in rows], data.mix_by)
        found += [SourceCount("train", s.name, s.rows, s.tokens, s.weight, s.epoch_rows) for s in shares]
    if "validation" in names:
        column = splits.validation[SOURCE]
        for index, name in enumerate(names["validation"]):
            members = [n for n, s in zip(lengths["validation"], column) if s == index]
            found.append(SourceCount("validation", name, len(members), sum(members)))
    return found


def resident_bytes() -> int:
    """This process's resident memory now."""
    import psutil

    return psutil.Process().memory_info().rss


def device_section(recipe: Recipe) -> Device:
    """Where the run computes and in which dtype, with the memory there."""
    import torch

    from llm_tune.model.precision import mixed_precision, native_bf16, weights_dtype_name

    weights = weights_dtype_name(recipe.model)
    mixed = mixed_precision(recipe.model)
    compute = "bfloat16 autocast" if mixed and weights == "float32" else weights
    why = {
        "auto": "auto: native bfloat16 here"
        if native_bf16()
        else "auto: no native bfloat16 here, no AVX512-BF16 or AMX",
        "float32": "model.dtype float32: exact, no autocast",
        "bfloat16": "model.dtype bfloat16",
    }[recipe.model.dtype]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name, kind = torch.cuda.get_device_name(), "cuda"
    else:
        import psutil

        from llm_tune.report.environment import cpu_name

        memory = psutil.virtual_memory()
        total, free = memory.total, memory.available
        threads = torch.get_num_threads()
        name, kind = f"{cpu_name()}, {threads} thread{'s' * (threads != 1)}", "cpu"
    four_bit = recipe.four_bit
    return Device(
        device=kind, name=name, weights_dtype=weights, compute=compute, why=why,
        base=f"{four_bit.bnb_4bit_quant_type} 4-bit (bitsandbytes)" if four_bit else weights,
        compute_bytes=2 if mixed or weights == "bfloat16" else 4, memory_total=total, memory_available=free,
    )  # fmt: skip


def tokenized_rows(recipe: Recipe, model: Any, tokenizer: Any, splits: Any) -> list[dict[str, Any]]:
    """The training rows exactly as the trainer tokenizes them (TRL's masks and truncation, or the classifier's
    encoding), each with its index in the training split; unpacked, so each is one row."""
    from llm_tune.data.formats import Splits
    from llm_tune.train.trainer import build_trainer

    plain = recipe.model_copy(deep=True)
    plain.training.packing = False
    plain.training.report_to = "none"
    indexed = splits.train.add_column("doctor_row", list(range(len(splits.train))))
    with tempfile.TemporaryDirectory(prefix="llm_tune-doctor-") as scratch:
        trainer = build_trainer(plain, model, tokenizer, Splits(indexed, None, splits.labels), RunFolder(Path(scratch)))
    data = trainer.train_dataset
    # The classifier's encoding keeps every row (it keeps the end of a long prompt): its order is the split's.
    order = data["doctor_row"] if "doctor_row" in data.column_names else list(range(len(data)))
    labels = data["labels"]
    return [{"row": r, "input_ids": ids, "labels": lab} for r, ids, lab in zip(order, data["input_ids"], labels)]


def _lengths(recipe: Recipe, split: Any, tokenizer: Any) -> list[int]:
    """Tokens per row before truncation, as TRL counts them; a sequence head reads the prompt alone."""
    from llm_tune.data.formats import token_lengths
    from llm_tune.data.prompts import prompt_ids

    if not recipe.sequence_head:
        return token_lengths(split, tokenizer)
    return [len(prompt_ids(tokenizer, prompt)) for prompt in split["prompt"]]


def _labels(split: Any) -> list[str] | None:
    return None if split is None else [str(label) for label in split["label"]]


def trained_section(recipe: Recipe, tokenizer: Any, splits: Any, rows: list[dict[str, Any]], truncated: set[int],
                    found: Findings) -> dict[str, Any]:  # fmt: skip
    """Pad and EOS, and the rows truncation leaves without a trained token (TRL drops them silently)."""
    if recipe.sequence_head:
        section = checks.eos_findings(tokenizer, [], truncated, found)
        return {**section, "answers": "a classifier head: the label trains, no token does", "dropped_rows": 0}
    section = checks.eos_findings(tokenizer, rows, truncated, found)
    kept = [row["row"] for row in rows]
    dropped = set(range(len(splits.train))) - set(kept)
    prompts = {i: _prompt_length(tokenizer, splits.train[i]) for i in sorted(dropped)[: checks.EXAMPLES * 10]}
    section["dropped_rows"] = checks.dropped_row_findings(
        kept, len(splits.train), prompts, recipe.data.max_length, found
    )
    section["trained_per_row"] = {"mean": sum(_trained(r) for r in rows) / max(len(rows), 1)}
    section["truncated_rows_losing_eos"] = len(truncated & set(kept))
    return section


def _trained(row: dict[str, Any]) -> int:
    return sum(label != checks.IGNORE for label in row["labels"])


def _prompt_length(tokenizer: Any, row: dict[str, Any]) -> int:
    """Tokens before the first answer token: the prompt, or a chat up to its first assistant turn."""
    from llm_tune.data.prompts import prompt_ids

    if "prompt" in row:
        return len(prompt_ids(tokenizer, row["prompt"]))
    messages = row.get("messages") or []
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return len(prompt_ids(tokenizer, messages[:first])) if first else 0


def _shown_row(recipe: Recipe, tokenizer: Any, row: dict[str, Any], splits: Any) -> dict[str, Any]:
    ids = row["input_ids"]
    if recipe.sequence_head:  # the head reads the last prompt token; the label is a class, not a token
        segments = checks.row_segments(tokenizer, ids, [(len(ids) - 1, len(ids))])
        return {"row": row["row"] + 1, "text": checks.marked(segments), "segments": segments,
                "label": splits.labels[row["labels"]]}  # fmt: skip
    segments = checks.row_segments(tokenizer, ids, checks.trained_spans(row["labels"]))
    return {"row": row["row"] + 1, "text": checks.marked(segments), "segments": segments}


def memory_section(recipe: Recipe, model: Any, rows: list[dict[str, Any]], runtime: int, device: Device,
                   found: Findings) -> MemoryEstimate:  # fmt: skip
    from llm_tune.doctor.estimate import PEAK_RULE, StepShape, estimate_memory, gib, peak_bytes, tally_model

    tally, reached = tally_model(model, recipe.adapter)
    batch = recipe.training.per_device_train_batch_size
    if recipe.training.packing:  # packed sequences are max_length long, answers in their usual share
        share = sum(_trained(r) for r in rows) / max(sum(len(r["input_ids"]) for r in rows), 1)
        tokens, labels = recipe.data.max_length, int(batch * recipe.data.max_length * share)
    else:  # the longest rows, padded to the longest: length-grouped batching puts it first
        longest = sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True)[:batch]
        tokens = len(longest[0]["input_ids"]) if longest else 0
        labels = 0 if recipe.sequence_head else sum(_trained(r) for r in longest)
    step = StepShape(
        batch=batch, tokens=tokens, label_positions=labels, reached_blocks=reached,
        gradient_checkpointing=recipe.training.gradient_checkpointing, compute_bytes=device.compute_bytes,
        autocast=device.compute == "bfloat16 autocast" and recipe.four_bit is None,
        lm_head=not recipe.sequence_head, device=device.device,
    )  # fmt: skip
    items = estimate_memory(tally, step, runtime if device.device == "cpu" else 0)
    total = peak_bytes(items)
    if total > device.memory_available:
        found.warnings.append(
            f"memory: the estimated peak {gib(total)} is more than the {gib(device.memory_available)} available"
            " now; lower training.per_device_train_batch_size or data.max_length, or set"
            " training.gradient_checkpointing: true"
        )
    return MemoryEstimate(items=items, peak_bytes=total, peak_rule=PEAK_RULE, step=step, blocks=tally.blocks)


def time_section(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    splits: Any,
    rows: list[dict[str, Any]],
    sources: list[SourceCount] | None = None,
) -> TimeEstimate | None:
    """None when no row keeps a trained token: there is nothing to time (and that is an error already). A mixture's
    epoch holds the rows its weights draw (`sources`), not the sources' rows."""
    from llm_tune.doctor.timing import epoch_time, measure_steps

    if not rows:
        return None
    epoch_tokens = sum(len(r["input_ids"]) for r in rows)
    sequences = len(rows)
    if mixed := [s for s in sources or [] if s.split == "train" and s.epoch_rows]:
        sequences = sum(s.epoch_rows or 0 for s in mixed)
        epoch_tokens = round(sum((s.epoch_rows or 0) * s.tokens / s.rows for s in mixed))
    if recipe.training.packing:
        sequences = max(1, -(-epoch_tokens // recipe.data.max_length))
    measured = measure_steps(recipe, model, tokenizer, splits, sorted(r["row"] for r in rows))
    return epoch_time(measured, recipe, sequences, epoch_tokens)
