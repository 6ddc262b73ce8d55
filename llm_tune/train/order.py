"""The order rows train in: a pure function of (seed, epoch, global batch), so a resumed run in any epoch and any
layout of the same global batch (processes x per-device batch x accumulation) train the same rows in the same steps.

transformers' LengthGroupedSampler draws each epoch's permutation from torch's global generator when its iterator
starts. A resume restores that generator's state only at the first optimizer step (after `iter()` has drawn), so the
first resumed epoch's order comes from the state after model setup rather than from where the interrupted run stood:
epoch 0 happens to match, every later epoch does not. It also groups by `per_device x accumulation`, so the batches
depend on the layout. Our sampler seeds its own generator from (seed, epoch) and groups by the global batch; the
Trainer calls `set_epoch` on it before every epoch (accelerate's DataLoaderShard forwards it, also through the
skipping loader of a resume). The "random" strategy is already exact: accelerate's SeedableRandomSampler seeds from
(seed, epoch) the same way."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from llm_tune.data.mixture import SOURCE, SourceShare, epoch_rows


class LengthGroupedOrder(Sampler):
    """Rows in length-grouped batches of `global_batch`, shuffled by a generator seeded with seed + epoch."""

    def __init__(self, lengths: list[int], global_batch: int, seed: int) -> None:
        self.lengths, self.global_batch, self.seed = lengths, global_batch, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return get_length_grouped_indices(self.lengths, self.global_batch, generator=generator)

    def __iter__(self) -> Any:
        return iter(self.order())


class MixedOrder(Sampler):
    """A mixture's epoch: the rows data/mixture.py draws for (seed, epoch), then length-grouped batches of the
    global batch (`lengths` given) or a permutation, from a generator seeded the same way."""

    def __init__(
        self, sources: list[int], shares: list[SourceShare], lengths: list[int] | None, global_batch: int, seed: int
    ) -> None:
        self.sources, self.shares, self.lengths = sources, shares, lengths
        self.global_batch, self.seed, self.epoch = global_batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(share.epoch_rows for share in self.shares)

    def order(self) -> list[int]:
        rows = epoch_rows(self.sources, self.shares, self.seed, self.epoch)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is None:
            places = torch.randperm(len(rows), generator=generator).tolist()
        else:
            lengths = [self.lengths[i] for i in rows]
            places = get_length_grouped_indices(lengths, self.global_batch, generator=generator)
        return [rows[i] for i in places]

    def __iter__(self) -> Any:
        return iter(self.order())


def row_lengths(dataset: Any, column: str = "input_ids") -> list[int]:
    return [len(ids) for ids in dataset[column]]


class ExactOrder:
    """A trainer mixin: length grouping by LengthGroupedOrder, a mixture of sources by MixedOrder (`mixture`: the
    sources' shares of an epoch); every other strategy is transformers' own."""

    def __init__(self, *args: Any, mixture: list[SourceShare] | None = None, **kwargs: Any) -> None:
        self.mixture = mixture
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        args = self.args
        grouped = args.train_sampling_strategy == "group_by_length"
        global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
        seed = args.data_seed if args.data_seed is not None else args.seed
        if self.mixture is not None:  # the source column is the trainer's own dataset's (the loader drops it)
            lengths = row_lengths(dataset) if grouped else None
            return MixedOrder(self.train_dataset[SOURCE], self.mixture, lengths, global_batch, seed)
        if not grouped or not hasattr(dataset, "column_names"):
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedOrder(row_lengths(dataset), global_batch, seed)
