"""BatchNorm's two training paths (issue 14): torch's kernel, and on large contiguous input the
per-(n, c)-kernel composition (normlab.norms._batch_norm_composed). Every test runs on both
paths by moving the size threshold, against the float64 oracles of tests/oracles.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import normlab
import normlab.functional as NF
from normlab.norms import _batch_norm_composed as composed
from oracles import batch_norm_ref, running_stats_ref

F32, F64 = torch.float32, torch.float64
TOL = {F32: (2e-5, 2e-5), F64: (1e-11, 1e-11)}
PATHS = ("kernel", "composed")
# (shape, memory format, channel_dim); all with >= MIN_POSITIONS positions per (n, c) slice
SHAPES = [
    ((4, 3, 8, 8), torch.contiguous_format, 1),
    ((1, 3, 6, 7), torch.contiguous_format, 1),  # N = 1, |S| > 1
    ((4, 3, 40), torch.contiguous_format, 1),  # 3-d
    ((2, 3, 4, 5, 6), torch.contiguous_format, 1),  # 5-d
    ((4, 3, 8, 8), torch.channels_last, 1),  # composition does not take it: the kernel's
    ((4, 8, 8, 3), torch.contiguous_format, -1),  # channels last by channel_dim: the kernel's
]
SHAPE_IDS = ["4d", "n1", "3d", "5d", "channels_last", "channel_dim-1"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Route every eligible input to one path (threshold 0, or beyond any tensor)."""
    monkeypatch.setattr(composed, "MIN_ELEMENTS", 0 if request.param == "composed" else 1 << 62)
    return request.param


def _input(shape, fmt, dtype, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=F64) * 1.5 + offset).to(dtype)
    return x.contiguous(memory_format=fmt) if len(shape) == 4 else x


def _layer(c, dtype, channel_dim=1, **kw):
    m = normlab.BatchNorm(c, dtype=dtype, channel_dim=channel_dim, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.copy_(torch.randn(c, generator=g))
    return m


def _took_composition(y: Tensor) -> bool:
    return "Composed" in type(y.grad_fn).__name__


def _expects_composition(path: str, x: Tensor, channel_dim: int) -> bool:
    return path == "composed" and channel_dim == 1 and x.is_contiguous()


@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(("shape", "fmt", "channel_dim"), SHAPES, ids=SHAPE_IDS)
def test_output_gradients_and_running_stats_match_oracle(path, shape, fmt, channel_dim, dtype):
    c = shape[channel_dim]
    m = _layer(c, dtype, channel_dim)
    batches = [_input(shape, fmt, dtype, seed=s) for s in (0, 1)]
    for x in batches:
        x = x.requires_grad_()
        y = m(x)
        assert _took_composition(y) == _expects_composition(path, x, channel_dim)
        assert y.dtype == dtype and y.shape == x.shape
        assert y.is_contiguous(memory_format=fmt) or channel_dim == -1
        g = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
        grads = torch.autograd.grad(y, [x, m.weight, m.bias], g)
        xr = x.detach().double().requires_grad_()
        wr, br = (p.detach().double().requires_grad_() for p in (m.weight, m.bias))
        yr = batch_norm_ref(xr, wr, br, training=True, eps=m.eps, channel_dim=channel_dim)
        refs = torch.autograd.grad(yr, [xr, wr, br], g.double())
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(y.detach().double(), yr.detach(), rtol=rtol, atol=atol)
        for got, want in zip(grads, refs, strict=True):
            scale = float(want.abs().max())
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol * scale)
    mean, var, tracked = running_stats_ref(batches, 0.1, channel_dim=channel_dim)
    torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert int(m.num_batches_tracked) == tracked


def test_cumulative_average_and_no_running_stats(path):
    shape = (3, 4, 6, 6)
    batches = [_input(shape, torch.contiguous_format, F32, seed=s) for s in range(3)]
    m = _layer(4, F32, momentum=None)
    for x in batches:
        m(x)
    mean, var, tracked = running_stats_ref(batches, None)
    torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert int(m.num_batches_tracked) == tracked
    free = _layer(4, F32, track_running_stats=False)
    for training in (True, False):  # no running statistics: batch statistics in both modes
        y = free.train(training)(batches[0])
        torch.testing.assert_close(
            y.detach().double(), batch_norm_ref(batches[0], free.weight, free.bias,
                                                training=True), rtol=2e-5, atol=2e-5)


def test_in_place_op_on_the_output(path):
    """ReLU(inplace=True) after the layer (every ResNet): allowed, and the gradients stay right."""
    m = _layer(3, F64)
    x = _input((4, 3, 6, 6), torch.contiguous_format, F64).requires_grad_()
    y = torch.relu_(m(x))
    (dx,) = torch.autograd.grad(y, x, y.detach().cos())
    xr = x.detach().requires_grad_()
    yr = torch.relu(batch_norm_ref(xr, m.weight, m.bias, training=True, eps=m.eps))
    (want,) = torch.autograd.grad(yr, xr, yr.detach().cos())
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, want, rtol=1e-10, atol=1e-10)


def test_functional_matches_oracle(path):
    x = _input((2, 5, 7, 6), torch.contiguous_format, F64).requires_grad_()
    w, b = torch.rand(5, dtype=F64) + 0.5, torch.randn(5, dtype=F64)
    rm, rv = torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)
    y = NF.batch_norm(x, rm, rv, w, b, training=True)
    assert _took_composition(y) == (path == "composed")
    torch.testing.assert_close(y, batch_norm_ref(x, w, b, training=True), rtol=1e-12, atol=1e-12)
    assert torch.equal(rm, torch.zeros(5, dtype=F64)) and torch.equal(rv, torch.ones(5, dtype=F64))


@pytest.mark.parametrize("wrt", ["x", "weight"])
def test_gradient_of_only_x_or_only_weight(path, wrt):
    m = _layer(3, F64)
    m.bias.requires_grad_(False)
    x = _input((4, 3, 6, 6), torch.contiguous_format, F64)
    if wrt == "x":
        m.weight.requires_grad_(False)
        x.requires_grad_()
    y = m(x)
    leaf = x if wrt == "x" else m.weight
    (got,) = torch.autograd.grad(y, leaf, y.detach().cos())
    xr = x.detach().requires_grad_(wrt == "x")
    wr = m.weight.detach().clone().requires_grad_(wrt == "weight")
    yr = batch_norm_ref(xr, wr, m.bias, training=True, eps=m.eps)
    (want,) = torch.autograd.grad(yr, xr if wrt == "x" else wr, yr.detach().cos())
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_double_backward_matches_oracle(path):
    """create_graph=True: first-order gradients as without it, and the gradient penalty's
    gradients those of the float64 oracle."""
    m = _layer(3, F64)
    x = _input((3, 3, 6, 6), torch.contiguous_format, F64, seed=3).requires_grad_()
    g = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(4))
    params = [m.weight, m.bias]
    plain = torch.autograd.grad(m(x), [x, *params], g)
    y = m(x)
    first = torch.autograd.grad(y, [x, *params], g, create_graph=True)
    for a, b in zip(first, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    second = torch.autograd.grad(first[0].square().sum(), [x, m.weight])  # ∂dx/∂β = 0
    xr = x.detach().requires_grad_()
    pr = [p.detach().clone().requires_grad_() for p in params]
    yr = batch_norm_ref(xr, *pr, training=True, eps=m.eps)
    (dxr,) = torch.autograd.grad(yr, xr, g, create_graph=True)
    want = torch.autograd.grad(dxr.square().sum(), [xr, pr[0]])
    for a, b in zip(second, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))


def test_gradgradcheck(path):
    m = _layer(2, F64)
    x = _input((2, 2, 6, 6), torch.contiguous_format, F64, seed=5).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x_, w_, b_: NF.batch_norm(
        x_, weight=w_, bias=b_, training=True), (x, m.weight, m.bias))


def test_bf16_autocast_matches_kernel_path(path, monkeypatch):
    """Under CPU autocast the layer gives the kernel path's dtype and values (fp32 input: the
    composition; bf16 input: the kernel, whatever the threshold)."""
    for dtype in (F32, torch.bfloat16):
        x = _input((4, 3, 8, 8), torch.contiguous_format, dtype).requires_grad_()
        m = _layer(3, F32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        dx = torch.autograd.grad(y.float().sum() + (y.float() ** 2).sum(), x)[0]
        monkeypatch.setattr(composed, "MIN_ELEMENTS", 1 << 62)
        ref = _layer(3, F32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_ref = ref(x)
        dx_ref = torch.autograd.grad(y_ref.float().sum() + (y_ref.float() ** 2).sum(), x)[0]
        assert y.dtype == y_ref.dtype
        rtol = 1e-2 if dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(y.float(), y_ref.float(), rtol=rtol, atol=rtol)
        torch.testing.assert_close(dx.float(), dx_ref.float(), rtol=rtol, atol=rtol * 10)
        torch.testing.assert_close(m.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
        monkeypatch.setattr(composed, "MIN_ELEMENTS", 0 if path == "composed" else 1 << 62)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_batch_leaves_running_stats_alone(path, bad):
    m = _layer(3, F32)
    m(_input((4, 3, 6, 6), torch.contiguous_format, F32))
    before = [t.clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked)]
    x = _input((4, 3, 6, 6), torch.contiguous_format, F32, seed=2)
    x[1, 2, 3, 3] = bad
    y = m(x)
    assert not torch.isfinite(y[:, 2]).all()
    for t, old in zip((m.running_mean, m.running_var, m.num_batches_tracked), before,
                      strict=True):
        assert torch.equal(t, old)


def test_float32_variance_overflow_falls_back_to_kernel(path, monkeypatch):
    """|x| ~ 1e30: the per-slice σ² overflows float32 in the group-norm kernel; the layer then
    runs torch's kernel, and gives what the kernel path gives (output and buffers; float32
    statistics at this magnitude are a documented limit, tests/test_numerics.py)."""
    x = (_input((4, 3, 6, 6), torch.contiguous_format, F64) * 1e30).float().requires_grad_()
    m = _layer(3, F32)
    y = m(x)
    assert torch.isfinite(y).all() and not _took_composition(y)
    monkeypatch.setattr(composed, "MIN_ELEMENTS", 1 << 62)
    ref = _layer(3, F32)
    assert torch.equal(y, ref(x))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(m, name), getattr(ref, name)), name


@pytest.mark.parametrize("ratio", [1e2, 1e4])
def test_large_offset_within_error_model(path, ratio):
    """Two-pass moments: output error <= 32·u·(1 + κ), κ = (max|x − μ| + |μ|)/σ (test_numerics'
    model); the input gradient's error <= 32·u·κ of its largest entry."""
    x = (ratio * 0.5 + 0.5 * _input((8, 4, 8, 8), torch.contiguous_format, F64)).float()
    x = x.requires_grad_()
    m = normlab.BatchNorm(4, affine=False)
    y = m(x)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    (dx,) = torch.autograd.grad(y, x, g)
    xr = x.detach().double().requires_grad_()
    yr = batch_norm_ref(xr, training=True)
    (dxr,) = torch.autograd.grad(yr, xr, g.double())
    xc = xr.detach().transpose(0, 1).reshape(4, -1)
    mu, sigma = xc.mean(1, keepdim=True), xc.std(1, correction=0, keepdim=True)
    kappa = float((((xc - mu).abs().amax(1, keepdim=True) + mu.abs()) / sigma).max())
    u = 2.0**-24
    assert float((y.detach().double() - yr.detach()).abs().max()) <= 32 * u * (1 + kappa)
    scale = float(dxr.detach().abs().max())
    assert float((dx.double() - dxr.detach()).abs().max()) <= 32 * u * kappa * scale


@pytest.mark.parametrize(
    ("shape", "fmt", "expected"),
    [
        ((8, 64, 32, 32), torch.contiguous_format, True),  # 2^19 elements, |S| = 1024
        ((8, 64, 32, 32), torch.channels_last, False),  # torch's channels_last kernel is faster
        ((4, 64, 32, 32), torch.contiguous_format, False),  # 2^18: below the threshold
        ((8192, 64), torch.contiguous_format, False),  # |S| = 1 < MIN_POSITIONS
    ],
    ids=["large", "channels_last", "small", "flat"],
)
def test_dispatch_by_size(shape, fmt, expected):
    x = torch.randn(shape).contiguous(memory_format=fmt) if len(shape) == 4 else torch.randn(shape)
    y = normlab.BatchNorm(shape[1])(x.requires_grad_())
    assert _took_composition(y) == expected
