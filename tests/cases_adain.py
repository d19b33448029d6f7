"""Catalogue cases of AdaIN (collected by catalogue.py).

The generic battery calls ``layer(x)``: the layer then imposes its stored style statistics
(the ``style_mean`` / ``style_var`` buffers, which ``set_style`` writes and ``randomize_``
draws here, variances in [0.5, 2]). Per-call styles, masks and the style gradient are in
test_adain.py. No running statistics; the same function in training and eval.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

import normlab.functional as NF
import oracles_adain as ref
from catalogue import Case

_SPATIAL = ((3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))  # per-instance statistics need *S


def _reference(m: Any, x: Tensor) -> Tensor:
    return ref.adain_ref(
        x,
        m.style_mean,
        m.style_var.sqrt(),
        m.weight,
        m.bias,
        alpha=m.alpha,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _functional(m: Any, x: Tensor) -> Tensor:
    return NF.adain_from_stats(
        x,
        m.style_mean,
        m.style_var.sqrt(),
        weight=m.weight,
        bias=m.bias,
        alpha=m.alpha,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _adain(variant: str = "", **kwargs: Any) -> Case:
    affine = {"weight", "bias"} if kwargs.get("affine", False) else set()
    return Case(
        name="adain",
        variant=variant,
        kwargs=kwargs,
        reference=_reference,
        functional=_functional,
        shapes=_SPATIAL,
        state_keys=frozenset({"style_mean", "style_var", *affine}),
    )


CASES: tuple[Case, ...] = (
    _adain(),
    _adain("alpha_half", alpha=0.5),
    _adain("alpha_0", alpha=0.0),
    _adain("eps", eps=1e-3),
    _adain("affine", affine=True, alpha=0.7),
)
