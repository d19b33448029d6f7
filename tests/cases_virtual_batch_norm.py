"""Catalogue cases of Virtual Batch Normalization (collected by tests/catalogue.py).

A VirtualBatchNorm needs a reference batch before its first forward call, so these cases build
their layer with a deterministic one: ``make`` sets R from fixed data (``reference_shape``,
``reference_seed``) in the layer's dtype and layout. Tests that randomize the state afterwards
(``randomize_``) overwrite μ_R and σ²_R, and the oracle reads whatever the buffers hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import catalogue
import normlab.functional as NF
import oracles_virtual_batch_norm as vbn_oracles
from catalogue import Case

REFERENCE_KEYS = frozenset({"reference_mean", "reference_var", "reference_size"})


def _reference(m: Any, x: Tensor) -> Tensor:
    return vbn_oracles.virtual_batch_norm_ref(
        x,
        m.reference_mean,
        m.reference_var,
        m.reference_size,
        m.weight,
        m.bias,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.virtual_batch_norm(
        x,
        m.reference_mean,
        m.reference_var,
        m.reference_size,
        m.weight,
        m.bias,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


@dataclass(frozen=True)
class VBNCase(Case):
    """A Case whose layers come with a fixed reference batch of shape (N_R, C, *S)."""

    reference_shape: tuple[int, ...] = (5, 6, 3, 2)
    reference_seed: int = 1234

    def make(self, num_features: int | None = None, **kw: Any) -> nn.Module:
        m = super().make(num_features, **kw)
        if m.reference_mean.device.type != "meta":
            n_ref, _, *spatial = self.reference_shape
            shape = (n_ref, m.num_features, *spatial)
            x_ref = catalogue.make_input(shape, torch.float64, seed=self.reference_seed)
            x_ref = x_ref.to(device=m.reference_mean.device, dtype=m.reference_mean.dtype)
            if m.channel_dim == -1:
                x_ref = x_ref.movedim(1, -1)
            with torch.no_grad():
                m.set_reference(x_ref)
        return m


def _vbn(variant: str = "", reference_shape: tuple[int, ...] = (5, 6, 3, 2), **kwargs: Any) -> Case:
    affine = frozenset({"weight", "bias"}) if kwargs.get("affine", True) else frozenset()
    return VBNCase(
        name="virtual_batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        state_keys=affine | REFERENCE_KEYS,
        reference_shape=reference_shape,
    )


CASES: tuple[Case, ...] = (
    _vbn(),
    _vbn("affine_false", affine=False),
    _vbn("eps", eps=1e-3),
    _vbn("one_reference_example", reference_shape=(1, 6, 4, 3)),
    _vbn("large_reference", reference_shape=(64, 6)),
)
