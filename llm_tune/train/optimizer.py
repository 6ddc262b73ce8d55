"""Discriminative (layer-wise) learning rates: block i trains at learning_rate x decay^(top - i), through the
trainer's documented optimizer hook (`create_optimizer`), so the trainer's scheduler, clipping and resume apply as
usual: the scheduler scales every group's rate by the same factor, keeping their ratios."""

from __future__ import annotations

from typing import Any

from llm_tune.console import say


def layer_of_parameter(model: Any) -> dict[int, int]:
    """{id(parameter): its block's index}; the input embeddings count as block -1 (below block 0)."""
    from llm_tune.model.strategies import transformer_blocks

    layer = {id(p): -1 for p in model.get_input_embeddings().parameters()}
    for index, block in enumerate(transformer_blocks(model)):
        layer.update({id(p): index for p in block.parameters()})
    return layer


def layerwise_groups(model: Any, lr: float, decay: float, weight_decay: float, decayed: set[str]) -> list[dict]:
    """One optimizer group per (block, weight decay or not) of the trainable parameters. Parameters outside the
    blocks (the head, the final norm) train at the full rate."""
    layer = layer_of_parameter(model)
    top = max(layer.values())
    groups: dict[tuple[int | None, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = layer.get(id(param))
        rate = lr if index is None else lr * decay ** (top - index)
        group = groups.setdefault(
            (index, name in decayed), {"params": [], "lr": rate, "weight_decay": weight_decay if name in decayed else 0.0}
        )
        group["params"].append(param)
    return list(groups.values())


def describe(model: Any, groups: list[dict]) -> str:
    """One line: the resolved rate of every block that trains, top first."""
    layer = layer_of_parameter(model)
    rates: dict[int | None, float] = {}
    for group in groups:
        for param in group["params"]:
            rates[layer.get(id(param))] = group["lr"]
    blocks = sorted((i for i in rates if i is not None and i >= 0), reverse=True)
    parts = [f"block {i} {rates[i]:.2e}" for i in blocks]
    if -1 in rates:
        parts.append(f"embeddings {rates[-1]:.2e}")
    if None in rates:
        parts.append(f"head and other modules {rates[None]:.2e}")
    return ", ".join(parts)


class LayerwiseRates:
    """A trainer mixin: the optimizer gets one group per block at its decayed rate (`layerwise_lr_decay`, set on
    the trainer by build_trainer)."""

    layerwise_lr_decay: float

    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decayed = set(self.get_decay_parameter_names(opt_model))
        groups = layerwise_groups(opt_model, self.args.learning_rate, self.layerwise_lr_decay, self.args.weight_decay, decayed)
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **kwargs)
        if self.is_world_process_zero():
            say(f"layer-wise learning rates (decay {self.layerwise_lr_decay}): {describe(opt_model, groups)}")
        return self.optimizer
