"""RMSNorm's GEMV path on contiguous (N, C, *S) input (normlab.norms._rms_channels_first):
values and first- and second-order gradients against the float64 loop oracle, which inputs
take the path, and what it saves for backward."""

from __future__ import annotations

import pytest
import torch

import oracles
from normlab.norms import _chunked as chunked
from normlab.norms import _rms_channels_first as channels_first
from normlab.norms.rms_norm import RMSNorm, rms_norm

SHAPES = [(4, 6, 5, 3), (3, 7), (2, 5, 9), (1, 1, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_gradients_match_the_float64_oracle(shape: tuple[int, ...], affine: bool):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 3 + 0.5).requires_grad_()
    w = (torch.randn(shape[1], generator=gen) + 1).requires_grad_() if affine else None
    g = torch.randn(shape, generator=gen)
    assert channels_first.applies(x, 1)
    y = rms_norm(x, w, eps=1e-3)
    wanted = [x] if w is None else [x, w]
    got = torch.autograd.grad(y, wanted, g)
    x64 = x.detach().double().requires_grad_()
    w64 = None if w is None else w.detach().double().requires_grad_()
    y64 = oracles.rms_norm_ref(x64, w64, eps=1e-3)
    want = torch.autograd.grad(y64, [x64] if w64 is None else [x64, w64], g.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("affine", [True, False])
def test_double_backward(affine: bool):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_() if affine else None
    inputs = (x,) if w is None else (x, w)

    def f(*t: torch.Tensor) -> torch.Tensor:
        return rms_norm(t[0], None if w is None else t[1], eps=1e-2)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_which_inputs_take_the_path():
    x = torch.randn(2, 4, 3, 3)
    assert channels_first.applies(x, 1)
    assert not channels_first.applies(x.to(memory_format=torch.channels_last), 1)
    assert not channels_first.applies(x.half(), 1)
    assert not channels_first.applies(x, -1)
    assert not channels_first.applies(x.transpose(2, 3), 1)


def test_other_layouts_agree_with_the_path():
    x = torch.randn(2, 4, 3, 5)
    m = RMSNorm(4)
    with torch.no_grad():
        m.weight.add_(torch.randn(4))
    want = m(x)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), want)
    torch.testing.assert_close(m(x.transpose(2, 3)).transpose(2, 3), want)


def test_saves_the_input_and_one_statistic_per_position():
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    m = RMSNorm(8)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x)
    assert sum(seen.values()) <= x.numel() * 4 * (1 + 1 / 8) + m.weight.numel() * 4


@pytest.mark.parametrize("affine", [True, False])
def test_several_chunks_match_one(monkeypatch: pytest.MonkeyPatch, affine: bool):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_() if affine else None
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    wanted = [x] if w is None else [x, w]
    y64 = oracles.rms_norm_ref(x, w, eps=1e-3)
    want = torch.autograd.grad(y64, wanted, g)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 2 * 4 * 9)  # chunks of 2, 2 and 1 samples
    y = rms_norm(x, w, eps=1e-3)
    torch.testing.assert_close(y, y64)
    for a, b in zip(torch.autograd.grad(y, wanted, g), want, strict=True):
        torch.testing.assert_close(a, b)
    if w is not None:  # ∂γ alone (∂x not wanted) takes the scratch buffer
        (gw,) = torch.autograd.grad(rms_norm(x.detach(), w, eps=1e-3), [w], g)
        torch.testing.assert_close(gw, want[1])
