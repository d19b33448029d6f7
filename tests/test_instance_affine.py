"""The per-(sample, channel) kernels and the autograd Function shared by the mixed-statistics
methods, against float64 references computed with plain tensor operations."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import normlab
from catalogue import close, make_input, randomize_, saved_storages
from normlab.norms._instance_affine import (
    contiguous_channels_first,
    instance_affine,
    moments_grad,
    restore_layout,
)
from normlab.norms._per_instance import (
    SMALL_INPUT,
    channel_affine,
    instance_moments,
    instance_sums,
    normalize_instances,
)
from oracles_mixed_stats import full_size_ops

F64 = torch.float64
SHAPES = [(3, 4), (3, 4, 5), (2, 4, 3, 5), (2, 4, 2, 3, 2)]


def _moments_ref(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.to(F64).reshape(x.shape[0], x.shape[1], -1)
    mean = flat.sum(-1) / flat.shape[-1]
    return mean, ((flat - mean.unsqueeze(-1)) ** 2).sum(-1) / flat.shape[-1]


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(*t.shape, *([1] * (x.dim() - 2)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_instance_moments(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = make_input(shape, F64).to(dtype)
    x[0, 0] = 3.0  # a constant slice: variance exactly 0
    mean, var = instance_moments(x)
    ref_mean, ref_var = _moments_ref(x)
    tol = 1e-12 if dtype == F64 else 2e-6
    assert mean.dtype == (F64 if dtype == F64 else torch.float32)
    close(mean.to(F64), ref_mean, tol)
    close(var.to(F64), ref_var, tol)
    assert var[0, 0].item() == 0.0
    x_hat, mean2, var2, rstd = normalize_instances(x, 1e-3)
    assert torch.equal(mean2, mean)
    close(var2.to(F64) + 1e-3, ref_var + 1e-3, tol)
    close(rstd.to(F64), (ref_var + 1e-3).rsqrt(), tol)
    expected = (x.to(F64) - _bcast(ref_mean, x)) * _bcast((ref_var + 1e-3).rsqrt(), x)
    close(x_hat.to(F64), expected, 1e-12 if dtype == F64 else 1e-2 if x.itemsize == 2 else 2e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_channel_affine_and_sums(shape: tuple[int, ...]) -> None:
    x = make_input(shape, F64, seed=1)
    g = torch.Generator().manual_seed(2)
    scale = torch.randn(shape[:2], generator=g, dtype=F64)
    shift = torch.randn(shape[:2], generator=g, dtype=F64)
    close(channel_affine(x, scale, shift), x * _bcast(scale, x) + _bcast(shift, x), 1e-14)
    dy = make_input(shape, F64, seed=3)
    sum_dy, sum_dy_x = instance_sums(dy, x)
    dims = tuple(range(2, x.dim()))
    close(sum_dy, dy.sum(dims) if dims else dy, 1e-13)
    close(sum_dy_x, (dy * x).sum(dims) if dims else dy * x, 1e-13)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_slice", "per_channel"])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 8, 24, 24)], ids=["small", "large"])
def test_moments_grad_is_the_vjp_of_the_moments(
    shape: tuple[int, ...], dtype: torch.dtype, per_channel: bool
) -> None:
    """Both paths (one addcmul up to SMALL_INPUT elements, the batch-norm kernel above) equal
    autograd of ⟨g_μ, μ(x)⟩ + ⟨g_σ², σ²(x)⟩ through float64 var_mean."""
    assert (math.prod(shape) <= SMALL_INPUT) == (shape[0] == 2)  # one case on each side
    x = make_input(shape, F64, seed=6)
    n, c = shape[:2]
    g = torch.Generator().manual_seed(7)
    stats = (c,) if per_channel else (n, c)
    g_mean, g_var = (torch.randn(stats, generator=g, dtype=F64) for _ in range(2))
    dims = (0, 2, 3) if per_channel else (2, 3)
    leaf = x.clone().requires_grad_()
    var, mean = torch.var_mean(leaf, dim=dims, correction=0)
    (want,) = torch.autograd.grad((g_mean * mean).sum() + (g_var * var).sum(), leaf)
    count = x.numel() // mean.numel()
    got = moments_grad(
        x.to(dtype), mean.detach().to(dtype), g_mean.to(dtype), g_var.to(dtype), count
    )
    assert got.dtype == dtype and got.shape == x.shape
    close(got.to(F64), want, 1e-12 if dtype == F64 else 1e-5)


def _mix(mean: Tensor, var: Tensor, weight: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """A small coefficient function mixing instance and batch moments (Switchable-Norm-like)."""
    batch_mean = mean.mean(0, keepdim=True)
    batch_var = var.mean(0, keepdim=True) + ((mean - batch_mean) ** 2).mean(0, keepdim=True)
    mixed_mean = 0.3 * mean + 0.7 * batch_mean
    a = weight * torch.rsqrt(0.6 * var + 0.4 * batch_var + 1e-3)
    return a, shift - mixed_mean * a


def _mix_ref(x: Tensor, weight: Tensor, shift: Tensor) -> Tensor:
    dims = tuple(range(2, x.dim()))
    mean, var = _moments_ref(x)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    batch_mean = flat.mean((0, 2))
    batch_var = ((flat - batch_mean[None, :, None]) ** 2).mean((0, 2))
    mu = 0.3 * mean + 0.7 * batch_mean
    sigma2 = 0.6 * var + 0.4 * batch_var + 1e-3
    y = (x - _bcast(mu, x)) / _bcast(sigma2.sqrt(), x) * _bcast(weight.expand_as(mu), x)
    return y + _bcast(shift.expand_as(mu), x) if dims else y + shift


def _apply(x: Tensor, weight: Tensor, shift: Tensor) -> Tensor:
    return instance_affine(x, _mix, weight, shift, moments=instance_moments(x.detach()))


def _apply_in_place(x: Tensor, weight: Tensor, shift: Tensor) -> Tensor:
    """The fast path: y written into the x̂ that the moments kernel returned."""
    x_hat, mean, var, rstd = normalize_instances(x, 1e-3)
    return instance_affine(x, _mix, weight, shift, moments=(mean, var), normalized=(x_hat, rstd))


@pytest.mark.parametrize("run", [_apply, _apply_in_place], ids=["fresh", "in_place"])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=str)
def test_instance_affine_forward_and_gradients(
    shape: tuple[int, ...], run: Callable[..., Tensor]
) -> None:
    x = make_input(shape, F64, seed=4).requires_grad_()
    weight = torch.linspace(0.5, 2.0, shape[1], dtype=F64).requires_grad_()
    shift = torch.linspace(-1.0, 1.0, shape[1], dtype=F64).requires_grad_()
    y = run(x, weight, shift)
    expected = _mix_ref(x, weight, shift)
    close(y, expected, 1e-12)
    dy = make_input(shape, F64, seed=5)
    got = torch.autograd.grad(y, (x, weight, shift), dy)
    want = torch.autograd.grad(expected, (x, weight, shift), dy)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-11)
    assert torch.autograd.gradcheck(run, (x, weight, shift))
    assert torch.autograd.gradgradcheck(run, (x, weight, shift))


def _center(mean: Tensor, var: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Centering alone (no σ²): y = x − μ + β; A is one (C,) row for every sample."""
    return torch.ones(mean.shape[1], dtype=mean.dtype), shift - mean


def _scale(mean: Tensor, var: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Scaling alone (no μ): y = x / sqrt(σ² + 1) + β; B is one (C,) row for every sample."""
    return torch.rsqrt(var + 1.0), shift


@pytest.mark.parametrize("coefficients", [_center, _scale], ids=["mean_only", "var_only"])
def test_coefficients_that_read_one_moment_get_its_gradient(coefficients: Callable) -> None:
    """A coefficient function may leave μ or σ² unread (autograd finds no gradient for it) and
    return a (C,) row for A or B: the input gradient is the other moment's alone, against the
    float64 equations."""
    x = make_input((3, 4, 5), F64, seed=4).requires_grad_()
    shift = torch.linspace(-1.0, 1.0, 4, dtype=F64).requires_grad_()
    y = instance_affine(x, coefficients, shift, moments=instance_moments(x.detach()))
    mean = x.mean(2, keepdim=True)
    var = ((x - mean) ** 2).mean(2, keepdim=True)
    expected = x - mean if coefficients is _center else x / (var + 1.0).sqrt()
    expected = expected + shift[:, None]
    close(y, expected, 1e-12)
    dy = make_input((3, 4, 5), F64, seed=5)
    got = torch.autograd.grad(y, (x, shift), dy)
    want = torch.autograd.grad(expected, (x, shift), dy)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-11)


@pytest.mark.parametrize("run", [_apply, _apply_in_place], ids=["fresh", "in_place"])
def test_instance_affine_low_precision_matches_fp32(run: Callable[..., Tensor]) -> None:
    x32 = make_input((4, 6, 5, 5), torch.float32, seed=6)
    weight = torch.linspace(0.5, 2.0, 6)
    shift = torch.zeros(6)
    for dtype in (torch.float16, torch.bfloat16):
        x = x32.to(dtype).requires_grad_()
        y = run(x, weight, shift)
        assert y.dtype == dtype
        y.float().square().sum().backward()
        ref_x = x.detach().to(F64).requires_grad_()
        ref = _mix_ref(ref_x, weight.to(F64), shift.to(F64))
        ref.square().sum().backward()
        tol = 1e-2 if dtype == torch.float16 else 5e-2
        close(y.to(F64), ref, tol)
        close(x.grad.to(F64), ref_x.grad, 5 * tol)


def test_only_the_input_and_small_statistics_are_saved() -> None:
    x = make_input((8, 6, 16, 16), torch.float32, seed=7).requires_grad_()
    weight = torch.ones(6, requires_grad=True)
    storages = saved_storages(lambda: _apply(x, weight, torch.zeros(6)))
    assert x.untyped_storage().data_ptr() in storages
    assert sum(storages.values()) <= 1.05 * x.numel() * x.element_size()


@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layout_round_trip(channel_dim: int, layout: str) -> None:
    x = make_input((2, 3, 4, 5), F64, seed=8)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    source = x if channel_dim == 1 else x.movedim(1, -1)
    cf, kept = contiguous_channels_first(source, channel_dim)
    assert cf.is_contiguous() and torch.equal(cf, x)
    back = restore_layout(cf, kept, channel_dim)
    assert torch.equal(back, source)
    if channel_dim == 1:
        assert back.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize(
    "make",
    [lambda: normlab.SwitchableNorm(6), lambda: randomize_(normlab.BatchInstanceNorm(6))],
    ids=["switchable_norm", "batch_instance_norm"],
)
def test_methods_read_the_input_in_one_statistics_pass(make: Callable[[], nn.Module]) -> None:
    """Forward: one statistics pass (IN moments, x̂) and the in-place affine — never one
    reduction per statistic. Backward: one pass for the sums and two for dx."""
    m = make().train()
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    out: list[Tensor] = []
    forward = full_size_ops(lambda: out.append(m(x)), x.numel())
    assert forward == ["aten.native_group_norm.default",  # x̂, then y = x̂·a + b in place
                       "aten.mul_.Tensor", "aten.add_.Tensor"]
    g = torch.randn_like(x)
    backward = full_size_ops(
        lambda: torch.autograd.grad(out[0], [x, *m.parameters()], g), x.numel()
    )
    assert len(backward) <= 4, backward


# -- large input: one in-place BN-inference pass forward, chunked dx backward ----------------


@pytest.mark.parametrize("run", [_apply, _apply_in_place], ids=["fresh", "in_place"])
def test_instance_affine_large_input(run: Callable[..., Tensor]) -> None:
    """Above SMALL_INPUT (x̂·s + t in place; dx = x·P + Q by the BN-inference kernel, then
    + dy·A) against the float64 reference."""
    shape = (5, 4, 40, 48)  # 38400 elements > SMALL_INPUT
    assert math.prod(shape) > SMALL_INPUT
    x = make_input(shape, F64, seed=9).requires_grad_()
    weight = torch.linspace(0.5, 2.0, shape[1], dtype=F64).requires_grad_()
    shift = torch.linspace(-1.0, 1.0, shape[1], dtype=F64).requires_grad_()
    y = run(x, weight, shift)
    expected = _mix_ref(x, weight, shift)
    close(y, expected, 1e-12)
    dy = make_input(shape, F64, seed=10)
    got = torch.autograd.grad(y, (x, weight, shift), dy)
    want = torch.autograd.grad(expected, (x, weight, shift), dy)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-11)


def test_instance_affine_large_low_precision_matches_reference() -> None:
    x32 = make_input((4, 6, 32, 32), torch.float32, seed=11)  # 24576 elements > SMALL_INPUT
    weight, shift = torch.linspace(0.5, 2.0, 6), torch.linspace(-1.0, 1.0, 6)
    for dtype in (torch.float16, torch.bfloat16):
        x = x32.to(dtype).requires_grad_()
        y = _apply_in_place(x, weight, shift)
        assert y.dtype == dtype
        y.float().square().sum().backward()
        assert x.grad is not None and x.grad.dtype == dtype
        ref_x = x.detach().to(F64).requires_grad_()
        ref = _mix_ref(ref_x, weight.to(F64), shift.to(F64))
        ref.square().sum().backward()
        tol = 1e-2 if dtype == torch.float16 else 5e-2
        close(y.to(F64), ref, tol)
        close(x.grad.to(F64), ref_x.grad, 5 * tol)


def test_large_input_passes() -> None:
    """Large input: forward = the statistics kernel, then x̂·s + t in place; backward = one
    fused sums pass, x·P + Q (BN-inference kernel), dy·A (issue 14's pass plan plus one)."""
    m = normlab.SwitchableNorm(6).train()
    x = torch.randn(4, 6, 32, 32, requires_grad=True)
    out: list[Tensor] = []
    forward = full_size_ops(lambda: out.append(m(x)), x.numel())
    assert forward == ["aten.native_group_norm.default", "aten.mul_.Tensor", "aten.add_.Tensor"]
    g = torch.randn_like(x)
    backward = full_size_ops(
        lambda: torch.autograd.grad(out[0], [x, *m.parameters()], g), x.numel()
    )
    assert backward == ["aten.native_group_norm_backward.default",
                        "aten.native_batch_norm.default", "aten.addcmul_.default"]


def test_channels_last_backward_reads_a_contiguous_dy() -> None:
    """A channels_last output gets a channels_last dy back: the backward makes it contiguous
    once (for the sums) and every later full-size pass reads that copy, never the strided dy."""
    from torch.utils._python_dispatch import TorchDispatchMode

    m = normlab.SwitchableNorm(6).train()
    x = torch.randn(4, 6, 32, 32).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = m(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(y)
    assert dy.is_contiguous(memory_format=torch.channels_last)
    seen: list[tuple[str, bool]] = []

    class Strides(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            for t in args:
                if isinstance(t, Tensor) and t.numel() == x.numel():
                    seen.append((str(func), t.is_contiguous()))
            return func(*args, **(kwargs or {}))

    with Strides():
        torch.autograd.grad(y, [x, *m.parameters()], dy)
    copies = [name for name, _ in seen if name in ("aten.clone.default", "aten.copy_.default")]
    assert len(copies) == 1, seen
    passes = [(name, c) for name, c in seen if "view" not in name and name not in copies]
    assert passes and all(c for _, c in passes), passes
