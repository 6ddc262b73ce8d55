"""The LM head of DPO and KTO on a CPU: log-probabilities at the answer positions only.

TRL's DPOTrainer and KTOTrainer patch the model with a fused LM head (trl.trainer.utils.add_fused_lm_head) that
returns per-token log-probabilities. Without Triton (a CPU) it projects *every* position of the padded batch (prompt
and padding too) onto the vocabulary, tile by tile through a custom autograd function, for the policy and again for
the reference: the same trap as SFT's chunked head (README: Speed). Here, on a CPU, the same call computes the
head only where a label is (plain autograd: hidden states at those positions @ the head, float32 log-softmax) and
returns TRL's own FusedCausalLMOutput, with the metrics fields (entropy, mean logits, top-1) computed from the same
logits, without gradient. tests/test_speed.py checks it against TRL's head: log-probs and gradients within 1e-5.
"""

from __future__ import annotations

import functools
import types
from typing import Any

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def use_label_only_heads(trainer: Any) -> None:
    """On a CPU, swap TRL's fused head for the label-only one on the policy and on a separate reference model."""
    import torch

    if torch.cuda.is_available():  # with Triton TRL's head already scores only the label positions
        return
    from llm_tune.console import say

    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    patched = [m for m in (policy, getattr(trainer, "ref_model", None)) if m is not None and _patched_by_trl(m)]
    if patched and all(_plain_head(m) for m in patched):
        for model in patched:
            _patch(model)
        say("lm head   log-probabilities at the answer positions only (a CPU: TRL's fused head projects every one)")


def _patched_by_trl(model: Any) -> bool:
    """TRL's patch keeps forward's name (functools.wraps); its code object keeps its own."""
    code = getattr(getattr(getattr(model, "forward", None), "__func__", None), "__code__", None)
    return getattr(code, "co_name", "") == "_fused_forward"


def _plain_head(model: Any) -> bool:
    """A head whose logits are hidden @ W (+ b): no soft-capping or scaling, which TRL's head applies and this does
    not (those models keep TRL's head)."""
    config = model.config.get_text_config()
    scaled = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return all(getattr(config, key, None) in (None, 1.0) for key in scaled)


def _patch(model: Any) -> None:
    trl_forward = model.forward

    @functools.wraps(type(model).forward)
    def label_only_forward(
        self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
        num_items_in_batch: Any = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        if not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits"):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)  # fmt: skip
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        return label_only_log_probs(hidden, labels[:, 1:], self.get_output_embeddings(), num_items_in_batch)

    model.forward = types.MethodType(label_only_forward, model)


def label_only_log_probs(hidden: Any, labels: Any, lm_head: Any, num_items_in_batch: Any = None) -> Any:
    """TRL's FusedCausalLMOutput for next-token `labels` (-100: not scored) from the hidden states before them."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    mask = labels != -100
    targets = labels[mask]
    logits = lm_head(hidden[mask]).float()  # [label positions, vocab]: the only logits ever made
    log_softmax = logits.log_softmax(-1)
    picked = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    log_probs = picked.new_zeros(mask.shape).masked_scatter(mask, picked)
    with torch.no_grad():
        probs = log_softmax.exp()
        extra = {
            "entropy": -(probs * log_softmax).sum(-1),
            "log_sum_sq_probs": torch.logsumexp(2 * log_softmax, -1),
            "mean_logits": logits.mean(-1),
            "is_top1": logits.argmax(-1) == targets,
        }
    per_token = {k: v.new_zeros(mask.shape).masked_scatter(mask, v) for k, v in extra.items()}
    loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, label_mask=mask, **per_token)
