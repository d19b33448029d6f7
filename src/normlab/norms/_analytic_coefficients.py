"""Coefficient functions with a hand-written vector-Jacobian product, for `instance_affine`.

A mixed-statistics method (Switchable Norm, Batch-Instance Norm) maps the per-(n, c) moments
and its small parameters to the coefficients of y = x·A + B,

    (A, B) = f(μ, σ², θ),   all (N, C), (C,) or (K,) tensors,

in a couple of dozen tiny operations. Autograd through them costs more Python time than the data
passes on a small CPU, so the method supplies ``forward_parts(cfg, μ, σ², θ)`` (A, B as keys
"scale", "shift", and the intermediates) and ``backward_parts(cfg, parts, θ, ∂L/∂A, ∂L/∂B)``
(the VJP (∂L/∂μ, ∂L/∂σ², ∂L/∂θ…) from them, in about as many operations again), and
`AnalyticCoefficients` turns the pair into the coefficient function `instance_affine` takes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab.core.tracing import compiling


class _AnalyticFunction(torch.autograd.Function):
    """(A, B) = f(μ, σ², *params) of an `AnalyticCoefficients`, with its hand-written VJP."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, coefficients: AnalyticCoefficients, mean: Tensor, var: Tensor, *params: Tensor
    ) -> tuple[Tensor, Tensor]:
        parts = coefficients.parts(mean, var, params)
        ctx.coefficients = coefficients
        ctx.parts = parts
        ctx.save_for_backward(mean, var, *params)
        # aliases: the outputs get this node as grad_fn, and ctx.parts must not hold them (a
        # reference cycle through the autograd graph that Python's collector cannot free)
        return parts["scale"].detach(), parts["shift"].detach()

    @staticmethod
    def backward(ctx: Any, g_scale: Tensor, g_shift: Tensor) -> tuple[Tensor | None, ...]:
        mean, var, *params = ctx.saved_tensors
        # double backward (grad mode on): the VJP of a differentiable recomputation
        parts = None if torch.is_grad_enabled() else ctx.parts
        _, grads = ctx.coefficients.vjp(mean, var, tuple(params), g_scale, g_shift, parts)
        wanted = ctx.needs_input_grad[1:]
        return (None, *(g if w else None for g, w in zip(grads, wanted, strict=True)))


class AnalyticCoefficients:
    """The coefficient function (μ, σ², *params) -> (A, B) that `instance_affine` takes, with a
    hand-written vector-Jacobian product.

    Autograd through the couple of dozen tiny (N, C) operations of a mixed-statistics method
    costs more Python time than its data passes on a small CPU: ``forward_parts(cfg, μ, σ²,
    params)`` computes A, B (keys "scale", "shift") and the intermediates, and
    ``backward_parts(cfg, parts, params, ∂L/∂A, ∂L/∂B)`` the VJP from them in about as many
    operations again. Called without gradient tracking (the forward pass) it computes f
    directly and keeps the merged batch moments (key "batch") in ``batch`` for the running
    statistics; with tracking it goes through an autograd Function whose double backward
    differentiates the VJP of a differentiable recomputation. ``vjp`` serves callers that need
    no autograd at all. The intermediates of the forward call are reused when the backward pass
    calls again with the same (detached) tensors.
    """

    def __init__(self, forward_parts: Any, backward_parts: Any, cfg: Any) -> None:
        self.forward_parts = forward_parts
        self.backward_parts = backward_parts
        self.cfg = cfg
        self.batch: tuple[Tensor, Tensor] | None = None
        self._inputs: tuple[Tensor, ...] = ()
        self._parts: dict[str, Any] = {}

    def parts(self, mean: Tensor, var: Tensor, params: tuple[Tensor, ...]) -> dict[str, Any]:
        """``forward_parts`` of these inputs; cached for the first call without tracking."""
        if compiling():  # no data pointers in a traced graph (normlab.core.tracing)
            return self.forward_parts(self.cfg, mean, var, params)
        inputs = (mean, var, *params)
        if len(inputs) == len(self._inputs) and all(
            a.data_ptr() == b.data_ptr() and a.shape == b.shape
            for a, b in zip(inputs, self._inputs, strict=True)
        ):  # the same memory (held by self._inputs, so not reused): the same values
            return self._parts
        parts = self.forward_parts(self.cfg, mean, var, params)
        if not self._inputs and not torch.is_grad_enabled():
            self._inputs, self._parts = inputs, parts
        return parts

    def __call__(self, mean: Tensor, var: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        if torch.is_grad_enabled() and not compiling():
            # graph capture differentiates forward_parts itself (the Function's hand-written
            # VJP is for eager speed; torch.export would not call it)
            return _AnalyticFunction.apply(self, mean, var, *params)  # type: ignore[no-any-return]
        parts = self.parts(mean, var, params)
        self.batch = parts.get("batch")
        return parts["scale"], parts["shift"]

    def vjp(
        self, mean: Tensor, var: Tensor, params: tuple[Tensor, ...], g_scale: Tensor,
        g_shift: Tensor, parts: dict[str, Any] | None = None,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """A, and (∂L/∂μ, ∂L/∂σ², ∂L/∂params...) for ∂L/∂A = ``g_scale``, ∂L/∂B = ``g_shift``
        (None for the running statistics)."""
        if parts is None:
            parts = (
                self.forward_parts(self.cfg, mean, var, params)  # differentiable
                if torch.is_grad_enabled() else self.parts(mean, var, params)
            )
        grads = self.backward_parts(self.cfg, parts, params, g_scale, g_shift)
        return parts["scale"], grads + [None] * (len(params) + 2 - len(grads))


__all__ = ["AnalyticCoefficients"]
