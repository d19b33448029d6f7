"""Catalogue cases of Ghost Batch Normalization (collected by catalogue.py).

The contract shapes have batch sizes 2 to 4, so the cases use ghost batches of 2 or 3 samples:
chunking (with a smaller last chunk, or a merged one for (N, C) input) is really exercised, and
a batch of 2 is one chunk (plain BN). ``ghost_128`` never chunks these batches and is checked
against torch.nn.BatchNorm by the parity tests (ghost size >= batch size is BN). The layer has two
fast paths chosen by the number of positions per (sample, channel) slice (see
``MIN_POSITIONS_PER_SLICE``): the small default shapes take the permuted native-BN path,
``long_slices`` the per-slice (instance) path.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_batch_family_bn as ref
from catalogue import Case, _torch_bn


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.ghost_batch_norm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, training=m.training,
        ghost_batch_size=m.ghost_batch_size, eps=m.eps, channel_dim=m.channel_dim,
        split=m.split,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.ghost_batch_norm(
        x, m.running_mean, m.running_var, m.weight, m.bias, training=m.training,
        ghost_batch_size=m.ghost_batch_size, split=m.split, eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _gbn(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", True)
    ghost = kwargs.setdefault("ghost_batch_size", 2)
    extra: dict[str, Any] = {}
    if kwargs.pop("long_slices", False):
        # >= MIN_POSITIONS_PER_SLICE positions: the per-slice (instance) path; the other cases'
        # shapes take the permuted native-BN path
        extra["shapes"] = ((4, 6, 32), (3, 6, 8, 4), (3, 6, 4, 4, 2))
        extra["grad_shape"] = (3, 6, 32)
    if not tracking:
        # eval uses the whole batch: every batch must chunk for train and eval to differ
        extra["shapes"] = ((4, 6), (3, 6, 5), (3, 6, 4, 3), (3, 6, 3, 2, 3))
    if ghost >= 4:
        extra["torch_equivalent"] = _torch_bn
    return Case(
        name="ghost_batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        has_running_stats=tracking,
        train_eval_differ=True,
        per_sample=False,
        running_step=functools.partial(ref.ghost_running_step_ref, ghost_batch_size=ghost,
                                       split=kwargs.get("split", "size"))
        if tracking else None,
        **extra,
    )


CASES: tuple[Case, ...] = (
    _gbn(),  # ghost 2: batch 3 -> chunks 2, 1 (1 sample, |S| values); batch 4 -> 2, 2
    _gbn("ghost_3", ghost_batch_size=3),  # (4, 6) -> remainder of 1 value merged: one chunk
    _gbn("affine_false", affine=False),
    _gbn("momentum_none", momentum=None),
    _gbn("no_tracking", track_running_stats=False),
    _gbn("ghost_128", ghost_batch_size=128),  # never chunks: BN (parity with torch.nn)
    _gbn("long_slices", long_slices=True),  # batches 3 to 5 in ghost batches of 2
    _gbn("split_count", split="count"),  # bigBatch's x.chunk(N // 2): batch 3 -> one chunk
    _gbn("split_count_long_slices", split="count", long_slices=True),  # batch 5 -> 3, 2
)
