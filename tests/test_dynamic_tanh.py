"""Dynamic Tanh: the paper's formula, the learned α, and the drop-in replacement of LayerNorm
by ``convert(model, "dyt")``; the contract battery runs its catalogue cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normlab
from normlab.errors import ConfigError, InputError
from normlab.norms import _chunked
from normlab.norms.dynamic_tanh import DynamicTanh, dynamic_tanh
from normlab.surgery import convert_with_report
from oracles_dynamic_tanh import dyt_ref

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_under_its_name_and_alias() -> None:
    assert isinstance(normlab.create("dyt", 8), DynamicTanh)
    assert normlab.registry.lookup("dynamic_tanh").cls is DynamicTanh


def test_init_and_the_papers_formula() -> None:
    m = DynamicTanh(3)
    assert m.alpha.shape == (1,) and m.alpha.item() == 0.5
    assert torch.equal(m.weight, torch.ones(3)) and torch.equal(m.bias, torch.zeros(3))
    assert DynamicTanh(3, alpha_init=0.2).alpha.item() == pytest.approx(0.2)
    x = torch.randn(4, 3, 5, generator=_gen(), dtype=F64) * 3
    with torch.no_grad():
        m.double().weight.copy_(torch.tensor([0.5, -2.0, 1.5]))
        m.bias.copy_(torch.tensor([0.1, 0.0, -3.0]))
    expected = torch.tanh(0.5 * x) * m.weight.view(1, 3, 1) + m.bias.view(1, 3, 1)
    torch.testing.assert_close(m(x), expected, rtol=1e-15, atol=1e-15)
    # scalar check against math.tanh: no library tanh involved
    m = DynamicTanh(1, alpha_init=0.7, dtype=F64)
    y = m(torch.tensor([[1.3]], dtype=F64))
    assert y.item() == pytest.approx(math.tanh(0.7 * 1.3), rel=1e-15)


def test_large_inputs_saturate_without_overflow() -> None:
    x = torch.tensor([[-1e30, -80.0, 0.0, 80.0, 1e30]])
    y = DynamicTanh(5, channel_dim=1)(x.view(1, 5)).detach()
    torch.testing.assert_close(y, torch.tensor([[-1.0, -1.0, 0.0, 1.0, 1.0]]))


def test_alpha_is_learned() -> None:
    """α receives the oracle's gradient and a step moves it."""
    m = DynamicTanh(4).double()
    x = torch.randn(3, 4, 6, generator=_gen(1), dtype=F64)
    target = torch.tanh(2.0 * x)  # reachable with α = 2
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    loss = (m(x) - target).square().mean()
    loss.backward()
    alpha = m.alpha.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(
        (dyt_ref(x, alpha, m.weight, m.bias) - target).square().mean(), alpha
    )
    torch.testing.assert_close(m.alpha.grad, want, rtol=1e-12, atol=1e-15)
    before = m.alpha.item()
    opt.step()
    assert m.alpha.item() > before  # towards 2
    for _ in range(1000):
        opt.zero_grad()
        (m(x) - target).square().mean().backward()
        opt.step()
    assert m.alpha.item() == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("elements", [_chunked.CHUNK_ELEMENTS, 40], ids=["one", "chunks"])
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
def test_gradients_match_the_oracle_in_one_chunk_and_many(
    monkeypatch: pytest.MonkeyPatch, elements: int, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(_chunked, "CHUNK_ELEMENTS", elements)
    g = _gen(2)
    x = torch.randn(5, 3, 4, 2, generator=g, dtype=F64) * 2
    params = [
        torch.tensor([0.8], dtype=F64),
        torch.rand(3, generator=g, dtype=F64) + 0.5,
        torch.randn(3, generator=g, dtype=F64),
    ]
    dy = torch.randn(x.shape, generator=g, dtype=F64)
    leaves = [t.to(dtype).requires_grad_() for t in (x, *params)]
    y = dynamic_tanh(*leaves)
    got = torch.autograd.grad(y, leaves, dy.to(dtype))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    expected = dyt_ref(*ref_leaves)
    want = torch.autograd.grad(expected, ref_leaves, dy.to(dtype).double())
    tol = {F64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 0.05}[dtype]
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * max(1.0, b.abs().max()))


class _Block(nn.Module):
    """A pre-norm Transformer block on (N, L, D) tokens: LN → attention, LN → MLP, final LN."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head_norm(x)


def test_convert_layer_norms_of_a_transformer_block() -> None:
    torch.manual_seed(0)
    block = _Block().double()
    with torch.no_grad():
        for ln in (block.norm1, block.norm2, block.head_norm):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_()
    new, report = convert_with_report(block, "dyt")
    assert [r.path for r in report] == ["norm1", "norm2", "head_norm"]
    for r in report:
        old, layer = block.get_submodule(r.path), new.get_submodule(r.path)
        assert type(layer) is DynamicTanh and layer.channel_dim == -1
        assert {"weight", "bias", "channel_dim"} <= set(r.carried)
        assert torch.equal(layer.weight, old.weight) and torch.equal(layer.bias, old.bias)
        assert layer.alpha.item() == 0.5
    assert not any(isinstance(m, nn.LayerNorm) for m in new.modules())
    x = torch.randn(3, 5, 16, generator=_gen(3), dtype=F64)

    def dyt(ln: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:  # the paper's formula
        return ln.weight * torch.tanh(0.5 * t) + ln.bias

    h = dyt(block.norm1, x)
    expected = x + block.attn(h, h, h, need_weights=False)[0]
    expected = dyt(block.head_norm, expected + block.mlp(dyt(block.norm2, expected)))
    torch.testing.assert_close(new(x), expected, rtol=1e-12, atol=1e-12)
    new(x).square().mean().backward()
    assert all(new.get_submodule(p).alpha.grad is not None for p in ("norm1", "norm2"))
    assert normlab.convert(block, "dyt", alpha_init=0.2).norm1.alpha.item() == pytest.approx(0.2)


def test_bad_arguments_name_the_argument_value_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"alpha_init must be a finite float; got nan"):
        DynamicTanh(4, alpha_init=float("nan"))
    x = torch.randn(2, 4, 3)
    with pytest.raises(InputError, match=r"alpha.*one element; got \(4,\)"):
        dynamic_tanh(x, torch.ones(4))
    with pytest.raises(InputError, match=r"bias.*\(3,\)"):
        dynamic_tanh(x, torch.ones(1), torch.ones(4), torch.zeros(3))
    with pytest.raises(InputError, match="channel_dim=-1"):
        DynamicTanh(4)(torch.randn(2, 3, 4))
