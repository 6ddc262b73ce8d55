"""The causal-LM loss, computed only where a label is.

TRL >= 1.15 computes every SFT loss through its fused, chunked LM head. On a GPU with Triton that head scores only
the label positions; on a CPU it projects every position (prompt and padding included) through fp32 tiles and folds
them with torch ops, about 3x the cost of a step's plain cross-entropy. Here the model's own `logits_to_keep` takes a
boolean mask of the positions that predict a label, so the LM head and the cross-entropy see only those rows.
The result equals TRL's loss (and transformers' plain shifted cross-entropy) on the same batch: tests/test_speed.py.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def label_positions(labels: Any) -> Any:
    """[batch, seq] bool: position t is kept when it predicts a label (token t+1 is not ignored)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def label_only_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, token_weight: Any = None
) -> tuple[Any, Any, Any]:
    """(loss, outputs, number of correct argmax predictions): the mean cross-entropy over label tokens, summed
    and divided by `num_items_in_batch` when the trainer counts tokens across accumulation steps and ranks.
    `token_weight` ([vocab]: class weights by first answer token) multiplies each row's terms by its class weight."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    keep = label_positions(labels)
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
    targets = labels[:, 1:][keep[:, :-1]]
    logits = outputs.logits.float()
    if token_weight is None:
        total = F.cross_entropy(logits, targets, reduction="sum")
    else:
        from llm_tune.classification.weights import row_weights

        weight = row_weights(labels, token_weight)[keep[:, :-1]]
        total = (F.cross_entropy(logits, targets, reduction="none") * weight).sum()
    count = targets.numel() if num_items_in_batch is None else num_items_in_batch
    loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
    correct = (logits.detach().argmax(-1) == targets).sum()
    return loss, outputs, correct


class LabelOnlyLoss:
    """A mixin over TRL's SFTTrainer that, with `label_only`, replaces its compute_loss with `label_only_loss`,
    keeping what the trainer logs (loss, mean token accuracy) and how the loss is normalized across accumulation
    steps and ranks. `token_weight` ([vocab]): class weights by first answer token (label_only is then on)."""

    def __init__(self, *args: Any, label_only: bool = False, token_weight: Any = None, **kwargs: Any) -> None:
        self.label_only, self.token_weight = label_only or token_weight is not None, token_weight
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ):
        if not self.label_only:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # type: ignore[misc]
        loss, outputs, correct = label_only_loss(model, inputs, num_items_in_batch, self.token_weight)
        # As in Trainer.compute_loss: num_items_in_batch counts every rank's tokens, and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        count = int(outputs.logits.shape[0])
        mode = "train" if model.training else "eval"
        self._metrics[mode]["mean_token_accuracy"].append(correct.item() / count if count else 0.0)
        return (loss, outputs) if return_outputs else loss
