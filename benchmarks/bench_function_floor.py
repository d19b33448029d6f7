"""The floor of the batch family on small maps with a hand-written autograd.Function.

Issue 9's third composition, after the autograd compositions of bench_renorm_floor.py and
bench_switchable_floor.py: one ``torch.autograd.Function`` per method whose forward and backward
are ``no_grad`` sequences of ATen calls, so autograd records a single node and the backward is
the analytic one. No validation, no schedule, no dtype care — the arithmetic only, so these are
lower bounds for a layer that must also check its input and keep its state.

* ``BN kernels in a Function``: native_batch_norm forward and native_batch_norm_backward in a
  Function; the price of the Function mechanism alone.
* ``... + 8 vector ops``: the same plus eight no-op-sized (C,) vector ops in the forward; the
  marginal price of one tiny ATen call, which every extra statistic of a method pays.
* ``BatchRenorm Function``: x̂ from BN's kernel without affine; r = clip(σ_B/σ), d =
  clip((μ_B − μ)/σ) from its saved moments; y = x̂·γr + (γd + β); backward = BN's backward with
  weight γr, dγ = r·Σdy·x̂ + d·Σdy. 11 vector ops forward, 2 backward.
* ``SwitchableNorm Function``: per-(n, c) moments, LN and BN moments merged from them, the two
  softmaxes, one affine pass; backward: Σdy and Σdy·x per (n, c) from one native pass, the
  chain through the mix in (N, C) vector ops, dx = s·dy + B·x + A in two passes.

Before timing, each Function's gradients are checked against autograd of an eager float64
composition (so a fast wrong Function cannot pass for a floor).

    python benchmarks/bench_function_floor.py [--rounds 31] [--calls 20] [--threads 2]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import normlab
from bench_renorm_floor import Step, floor_table, module

C = 64
EPS, RMAX, DMAX, MOMENTUM = 1e-5, 3.0, 5.0, 0.01
aten = torch.ops.aten


class _BNKernels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, extra_ops: int) -> Tensor:
        y, mean, rstd = aten.native_batch_norm(x, w, b, None, None, True, 0.0, EPS)
        v = mean
        for _ in range(extra_ops):
            v = v.mul(1.0)
        ctx.save_for_backward(x, w, mean, rstd)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, w, mean, rstd = ctx.saved_tensors
        dx, dw, db = aten.native_batch_norm_backward(
            dy, x, w, None, None, mean, rstd, True, EPS, [True, True, True])
        return dx, dw, db, None


def bn_kernels(extra_ops: int = 0) -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    return lambda x: (_BNKernels.apply(x, w, b, extra_ops), [w, b])


class _Renorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, rm: Tensor, rsig: Tensor) -> Tensor:
        xhat, mean, rstd = aten.native_batch_norm(x, None, None, None, None, True, 0.0, EPS)
        sig_b = rstd.reciprocal()
        r = sig_b.div(rsig).clamp_(1 / RMAX, RMAX)
        d = mean.sub(rm).div_(rsig).clamp_(-DMAX, DMAX)
        wr = w * r
        shift = torch.addcmul(b, w, d)
        y = xhat.mul_(wr[:, None, None]).add_(shift[:, None, None])
        rm.lerp_(mean, MOMENTUM)
        rsig.lerp_(sig_b, MOMENTUM)
        ctx.save_for_backward(x, wr, mean, rstd, r, d)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, wr, mean, rstd, r, d = ctx.saved_tensors
        dx, dwr, db = aten.native_batch_norm_backward(
            dy, x, wr, None, None, mean, rstd, True, EPS, [True, True, True])
        return dx, torch.addcmul(dwr * r, db, d), db, None, None


def renorm() -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    rm, rsig = torch.zeros(C), torch.ones(C)
    return lambda x: (_Renorm.apply(x, w, b, rm, rsig), [w, b])


def _sn_moments(x: Tensor, wm: Tensor, wv: Tensor) -> tuple[Tensor, ...]:
    """Per-(n, c) mixed mean and variance, and the three moment pairs they mix."""
    v_in, m_in = torch.var_mean(x, dim=(2, 3), correction=0)
    sq = torch.addcmul(v_in, m_in, m_in)
    m_ln, m_bn = m_in.mean(1, keepdim=True), m_in.mean(0, keepdim=True)
    v_ln = torch.addcmul(sq.mean(1, keepdim=True), m_ln, m_ln, value=-1)
    v_bn = torch.addcmul(sq.mean(0, keepdim=True), m_bn, m_bn, value=-1)
    a0, a1, a2 = wm.unbind()
    c0, c1, c2 = wv.unbind()
    mu = torch.addcmul(torch.addcmul(m_in * a0, m_ln, a1), m_bn, a2)
    var = torch.addcmul(torch.addcmul(v_in * c0, v_ln, c1), v_bn, c2)
    return mu, var, m_in, m_ln, m_bn, v_in, v_ln, v_bn


class _Switchable(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, lm: Tensor, lv: Tensor) -> Tensor:
        wm, wv = lm.softmax(0), lv.softmax(0)
        mu, var, *moments = _sn_moments(x, wm, wv)
        rstd = var.add_(EPS).rsqrt_()
        s = rstd * w
        t = torch.addcmul(b, mu, s, value=-1)
        y = torch.addcmul(t[:, :, None, None], x, s[:, :, None, None])
        ctx.save_for_backward(x, w, wm, wv, mu, rstd, s, *moments)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, w, wm, wv, mu, rstd, s, m_in, m_ln, m_bn, v_in, v_ln, v_bn = ctx.saved_tensors
        n, c, h, wd = x.shape
        hw = h * wd
        sums = torch.stack([(dy * x).sum((2, 3)), dy.sum((2, 3))])
        sxy, sy = sums.unbind()
        centred = torch.addcmul(sxy, mu, sy, value=-1)  # Σ dy·(x − μ)
        dw = (centred * rstd).sum(0)
        db = sy.sum(0)
        g_mu = -(s * sy)
        g_var = centred * w * rstd.pow(3) * -0.5
        moments_mu = torch.stack([m_in, m_ln.expand(n, c), m_bn.expand(n, c)])
        moments_var = torch.stack([v_in, v_ln.expand(n, c), v_bn.expand(n, c)])
        d_wm = (moments_mu * g_mu).sum((1, 2))
        d_wv = (moments_var * g_var).sum((1, 2))
        d_lm = wm * (d_wm - (wm * d_wm).sum())
        d_lv = wv * (d_wv - (wv * d_wv).sum())
        a0, a1, a2 = wm.unbind()
        c0, c1, c2 = wv.unbind()
        gv_in, gv_ln, gv_bn = g_var * c0, g_var.sum(1, keepdim=True) * c1, g_var.sum(0) * c2
        gm_in, gm_ln, gm_bn = g_mu * a0, g_mu.sum(1, keepdim=True) * a1, g_mu.sum(0) * a2
        coef_x = (gv_in + gv_ln / c + gv_bn / n) * (2 / hw)
        coef_1 = (gm_in - 2 * gv_in * m_in) / hw
        coef_1 += (gm_ln - 2 * gv_ln * m_ln) / (c * hw)
        coef_1 += (gm_bn - 2 * gv_bn * m_bn) / (n * hw)
        dx = torch.addcmul(coef_1[:, :, None, None], x, coef_x[:, :, None, None])
        dx.addcmul_(dy, s[:, :, None, None])
        return dx, dw, db, d_lm, d_lv


def switchable() -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    lm, lv = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    return lambda x: (_Switchable.apply(x, w, b, lm, lv), [w, b, lm, lv])


def _eager_switchable(x: Tensor, w: Tensor, b: Tensor, lm: Tensor, lv: Tensor) -> Tensor:
    v_in, m_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    v_ln, m_ln = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
    v_bn, m_bn = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
    wm, wv = lm.softmax(0), lv.softmax(0)
    mu = wm[0] * m_in + wm[1] * m_ln + wm[2] * m_bn
    var = wv[0] * v_in + wv[1] * v_ln + wv[2] * v_bn
    return (x - mu) / (var + EPS).sqrt() * w[:, None, None] + b[:, None, None]


def check_switchable() -> None:
    """The Function's gradients against autograd of the eager composition, float64."""
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True)
            for s in ((3, 5, 4, 2), (5,), (5,), (3,), (3,))]
    grad = torch.randn(3, 5, 4, 2, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(_Switchable.apply(*args), args, grad)
    want = torch.autograd.grad(_eager_switchable(*args), args, grad)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


def main(argv: list[str] | None = None) -> int:
    check_switchable()
    return floor_table(
        __doc__,
        lambda: {
            "nn.BatchNorm2d": module(nn.BatchNorm2d(C)),
            "BN kernels in a Function": bn_kernels(),
            "... + 8 vector ops": bn_kernels(8),
            "BatchRenorm Function": renorm(),
            "normlab.BatchRenorm": module(
                normlab.BatchRenorm(C, warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0)),
            "SwitchableNorm Function": switchable(),
            "normlab.SwitchableNorm": module(normlab.SwitchableNorm(C)),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
