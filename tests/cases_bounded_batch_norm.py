"""Catalogue cases of Bounded Batch Normalization (collected by catalogue.py).

Its forward pass is BatchNorm's, so the cases are BN's (catalogue's ``_bn``: the float64 BN
oracle of oracles.py, the BN functional, and torch.nn.BatchNorm as the parity twin) under the
bounded layer's name. The scale projection that makes it Bounded BN is tested against its own
oracle in test_bounded_batch_norm.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from catalogue import Case, _bn


def _bbn(variant: str = "", **kwargs: Any) -> Case:
    return dataclasses.replace(_bn(variant, **kwargs), name="bounded_batch_norm")


CASES: tuple[Case, ...] = (
    _bbn(),
    _bbn("affine_false", affine=False),
    _bbn("momentum_none", momentum=None),
    _bbn("no_tracking", track_running_stats=False),
)
