"""Catalogue cases of the toy Sample RMS Norm (tests/toy_norms/sample_rms_norm.py).

The float64 oracle is written here from the definition, with reshapes only.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from catalogue import Case
from toy_norms.sample_rms_norm import sample_rms_norm


def _reference(m: Any, x: Tensor) -> Tensor:
    """x / sqrt(mean over (C, *S) of x² + ε) · γ, per sample, in float64."""
    x64 = x.double().movedim(-1, 1) if m.channel_dim == -1 else x.double()
    n, c = x64.shape[:2]
    rms = (x64.reshape(n, -1).square().mean(1) + m.eps).sqrt()
    y = x64 / rms.reshape(n, *([1] * (x64.dim() - 1)))
    if m.weight is not None:
        y = y * m.weight.double().reshape(c, *([1] * (x64.dim() - 2)))
    return y.movedim(1, -1) if m.channel_dim == -1 else y


def _functional(m: Any, x: Tensor) -> Tensor:
    return sample_rms_norm(x, m.weight, eps=m.eps, channel_dim=m.channel_dim)


def _srms(variant: str = "", **kwargs: Any) -> Case:
    return Case(
        name="sample_rms_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        state_keys=frozenset({"weight"} if kwargs.get("affine", True) else ()),  # no bias
    )


CASES: tuple[Case, ...] = (
    _srms(),
    _srms("affine_false", affine=False),
    _srms("eps", eps=1e-3),
)
