"""Which blocks train, and at what rate: discriminative (layer-wise) learning rates, where block i trains at
learning_rate x decay^(top - i), and gradual unfreezing (ULMFiT), where a frozen-layers run starts with its top
`trainable_layers` blocks and every `unfreeze_every_steps` optimizer steps the next block down joins them.

Both go through the trainer's documented optimizer hook (`create_optimizer`), so its scheduler, clipping and
checkpoints serve unchanged: the scheduler scales every group's rate by the same factor, keeping their ratios; the
unfreezing optimizer holds every block from the start (a block with no gradient yet is skipped by AdamW, weight decay
included), and which blocks train follows from the step, so resume is exact."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.model.strategies import transformer_blocks


def layer_of_parameter(model: Any) -> dict[int, int]:
    """{id(parameter): its block's index}; the input embeddings count as block -1 (below block 0), unless they are
    tied to the LM head (SmolLM2): one weight with two roles trains at the head's full rate, as the key says."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = {id(p) for p in output.parameters()} if output is not None else set()
    layer = {id(p): -1 for p in model.get_input_embeddings().parameters() if id(p) not in head}
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
            (index, name in decayed),
            {"params": [], "lr": rate, "weight_decay": weight_decay if name in decayed else 0.0},
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
    """A trainer mixin: with `layerwise_lr_decay`, the optimizer gets one group per block at its decayed rate."""

    def __init__(self, *args: Any, layerwise_lr_decay: float | None = None, **kwargs: Any) -> None:
        self.layerwise_lr_decay = layerwise_lr_decay
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> Any:
        if self.layerwise_lr_decay is None:
            return super().create_optimizer(model)
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decayed = set(self.get_decay_parameter_names(opt_model))
        groups = layerwise_groups(
            opt_model, self.args.learning_rate, self.layerwise_lr_decay, self.args.weight_decay, decayed
        )
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **kwargs)
        if self.is_world_process_zero():
            say(f"layer-wise learning rates (decay {self.layerwise_lr_decay}): {describe(opt_model, groups)}")
        return self.optimizer


def unfrozen_blocks(step: int, trainable_layers: int, every: int, blocks: int) -> int:
    """How many top blocks train once `step` optimizer steps are done."""
    return min(blocks, trainable_layers + step // every)


class GradualUnfreezing:
    """A trainer mixin: with `unfreeze_every_steps`, the optimizer is built over every block, not only those that
    train at step 0, and a callback unfreezes the next block down every N steps."""

    def __init__(self, *args: Any, unfreeze: tuple[int, int] | None = None, **kwargs: Any) -> None:
        """`unfreeze`: (strategy.trainable_layers, strategy.unfreeze_every_steps), or None."""
        self.unfreeze = unfreeze
        super().__init__(*args, **kwargs)
        if unfreeze is not None:
            if self.args.world_size > 1:
                raise UserError(
                    "strategy.unfreeze_every_steps: gradual unfreezing changes which weights train during the run,"
                    " which distributed data parallel cannot follow; train it in one process"
                )
            self.add_callback(UnfreezeOnSchedule(self.model, *unfreeze))

    def create_optimizer(self, model: Any = None) -> Any:
        if self.unfreeze is None:
            return super().create_optimizer(model)
        blocks = transformer_blocks(self.model if model is None else model)
        frozen = [p for block in blocks for p in block.parameters() if not p.requires_grad]
        for param in frozen:
            param.requires_grad_(True)
        try:
            return super().create_optimizer(model)
        finally:
            for param in frozen:
                param.requires_grad_(False)


class UnfreezeOnSchedule(TrainerCallback):
    def __init__(self, model: Any, trainable_layers: int, every: int) -> None:
        self.blocks = transformer_blocks(model)
        self.trainable_layers, self.every = trainable_layers, every
        self.training = trainable_layers

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        wanted = unfrozen_blocks(state.global_step, self.trainable_layers, self.every, len(self.blocks))
        while self.training < wanted:  # also catches up at once after a resume
            index = len(self.blocks) - self.training - 1
            self.blocks[index].requires_grad_(True)
            self.training += 1
            if state.is_world_process_zero:
                say(
                    f"step {state.global_step}: block {index} starts training ({self.training} of {len(self.blocks)} blocks)"
                )
