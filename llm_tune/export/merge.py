"""Building the merged model in memory: the base an adapter is merged into, and the merge itself.

Merges are done in float32 and cast to the export dtype afterwards, so that the update is added at full
precision. QLoRA adapters are never merged into 4-bit weights: either into the 4-bit base dequantized
(the exact weights the adapter trained against) or into the original full-precision checkpoint.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from llm_tune import run_folder
from llm_tune.console import say

if TYPE_CHECKING:
    from llm_tune.export import Job
    from llm_tune.export.verify import Outputs

MODES = ("dequantized", "original")


def build_merged(job: Job) -> tuple[Any, Outputs | None]:
    """The merged model (float32), and the reference its merge is gated against when that is not the
    trained model itself (qlora merged into the original base: the adapter on that same base)."""
    kind = job.recipe.strategy.kind
    if kind in ("full", "frozen"):
        return _saved_model(job), None
    if kind == "lora":
        return _merge(job, _full_precision_base(job)), None
    chosen = job.options.qlora_merge_base
    _measure_other_mode(job, next(m for m in MODES if m != chosen))
    if chosen == "dequantized":
        return _merge(job, _dequantized_base(job)), None
    model, unmerged = _merge(job, _full_precision_base(job), keep_unmerged=True)
    return model, unmerged


def _saved_model(job: Job) -> Any:
    """A full or frozen run's model/ folder, loaded in float32 like any base."""
    from llm_tune.model.loading import load_model

    weights = run_folder.weights_folder(job.run_dir, job.recipe.strategy.kind)
    cfg = job.recipe.model.model_copy(update={"name_or_path": str(weights), "dtype": "float32"})
    return load_model(cfg, job.recipe.strategy, job.tokenizer, labels=job.labels)


def _full_precision_base(job: Job) -> Any:
    from llm_tune.model.loading import load_model

    cfg = job.recipe.model.model_copy(update={"dtype": "float32"})
    plain = job.recipe.strategy.model_copy(update={"kind": "lora"})  # no quantization
    return load_model(cfg, plain, job.tokenizer, labels=job.labels)


def _dequantized_base(job: Job) -> Any:
    """The 4-bit base rebuilt from the recipe (quantization is deterministic, so these are the weights
    training saw), dequantized in the compute dtype it ran in, then widened losslessly to float32."""
    import torch

    from llm_tune.model.loading import load_model

    base = load_model(job.recipe.model, job.recipe.strategy, job.tokenizer, labels=job.labels)
    base = base.dequantize()
    return base.to(torch.float32)


def _merge(job: Job, base: Any, keep_unmerged: bool = False) -> Any:
    """merge_and_unload of the run's adapter into `base`; with keep_unmerged, also the unmerged outputs."""
    from peft import PeftModel

    from llm_tune.export import outputs

    adapter = run_folder.weights_folder(job.run_dir, "lora")
    model = PeftModel.from_pretrained(base, adapter)
    unmerged = outputs(job, model) if keep_unmerged else None
    # safe_merge checks the merged weights for NaN/inf before they replace the base's.
    merged = model.merge_and_unload(safe_merge=True)
    say(f"merged {adapter} into a float32 base")
    return (merged, unmerged) if keep_unmerged else merged


def _measure_other_mode(job: Job, mode: str) -> None:
    """The qlora merge mode not chosen, merged in memory only, so the report shows both against the trained model."""
    import torch

    from llm_tune.export import check, outputs

    base = _dequantized_base(job) if mode == "dequantized" else _full_precision_base(job)
    model = _merge(job, base).to(getattr(torch, job.dtype))
    check(job, f"other_mode_{mode}_merged_vs_trained", outputs(job, model))
    del model, base
    gc.collect()
