"""Which elements of an (N, C, *S) tensor share one statistic.

A normalization method reduces over some of three roles: ``batch`` (N), ``channel`` (C, split
into contiguous ``groups`` when reducing over it) and ``spatial`` (every dimension after C, or
between N and C when ``channel_dim=-1``). BN reduces over (batch, spatial), LN over
(channel, spatial), IN over (spatial), GN over (channel within a group, spatial), per-position
LN and RMSNorm over (channel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["batch", "channel", "spatial"]
_ROLES: tuple[Role, ...] = ("batch", "channel", "spatial")


@dataclass(frozen=True)
class Axes:
    """The set of elements that share one mean and variance.

    Args:
        reduce: the roles reduced over, among ``"batch"``, ``"channel"``, ``"spatial"``.
        groups: number of contiguous channel groups when reducing over ``"channel"``
            (1 = all channels together).
        ghost_batch_size: when reducing over ``"batch"``, the batch is split into chunks of
            this many samples, each with its own statistic (Ghost BN).

    Example:
        >>> Axes(("batch", "spatial")).describe()
        'over (N, *S): one statistic per channel'
        >>> Axes(("channel", "spatial"), groups=32).describe()
        'over (C/32, *S): one statistic per (sample, group of channels)'
    """

    reduce: tuple[Role, ...]
    groups: int = 1
    ghost_batch_size: int | None = None

    def __post_init__(self) -> None:
        unknown = [r for r in self.reduce if r not in _ROLES]
        if unknown:
            raise ValueError(f"Axes roles must be among {_ROLES}; got {unknown}.")
        ordered = tuple(r for r in _ROLES if r in self.reduce)
        object.__setattr__(self, "reduce", ordered)

    def reduced_dims(self, ndim: int, channel_dim: int = 1) -> tuple[int, ...]:
        """Dimensions of a rank-``ndim`` input reduced over (groups split C further)."""
        channel = channel_dim % ndim
        spatial = [d for d in range(1, ndim) if d != channel]
        dims: list[int] = []
        if "batch" in self.reduce:
            dims.append(0)
        if "channel" in self.reduce:
            dims.append(channel)
        if "spatial" in self.reduce:
            dims.extend(spatial)
        return tuple(sorted(dims))

    def set_size(self, shape: Sequence[int], channel_dim: int = 1) -> int:
        """Number of elements that share one statistic for an input of this shape."""
        ndim = len(shape)
        channel = channel_dim % ndim
        size = 1
        for d in self.reduced_dims(ndim, channel_dim):
            if d == channel:
                size *= shape[d] // self.groups
            elif d == 0 and self.ghost_batch_size is not None:
                size *= min(shape[0], self.ghost_batch_size)
            else:
                size *= shape[d]
        return size

    def describe(self) -> str:
        """A human-readable account, e.g. ``'over (N, *S): one statistic per channel'``."""
        over = []
        if "batch" in self.reduce:
            ghost = self.ghost_batch_size
            over.append("N" if ghost is None else f"ghost batches of {ghost}")
        if "channel" in self.reduce:
            over.append("C" if self.groups == 1 else f"C/{self.groups}")
        if "spatial" in self.reduce:
            over.append("*S")
        per = []
        if "batch" not in self.reduce:
            per.append("sample")
        elif self.ghost_batch_size is not None:
            per.append("ghost batch")
        if "channel" not in self.reduce:
            per.append("channel")
        elif self.groups > 1:
            per.append("group of channels")
        if "spatial" not in self.reduce:
            per.append("position")
        who = per[0] if len(per) == 1 else f"({', '.join(per)})"
        return f"over ({', '.join(over)}): one statistic per {who}"

    def count(self, shape: Sequence[int], channel_dim: int = 1) -> int:
        """Number of distinct statistics for an input of this shape."""
        return math.prod(shape) // max(self.set_size(shape, channel_dim), 1)


BATCH = Axes(("batch", "spatial"))
LAYER = Axes(("channel", "spatial"))
INSTANCE = Axes(("spatial",))
POSITION = Axes(("channel",))


def group(num_groups: int) -> Axes:
    """GroupNorm's axes: (C/G, *S) per (sample, group)."""
    return Axes(("channel", "spatial"), groups=num_groups)
