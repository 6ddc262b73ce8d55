"""`llm_tune export RUN_DIR`: the run's model as a folder that plain transformers / peft code loads.

Three layouts: an adapter folder (PEFT files + tokenizer), a merged folder (a standard transformers model) and,
with --format gguf, a folder holding the merged model as one GGUF file for llama.cpp (gguf_file). Full and
frozen runs always give a merged layout. Every export is verified against the model as trained (verify) and is
written into a hidden staging folder that is renamed into place only when complete, so a failed export never
leaves a folder that looks finished.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_tune import __version__
from llm_tune.console import fail, say
from llm_tune.errors import UserError
from llm_tune.export import verify
from llm_tune.export.job import (
    ADAPTER_FILES,
    VERIFICATION,
    ExportFailed,
    Job,
    base_model_reference,
    check,
    coarsest,
    export_options,
    outputs,
    training_arithmetic,
)
from llm_tune.model.precision import trained_dtype
from llm_tune.model.trained import load_exported_model
from llm_tune.recipe.schema import ExportConfig, Recipe
from llm_tune.run_folder import MANIFEST, RunFolder, write_json


def export_run(run_dir: Path, options: ExportConfig | None = None, recipe: Recipe | None = None) -> Path:
    """Export, verify and place the folder; returns its path. Raises ExportFailed beyond tolerance."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    recipe = recipe or RunFolder(run_dir).read_recipe()
    job = Job(run_dir, recipe, options or export_options(recipe))
    if job.is_gguf:
        from llm_tune.export.gguf_file import check_convertible

        check_convertible(job)
    elif job.options.merge is False and not job.adapter and job.options.out is None:
        say(f"strategy {recipe.strategy.kind} has no adapter: exporting the whole model")
    out = job.out
    with staging(out) as tmp:
        _reference(job)
        if job.is_gguf:
            _export_gguf(job, tmp)
        elif job.merged:
            _export_merged(job, tmp)
        else:
            _export_adapter(job, tmp)
        _finish(job, tmp, out)
    say(f"export written to {out}")
    return out


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A hidden sibling folder that becomes `out` only if the body finishes; removed on any failure."""
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an llm_tune export; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _usual_permissions(tmp)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _usual_permissions(folder: Path) -> None:
    """mkdtemp and mkstemp create owner-only entries; an export is meant to be shared like any folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _reference(job: Job) -> None:
    """The trained model (the run's own weights) on the verification prompts; freed afterwards."""
    from llm_tune.model.trained import load_trained

    trained = load_trained(job.run_dir)
    job.tokenizer = trained.tokenizer
    job.prompts = verify.verification_prompts(job.recipe, job.tokenizer, job.options.verify_prompts)
    job.reference = outputs(job, training_arithmetic(trained.model))
    if job.merged and job.dtype != trained_dtype(job.recipe) and job.recipe.four_bit is None:
        # Exporting in another dtype: the merge is gated against the trained model cast to that dtype, so
        # the cast's own rounding (reported separately) is not charged to the merge.
        import torch

        job.cast_reference = outputs(job, trained.model.to(getattr(torch, job.dtype)))
    del trained
    gc.collect()


def _export_adapter(job: Job, tmp: Path) -> None:
    """The run's adapter files (cast to --dtype if given), checked by loading them the plain peft way."""
    from peft import PeftModel

    from llm_tune.export.head_scale import scaled_back
    from llm_tune.model.loading import load_model

    copy_adapter(job.run.weights(job.recipe), tmp, job)
    _support_files(job, tmp)
    base = load_model(job.recipe.model, job.tokenizer, labels=job.labels, four_bit=job.recipe.four_bit)
    if job.classifier:
        base.config.problem_type = job.recipe.problem_type
    model = training_arithmetic(PeftModel.from_pretrained(base, tmp))
    result = check(job, "exported_adapter_vs_trained", scaled_back(outputs(job, model), job.recipe))
    _gate(job, result, coarsest(job.dtype, trained_dtype(job.recipe)))
    del model, base
    gc.collect()


def copy_adapter(source: Path, tmp: Path, job: Job) -> None:
    import torch
    from peft import PeftConfig
    from safetensors.torch import load_file, save_file

    config = PeftConfig.from_pretrained(str(source))  # the adapter's own config class (LoraConfig), through peft
    config.base_model_name_or_path = base_model_reference(job.recipe, job.options)
    config.save_pretrained(str(tmp))
    from llm_tune.export.head_scale import fold_into_tensors

    tensors = fold_into_tensors(load_file(source / ADAPTER_FILES[1]), job.recipe)  # a temperature, folded
    if job.options.dtype:
        wanted = getattr(torch, job.options.dtype)
        tensors = {k: v.to(wanted) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, tmp / ADAPTER_FILES[1], metadata={"format": "pt"})


def _export_merged(job: Job, tmp: Path) -> None:
    """Merge (lora/qlora) or take the saved model (full/frozen), save it, reload it plainly and compare."""
    from llm_tune.export.head_scale import fold_into_model, scaled_back
    from llm_tune.export.merge import build_merged

    model, gate_reference = build_merged(job)
    fold_into_model(model, job.recipe)  # a temperature folded, a regression scale declared (config.json)
    _save_model(job, model, tmp)
    del model
    gc.collect()
    reloaded = load_exported_model(tmp, job.classifier, job.dtype)
    exported = scaled_back(outputs(job, reloaded), job.recipe)
    del reloaded
    gc.collect()
    _gate_merge(job, exported, gate_reference)


def _gate_merge(job: Job, exported: verify.Outputs, gate_reference: verify.Outputs | None) -> None:
    """The merged model's outputs against what the merge must reproduce, in the export dtype's tolerance."""
    if gate_reference is not None:
        # qlora merged into the original base: the merge itself is checked against the adapter on that same
        # base, and the drift from the trained (4-bit) model is reported, not gated.
        _gate(job, check(job, "merged_vs_unmerged_on_original_base", exported, gate_reference), job.dtype)
        drift = check(job, "merged_vs_trained", exported)
        if not verify.within_tolerance(drift, job.dtype):
            say(
                f"warning: merged into the original base, this export differs from the trained model by"
                f" {verify.describe('', drift).lstrip(': ')}; --qlora-base dequantized reproduces it"
            )
    elif job.cast_reference is not None:
        # A 16-bit cast of a deep model moves logits by itself; the merge may add at most as much again.
        noise = check(job, f"trained_cast_to_{job.dtype}_vs_trained", job.cast_reference)["max_abs_logit_diff"]
        check(job, "merged_vs_trained", exported)
        result = check(job, f"merged_vs_trained_cast_to_{job.dtype}", exported, job.cast_reference)
        _gate(job, result, job.dtype, max(verify.TOLERANCE[job.dtype], 2 * noise))
    else:
        _gate(job, check(job, "merged_vs_trained", exported), coarsest(job.dtype, trained_dtype(job.recipe)))


def _export_gguf(job: Job, tmp: Path) -> None:
    """Merge in float32, gate the merge as for a merged folder, write the GGUF, then load it back with plain
    transformers and gate it against the merged model, within its type's tolerance, and its tokenizer against
    the run's."""
    from llm_tune.data.prompts import export_chat_template, stop_token_ids
    from llm_tune.export.gguf_file import gguf_file_name, load_gguf, write_gguf
    from llm_tune.export.merge import build_merged

    model, gate_reference = build_merged(job)
    merged = outputs(job, model)
    _gate_merge(job, merged, gate_reference)
    if job.classifier:  # a single-label head, folded into LM-head rows (export/folded_head.py)
        from llm_tune.export import folded_head

        model, label_reference, label_prompts = folded_head.fold_and_verify(job, model)
    path = tmp / gguf_file_name(job)
    write_gguf(model, job, path)
    del model
    gc.collect()
    say(f"wrote {path.name} ({path.stat().st_size / 2**20:.1f} MiB); loading it back with transformers")
    reloaded, tokenizer = load_gguf(path)
    kind = job.options.gguf_type
    if job.classifier:
        folded_head.verify_gguf(job, reloaded, label_reference, label_prompts)
    else:
        exported = outputs(job, reloaded)
        check(job, "gguf_vs_trained", exported)
        _gate(job, check(job, f"gguf_{kind}_vs_merged", exported, merged), kind, verify.GGUF_TOLERANCE[kind])
    del reloaded
    gc.collect()
    job.tokenizer_check = verify.tokenizer_round_trip(
        job.tokenizer, tokenizer, job.prompts, export_chat_template(job.tokenizer, job.recipe)
    )
    say("verify tokenizer round trip: " + verify.describe_tokenizer(job.tokenizer_check))
    if not job.tokenizer_check["ok"]:
        raise ExportFailed(
            "export verification failed: against the run's tokenizer, the GGUF's"
            f" {verify.describe_tokenizer(job.tokenizer_check)}; no export was written"
        )
    stop = [job.tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(job.tokenizer, job.recipe)]
    job.gguf = {"file": path.name, "type": kind, "bytes": path.stat().st_size, "stop_tokens": stop}
    if job.classifier:
        job.gguf["folded"] = folded_head.folded_card_facts(job)


def _gate(job: Job, result: dict[str, Any], dtype: str, tolerance: float | None = None) -> None:
    tolerance = verify.TOLERANCE[dtype] if tolerance is None else tolerance
    job.gate = {"check": next(reversed(job.checks)), "dtype": dtype, "tolerance": tolerance}
    if not result["max_abs_logit_diff"] <= tolerance:  # NaN fails too
        raise ExportFailed(
            f"export verification failed: max |logit diff| {result['max_abs_logit_diff']:.4g} exceeds the"
            f" {dtype} tolerance {tolerance:.4g} (greedy token agreement {result['greedy_token_agreement']:.1%});"
            " no export was written"
        )


def _save_model(job: Job, model: Any, tmp: Path) -> None:
    import torch

    model.to(getattr(torch, job.dtype))
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # a quantized base merged into plain tensors: the saved config must not say 4-bit
        quantizer.remove_quantization_config(model)
    model.config.use_cache = True
    model.config.pad_token_id = job.tokenizer.pad_token_id
    if job.recipe.sequence_head:  # a LoRA base's config has none: pipelines read it to pick softmax or sigmoid
        model.config.problem_type = job.recipe.problem_type
    model.save_pretrained(tmp, max_shard_size=job.options.max_shard_size)
    _support_files(job, tmp)


def _support_files(job: Job, tmp: Path) -> None:
    """Tokenizer with the chat template training rendered with, and a generation config that stops at
    the token training taught the model to end with."""
    from llm_tune.data.prompts import export_chat_template
    from llm_tune.export.files import generation_config

    job.tokenizer.chat_template = export_chat_template(job.tokenizer, job.recipe)
    job.tokenizer.save_pretrained(tmp)
    generation_config(job.recipe, job.tokenizer).save_pretrained(tmp)


def _finish(job: Job, tmp: Path, out: Path) -> None:
    """Verification report, model card, then the manifest: the last file, written only when all is well."""
    from llm_tune.export.card import write_model_card

    report = {"dtype": job.dtype, "prompts": len(job.prompts), "gate": job.gate, "checks": job.checks}
    if job.recipe.four_bit and job.merged:
        report["qlora_merge_base"] = job.options.qlora_merge_base
    if job.gguf:
        report |= {"gguf_type": job.gguf["type"], "gguf_file": job.gguf["file"], "tokenizer": job.tokenizer_check}
    write_json(tmp / VERIFICATION, report)
    write_model_card(tmp, job.recipe, job.options, merged=job.merged, report=report, run_dir=job.run_dir, gguf=job.gguf)
    manifest = {
        "llm_tune_version": __version__,
        "format": job.options.format,
        "layout": "gguf" if job.gguf else "merged" if job.merged else "adapter",
        "strategy": job.recipe.strategy.kind,
        "task": job.recipe.task,
        "sequence_classifier": job.classifier,
        "dtype": job.dtype,
        "run": job.run_dir.resolve().name,  # the name only: an export may be published
        "files": sorted({p.name for p in tmp.iterdir()} | {MANIFEST}),
    }
    if job.gguf:
        manifest |= {"gguf_type": job.gguf["type"], "gguf_file": job.gguf["file"]}
    write_json(tmp / MANIFEST, manifest)


def export_command(run_dir: Path, **given: Any) -> None:
    """The CLI's `export`: a verification failure prints its lines and exits 1 (not a usage mistake: 2)."""
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    recipe = RunFolder(Path(run_dir)).read_recipe()
    try:
        export_run(Path(run_dir), export_options(recipe, **given), recipe)
    except ExportFailed as exc:
        fail(exc.problems)
        sys.exit(1)


def export_after_training(run_dir: Path, recipe: Recipe) -> None:
    """The recipe's `export:` section, run once training has saved the run folder."""
    say("exporting (recipe export section)")
    export_run(run_dir, recipe.export, recipe)
