"""Batch moments merged across the replicas of a process group, exactly and differentiably.

Each replica holds the moments (count n_r, mean μ_r, biased variance σ²_r) of its own part of
the batch, one per channel. One ``all_gather`` of the stacked (n_r, μ_r, σ²_r) gives every
replica all of them, and every replica merges them the same way (Chan et al. 1979, exact for
any counts, including zero: `normlab.core.moments.Moments.reduce`):

$$ n = \\sum_r n_r,\\quad μ = \\sum_r \\frac{n_r}{n} μ_r,\\quad
   σ^2 = \\sum_r \\frac{n_r}{n}\\left(σ^2_r + (μ_r − μ)^2\\right). $$

Backward: every replica differentiates the same merge, so the gradient reaching replica r's
(μ_r, σ²_r) is the sum over replicas of the gradients of their copies of the gathered tensor:
one ``all_reduce`` (sum) of that gradient, then replica r keeps its own row. Hence one
collective per layer per forward and one per backward, whatever the method; gradients equal
single-process training on the concatenated batch. A replica with an empty batch sends n_r = 0
(it still joins both collectives, so nobody waits for it).

Statistics travel in float32 for fp16/bf16 inputs (`Moments` computes them so), in float64
for float64 inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from normlab.core.moments import Moments
from normlab.errors import ConfigError

ProcessGroup = Any  # torch.distributed.ProcessGroup, or None for the default group

# -- errors raised here ----------------------------------------------------------------------------


def not_initialized() -> ConfigError:
    return ConfigError(
        "sync: torch.distributed is not initialized, so there are no other replicas to share "
        "batch statistics with. Call torch.distributed.init_process_group(...) first (torchrun "
        "sets the environment for it), or train without normlab.sync on one process."
    )


# -- the collective --------------------------------------------------------------------------------


class _GatherStats(torch.autograd.Function):
    """(3, C) local rows -> (world, 3, C) rows of every replica; backward: all_reduce, own row."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, group: ProcessGroup) -> Tensor:  # type: ignore[override]
        world = dist.get_world_size(group)
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local.contiguous(), group=group)
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank], None


def merge_across(local: Moments, group: ProcessGroup = None) -> Moments:
    """The moments of the union of every replica's batch (see the module docstring).

    ``local.count`` is this replica's number of values per statistic (an int, 0 for an empty
    batch). The returned count is the global one, a Python int.

    Args:
        local: this replica's moments.
        group: the replicas to merge over; None: the default group.
    """
    count = torch.full_like(local.mean, float(local.count))
    rows = torch.stack([count, local.mean, local.var])
    gathered = _GatherStats.apply(rows, group)
    counts, means, variances = gathered.unbind(1)
    total = int(counts[:, 0].sum().item()) if counts.numel() else 0
    merged = Moments(means, variances, counts.detach()).reduce(0)
    return Moments(merged.mean, merged.var, total)


def initialized() -> bool:
    """torch.distributed is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def sum_across(values: Tensor, group: ProcessGroup = None) -> Tensor:
    """Elementwise sum over the replicas of ``group`` of ``values`` (one ``all_reduce``; a
    new tensor, no autograd). For bookkeeping that every replica must agree on, e.g. how
    many batches `normlab.recalibrate` saw in all and whether one replica failed."""
    total = values.detach().clone().contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total


def gather_across(t: Tensor, group: ProcessGroup = None) -> Tensor:
    """Every replica's ``t`` (one shape on all), stacked in rank order: (world, *t.shape).

    One ``all_gather``, no autograd: for running statistics whose update depends on which
    replica holds what (Ghost BN's EMA over the replicas' ghost batches, in rank order).
    """
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, t.detach().contiguous(), group=group)
    return torch.stack(gathered)


class CrossReplicaMoments:
    """The ``moments_reducer`` that `normlab.sync` gives a layer: `merge_across` over
    ``process_group`` (None: the default group).

    Args:
        process_group: the replicas to merge over; None: the default group.
    """

    def __init__(self, process_group: ProcessGroup = None) -> None:
        self.process_group = process_group

    def __call__(self, local: Moments) -> Moments:
        if not initialized():
            raise not_initialized()
        return merge_across(local, self.process_group)

    def gather(self, t: Tensor) -> Tensor:
        """`gather_across` over ``process_group``."""
        if not initialized():
            raise not_initialized()
        return gather_across(t, self.process_group)

    def __deepcopy__(self, memo: dict[int, Any]) -> CrossReplicaMoments:
        return self  # a process group is a handle to shared state, not something to copy

    def __reduce__(self) -> tuple[Any, ...]:
        # a process group cannot be pickled; the unpickled layer syncs over the default group
        return (CrossReplicaMoments, (None,))

    def __repr__(self) -> str:
        return f"CrossReplicaMoments(process_group={self.process_group!r})"
