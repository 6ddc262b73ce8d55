"""Building the merged model in memory: the base an adapter is merged into, and the merge itself.

Merges are done in float32 and cast to the export dtype afterwards, so that the update is added at full
precision. QLoRA adapters are never merged into 4-bit weights: either into the 4-bit base dequantized
(the exact weights the adapter trained against) or into the original full-precision checkpoint.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from llm_tune.console import say
from llm_tune.export.job import Job, check, outputs

if TYPE_CHECKING:
    from llm_tune.export.verify import Outputs

MODES = ("dequantized", "original")


def build_merged(job: Job) -> tuple[Any, Outputs | None]:
    """The merged model (float32), and the reference its merge is gated against when that is not the
    trained model itself (qlora merged into the original base: the adapter on that same base)."""
    if not job.recipe.adapter:
        return _saved_model(job), None
    if job.recipe.four_bit is None:
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

    weights = job.run.weights(job.recipe)
    cfg = job.recipe.model.model_copy(update={"name_or_path": str(weights), "dtype": "float32"})
    return load_model(cfg, job.tokenizer, labels=job.labels)


def _full_precision_base(job: Job) -> Any:
    from llm_tune.model.loading import load_model

    cfg = job.recipe.model.model_copy(update={"dtype": "float32"})
    return load_model(cfg, job.tokenizer, labels=job.labels)


def _dequantized_base(job: Job) -> Any:
    """The 4-bit base rebuilt from the recipe (quantization is deterministic, so these are the weights
    training saw), dequantized in the compute dtype it ran in, then widened losslessly to float32."""
    import torch

    from llm_tune.model.loading import load_model

    base = load_model(job.recipe.model, job.tokenizer, labels=job.labels, four_bit=job.recipe.four_bit)
    base = base.dequantize()
    return base.to(torch.float32)


def _merge(job: Job, base: Any, keep_unmerged: bool = False) -> Any:
    """merge_and_unload of the run's adapter into `base`; with keep_unmerged, also the unmerged outputs."""
    from peft import PeftModel

    adapter = job.run.weights(job.recipe)
    model = PeftModel.from_pretrained(base, adapter)
    unmerged = outputs(job, model) if keep_unmerged else None
    # safe_merge checks the merged weights for NaN/inf before they replace the base's.
    merged = model.merge_and_unload(safe_merge=True)
    say(f"merged {adapter} into a float32 base")
    return (merged, unmerged) if keep_unmerged else merged


def _measure_other_mode(job: Job, mode: str) -> None:
    """The qlora merge mode not chosen, merged in memory only, so the report shows both against the trained model."""
    import torch

    base = _dequantized_base(job) if mode == "dequantized" else _full_precision_base(job)
    model = _merge(job, base).to(getattr(torch, job.dtype))
    check(job, f"other_mode_{mode}_merged_vs_trained", outputs(job, model))
    del model, base
    gc.collect()
