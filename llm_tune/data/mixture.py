"""A mixture of training sources (data.train as a list): how many rows of each source an epoch holds, and which.

Semantics (data.mix_by):
- rows: source i fills weight_i / sum(weights) of every epoch's rows; an epoch holds as many rows as all sources
  together. tokens: the same shares of the epoch's tokens (a source's rows counted at its own mean length); an
  epoch holds as many tokens as all sources together.
- A source whose share is more rows than it has is repeated whole (every row once per pass) and the rest drawn
  without replacement; a smaller share is drawn without replacement. So within a pass no row repeats, and a row
  repeats only when its source is upsampled.
- Every epoch draws afresh from a generator seeded by (seed, epoch), so epochs see different rows of a downsampled
  source, and a resumed run draws exactly what the interrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOURCE = "source"  # the column holding a mixed row's source index, in data.train's (data.validation's) order


@dataclass(frozen=True)
class SourceShare:
    """One source's place in an epoch: its rows and tokens, and how many of its rows an epoch takes."""

    name: str
    weight: float
    rows: int
    tokens: int
    epoch_rows: int

    @property
    def times(self) -> float:
        """How many times over an epoch takes the source (below 1: a share of its rows)."""
        return self.epoch_rows / self.rows

    def line(self, by: str) -> str:
        taken = f"{self.times:.2f}x its rows" if self.times >= 1 else f"{100 * self.times:.1f}% of its rows"
        return (
            f"source {self.name}: {self.rows:,} rows, {self.tokens:,} tokens, weight {self.weight:g} (by {by}) ->"
            f" {self.epoch_rows:,} rows an epoch ({taken})"
        )


def epoch_shares(
    names: list[str], weights: list[float], lengths: list[int], sources: list[int], by: str
) -> list[SourceShare]:
    """Each source's rows per epoch. `lengths` and `sources`: every training row's tokens and source index."""
    length, source = np.asarray(lengths, dtype=np.int64), np.asarray(sources, dtype=np.int64)
    rows = np.bincount(source, minlength=len(names))
    tokens = np.bincount(source, weights=length, minlength=len(names)).astype(np.int64)
    share = np.asarray(weights, dtype=np.float64) / sum(weights)
    if by == "tokens":
        mean = tokens / np.maximum(rows, 1)
        wanted = share * tokens.sum() / np.maximum(mean, 1e-9)
    else:
        wanted = share * rows.sum()
    counts = np.maximum(np.rint(wanted).astype(np.int64), 1)
    return [
        SourceShare(name, weight, int(n), int(t), int(c))
        for name, weight, n, t, c in zip(names, weights, rows, tokens, counts)
    ]


def epoch_rows(sources: list[int], shares: list[SourceShare], seed: int, epoch: int) -> list[int]:
    """The dataset indices one epoch trains (in source order; the sampler then orders them)."""
    rng = np.random.default_rng([seed, epoch])
    source = np.asarray(sources, dtype=np.int64)
    picked = []
    for index, share in enumerate(shares):
        members = np.flatnonzero(source == index)
        whole, rest = divmod(share.epoch_rows, len(members))
        picked += [members] * whole
        if rest:
            picked.append(np.sort(rng.choice(members, size=rest, replace=False)))
    return [int(i) for i in np.concatenate(picked)]
