"""Gradual unfreezing (ULMFiT): a frozen-layers run starts with its top `trainable_layers` blocks and every
`unfreeze_every_steps` optimizer steps the next block down joins them. The optimizer holds every block from the
start (a block that has no gradient yet is skipped by AdamW, weight decay included), so the trainer's own
optimizer, scheduler and checkpoints serve unchanged; which blocks train follows from the step, so resume is exact."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from llm_tune.console import say
from llm_tune.model.strategies import transformer_blocks


def unfrozen_blocks(step: int, trainable_layers: int, every: int, blocks: int) -> int:
    """How many top blocks train once `step` optimizer steps are done."""
    return min(blocks, trainable_layers + step // every)


class GradualUnfreezing:
    """A trainer mixin: the optimizer is built over every block, not only those that train at step 0."""

    def create_optimizer(self, model: Any = None) -> Any:
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
                say(f"step {state.global_step}: block {index} starts training ({self.training} of {len(self.blocks)} blocks)")
