"""The shared normalization-activation kernel is generic: a layer it was not written for (Filter
Response Norm + TLU, y = max(γ·x/sqrt(ν² + ε) + β, τ)) is one `Epilogue`, no bespoke Function."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from normlab.norms import _chunked
from normlab.norms._chunked import Sums, per_row
from normlab.norms._norm_activation import Epilogue, Rows, norm_activation
from normlab.norms._per_instance import broadcast, group_statistics

EPS = 1e-6


class _FrnTlu(Epilogue):
    """ν² = σ² + μ² per (n, c), r = 1/sqrt(ν² + ε), z = γ r x + β, y = max(z, τ)."""

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple, tuple]:
        weight, bias, tau = params
        rows = Rows(x)
        y, mean, rstd = group_statistics(x, rows.c, 0.0)
        r = (rstd.pow(-2) + mean * mean + EPS).rsqrt()
        scale, beta, floor = r * weight, per_row(bias), per_row(tau)  # type: ignore[operator]
        for a, b, yc, (xc,), _ in rows.sweep(y.view_as(rows.x3), (rows.x3,)):
            torch.mul(xc, per_row(scale[a:b]), out=yc).add_(beta).clamp_(min=floor)
        return y, (), (r,)

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Tensor | None]:
        weight, bias, tau = params
        (r,) = saved
        scale = r * weight
        sums = Sums.for_chunks(rows.chunks)
        sum_dz, sum_dzx = rows.new(rows.n, rows.c), rows.new(rows.n, rows.c)
        sum_g = rows.new(rows.c, zero=True)
        dx = torch.empty_like(rows.x3)
        for a, b, dxc, (xc, gc), (m,) in rows.sweep(dx, (rows.x3, grad.view_as(rows.x3)), 1):
            torch.mul(xc, per_row(scale[a:b]), out=m).add_(per_row(bias)).gt_(per_row(tau))
            dz = m.mul_(gc)  # the mask is all the backward needs
            sum_dz[a:b], sum_dzx[a:b] = sums(dz, xc)
            sum_g += gc.sum((0, 2))
            p = -scale[a:b] * r[a:b].pow(2) * sum_dzx[a:b] / rows.length  # ∂r/∂x = −r³x/L
            torch.mul(dz, per_row(scale[a:b]), out=dxc).add_(xc * per_row(p))
        d_beta = sum_dz.sum(0)
        return [dx, (r * sum_dzx).sum(0), d_beta, sum_g - d_beta]

    def eager(self, saved: list[Any], x: Tensor, *params: Tensor | None) -> Tensor:
        weight, bias, tau = (broadcast(t, x.dim()) for t in params)  # type: ignore[arg-type]
        nu2 = x.pow(2).mean(dim=tuple(range(2, x.dim())), keepdim=True)
        z = weight * x / (nu2 + EPS).sqrt() + bias
        return torch.where(z > tau, z, tau)


def _inputs(dtype: torch.dtype) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 6, generator=g, dtype=dtype)
    params = [torch.rand(3, generator=g, dtype=dtype) + 0.5, torch.randn(3, generator=g,
              dtype=dtype) * 0.1, torch.full((3,), -0.2, dtype=dtype)]
    return [t.requires_grad_() for t in (x, *params)]


@pytest.mark.parametrize("elements", [_chunked.CHUNK_ELEMENTS, 72], ids=["one", "chunks"])
def test_frn_tlu_epilogue_matches_autograd(monkeypatch: pytest.MonkeyPatch, elements: int) -> None:
    monkeypatch.setattr(_chunked, "CHUNK_ELEMENTS", elements)
    x, *params = _inputs(torch.float64)
    y, extras = norm_activation(x, _FrnTlu(), *params)
    assert extras == ()
    expected = _FrnTlu().eager([], x, *params)
    torch.testing.assert_close(y, expected)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *params], dy)
    want = torch.autograd.grad(expected, [x, *params], dy)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_frn_tlu_epilogue_double_backward() -> None:
    inputs = _inputs(torch.float64)
    assert torch.autograd.gradgradcheck(
        lambda *t: norm_activation(t[0], _FrnTlu(), *t[1:])[0], inputs, eps=1e-6, atol=1e-4
    )
