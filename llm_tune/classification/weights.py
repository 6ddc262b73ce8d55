"""Class weights for single-label heads: each row's loss is multiplied by its label's weight.

Both heads use one definition, loss = sum_i w[y_i] * loss_i / N (N: rows for the sequence head, answer tokens
for the generate head, as the unweighted loss divides), so weights of c everywhere multiply the loss by exactly c.
`balanced` weights are rows / (labels x rows of the label) (scikit-learn's definition): their mean over the
training rows is 1, so the loss keeps its scale."""

from __future__ import annotations

from collections import Counter
from typing import Any

from llm_tune.errors import UserError


def resolve_class_weights(
    setting: Any, labels: list[str], train_labels: list[str], repeats: list[float] | None = None
) -> dict[str, float] | None:
    """The weight of every label (what the run's recipe records), from `balanced` or a partial {label: weight}.
    `repeats`: how many times each row trains in an epoch (a mixture's shares draw a source's rows more or less
    than once), so `balanced` balances what an epoch trains, not the rows loaded."""
    if setting is None:
        return None
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(labels))
        if unknown:
            raise UserError(
                f"classification.class_weights: {unknown} are not labels of this run; the labels are {labels}"
            )
        return {label: float(setting.get(label, 1.0)) for label in labels}
    counts: Counter[str] = Counter()
    for label, times in zip(train_labels, repeats or [1.0] * len(train_labels)):
        counts[label] += times
    empty = [label for label in labels if counts[label] == 0]
    if empty:
        raise UserError(
            f"classification.class_weights: balanced needs training rows of every label; {empty} have none"
            " (give the weights as {label: weight}, or drop those labels)"
        )
    total = sum(counts.values())
    return {label: round(total / (len(labels) * counts[label]), 6) for label in labels}


def weighted_cross_entropy(weights: list[float]) -> Any:
    """A `compute_loss_func` for transformers' Trainer (sequence head): sum of w[y] * CE over the rows, divided by
    the rows of the whole accumulated batch (`num_items_in_batch`), or of this batch."""

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch
        import torch.nn.functional as F

        logits = outputs.logits.float()
        per_row = F.cross_entropy(logits, labels, reduction="none")
        w = torch.as_tensor(weights, dtype=per_row.dtype, device=per_row.device)[labels]
        count = labels.numel() if num_items_in_batch is None else num_items_in_batch
        return (w * per_row).sum() / torch.as_tensor(count, device=per_row.device).clamp(min=1)

    return loss


def answer_token_weights(
    observed: set[int], label_tokens: list[int], labels: list[str], weights: dict[str, float]
) -> dict[int, float]:
    """{first answer token: weight} for the generate head, whose loss sees tokens, not labels: each label must start
    with its own token (`label_tokens`, as the tokenizer spells the label), and every training row's first answer
    token (`observed`, as the trainer tokenized the rows) must be one of them."""
    distinct = len(set(label_tokens)) == len(labels)
    strange = sorted(observed - set(label_tokens))
    if not distinct or strange:
        why = "some labels start with the same token" if not distinct else f"answers start with tokens {strange[:5]}"
        raise UserError(
            f"classification.class_weights: with the generate head a row's label is read from its first answer token,"
            f" and here {why}; use classification.head: sequence, or labels that start with different words"
        )
    return {token: weights[label] for token, label in zip(label_tokens, labels)}


def row_weights(labels: Any, token_weight: Any, ignore: int = -100) -> Any:
    """[batch, seq-1] weight of each target position: the weight of the row's first answer token, 0 where ignored."""
    import torch

    targets = labels[:, 1:]
    kept = targets != ignore
    first = torch.where(kept.any(-1), kept.float().argmax(-1), torch.zeros_like(kept[:, 0], dtype=torch.long))
    first_token = targets.gather(1, first[:, None]).clamp(min=0)
    return token_weight.to(targets.device)[first_token].expand_as(targets) * kept
