"""A sequence head's exports say what `predict` says. A single-label head's calibrated temperature is folded into
its weights (logits / T: a softmax of the exported logits is predict's probabilities, exactly); a regression head's
target scale cannot be folded (the head has no bias to carry the mean), so it is declared in config.json
(target_mean, target_std) and the card's snippet applies it; a multi-label head's thresholds are the card's and
config.json's (label_thresholds). The verification compares the exported logits, scaled back, with the trained
model's, so the merge and the fold are both checked."""

from __future__ import annotations

import re
from typing import Any

from llm_tune.export import verify
from llm_tune.recipe.schema import Recipe

# The sequence head's weight in a model (score.weight) and in a PEFT adapter's file (its modules_to_save copy).
HEAD_WEIGHT = re.compile(r"(^|\.)score(\.modules_to_save\.default)?\.weight$")


def logit_scale(recipe: Recipe) -> float:
    """What the exported head's logits are, times the trained model's: 1 / temperature for a calibrated
    single-label sequence head, else 1."""
    temperature = recipe.classification.temperature
    return 1.0 / temperature if recipe.sequence_head and temperature else 1.0


def fold_into_model(model: Any, recipe: Recipe) -> None:
    """Scale the model's sequence head (a merged export) and declare in its config what llm_tune applied."""
    import torch

    scale = logit_scale(recipe)
    if scale != 1.0:
        with torch.no_grad():
            model.score.weight.mul_(scale)
    for key, value in declared(recipe).items():
        setattr(model.config, key, value)


def fold_into_tensors(tensors: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The same scale on an adapter file's head weights (the head trains in full beside the adapter)."""
    scale = logit_scale(recipe)
    if scale == 1.0:
        return tensors
    return {k: (v.float() * scale).to(v.dtype) if HEAD_WEIGHT.search(k) else v for k, v in tensors.items()}


def declared(recipe: Recipe) -> dict[str, Any]:
    """config.json keys that say how to read the head's outputs as predict does."""
    c = recipe.classification
    if not recipe.sequence_head:
        return {}
    if c.target_mean is not None:
        return {"target_mean": c.target_mean, "target_std": c.target_std}
    if c.thresholds is not None:
        return {"label_thresholds": dict(c.thresholds)}
    if c.temperature:
        return {"temperature_folded": c.temperature}
    return {}


def scaled_back(outputs: verify.Outputs, recipe: Recipe) -> verify.Outputs:
    """Exported logits on the trained model's scale, to compare them with it."""
    scale = logit_scale(recipe)
    if scale == 1.0:
        return outputs
    return verify.Outputs([logits / scale for logits in outputs.logits], outputs.greedy)
