"""The processes of a launch (accelerate or torchrun): how many, and the few collectives llm_tune needs, through
accelerate's PartialState. Everything is a no-op in a single process, where torch is never imported for it."""

from __future__ import annotations

import os
from typing import Any


def rank() -> int:
    """This process's rank (0 alone): the launcher's RANK variable, the one place it is read."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (0 alone): the device it places its model on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    """Wait for every rank."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def agree(value: Any) -> Any:
    """Rank 0's value on every rank, so that all ranks take the same branch around collectives."""
    if world_size() == 1:
        return value
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState()  # joins the process group the launcher set up
    return broadcast_object_list([value], from_process=0)[0]


def any_rank(flag: bool, device: Any) -> bool:
    """True on every rank when it is True on any, so a stop request is acted on at the same step everywhere."""
    if world_size() == 1:
        return flag
    import torch
    from accelerate.utils import reduce

    return bool(reduce(torch.tensor([1.0 if flag else 0.0], device=device), reduction="sum").item() > 0)
