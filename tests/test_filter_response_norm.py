"""Filter Response Norm + TLU: the paper's testable claims (METHODS.md §22c) and what only it has
(the learned ε, H·W = 1, the TLU's threshold); the contract battery runs its catalogue cases."""

from __future__ import annotations

import pytest
import torch

import normlab
from normlab.errors import ConfigError, InputError
from normlab.norms import _chunked
from normlab.norms.filter_response_norm import FilterResponseNorm, filter_response_norm
from oracles_filter_response_norm import frn_ref

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_under_its_name_and_alias() -> None:
    assert isinstance(normlab.create("frn", 8), FilterResponseNorm)
    assert normlab.registry.lookup("filter_response_norm").cls is FilterResponseNorm


def test_positive_rescaling_per_sample_and_channel_leaves_x_hat_unchanged() -> None:
    """Claim 1: x → a[n, c]·x (a > 0) leaves x̂ unchanged, exactly up to ε."""
    x = torch.randn(3, 5, 4, 6, generator=_gen(), dtype=F64)
    a = torch.rand(3, 5, 1, 1, generator=_gen(1), dtype=F64) * 100 + 0.01
    m = FilterResponseNorm(5, tlu=False, eps=1e-300).double()
    torch.testing.assert_close(m(a * x), m(x), rtol=1e-13, atol=1e-13)
    # centered norms would also absorb a shift; FRN does not (no mean subtracted)
    assert not torch.allclose(m(x + 1.0), m(x), atol=1e-3)


def test_tlu_at_init_is_relu_of_x_hat() -> None:
    """Claim 3: τ = 0, γ = 1, β = 0 at init, so z = ReLU(x̂)."""
    m = FilterResponseNorm(4).double()
    assert torch.equal(m.tau, torch.zeros(4, dtype=F64))
    x = torch.randn(2, 4, 3, 5, generator=_gen(), dtype=F64)
    x_hat = FilterResponseNorm(4, tlu=False).double()(x)
    torch.testing.assert_close(m(x), torch.relu(x_hat), rtol=0, atol=0)
    nu2 = x.square().mean((2, 3), keepdim=True)
    torch.testing.assert_close(x_hat, x / (nu2 + 1e-6).sqrt(), rtol=1e-14, atol=1e-14)


def test_tau_thresholds_and_takes_the_gradient_below_it() -> None:
    m = FilterResponseNorm(2, tlu=True).double()
    with torch.no_grad():
        m.tau.copy_(torch.tensor([-0.5, 0.25]))
    x = torch.randn(4, 2, 7, generator=_gen(2), dtype=F64)
    y = m(x)
    assert (y[:, 0] >= -0.5).all() and (y[:, 1] >= 0.25).all()
    y.sum().backward()
    clamped = (y == m.tau.view(1, 2, 1)).sum((0, 2)).to(F64)
    torch.testing.assert_close(m.tau.grad, clamped)  # ∂τ = Σ dy over the clamped places


def test_batch_of_one_and_outputs_independent_of_the_batch() -> None:
    """Claim 2: each sample's output depends on that sample only (any batch size, also 1)."""
    m = FilterResponseNorm(3).double()
    x = torch.randn(5, 3, 4, 4, generator=_gen(3), dtype=F64)
    whole = m(x)
    for i in range(5):
        torch.testing.assert_close(m(x[i : i + 1]), whole[i : i + 1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 1, 1)], ids=["fc", "1x1"])
def test_spatial_extent_one_with_learned_eps(shape: tuple[int, ...]) -> None:
    """H·W = 1: ν² = x², so x̂ = x/sqrt(x² + ε) ≈ sign(x) for a fixed tiny ε; the learned ε
    = eps + |ε_l| (ε_l starts at eps) is what keeps the magnitude, and it receives a gradient."""
    x = torch.randn(shape, generator=_gen(4), dtype=F64)
    fixed = FilterResponseNorm(4, tlu=False).double()
    torch.testing.assert_close(fixed(x), x / (x * x + 1e-6).sqrt())
    m = FilterResponseNorm(4, tlu=False, learn_eps=True).double()
    assert m.eps_l.shape == (1,) and m.eps_l.item() == pytest.approx(1e-6)
    with torch.no_grad():
        m.eps_l.fill_(-0.7)  # |ε_l|: the sign does not matter
    y = m(x)
    torch.testing.assert_close(y, x / (x * x + 0.7 + 1e-6).sqrt())
    dy = torch.randn(shape, generator=_gen(5), dtype=F64)
    (y * dy).sum().backward()
    eps_l = m.eps_l.detach().clone().requires_grad_()
    expected = frn_ref(x, m.weight, m.bias, None, eps_l, eps=1e-6)
    (want,) = torch.autograd.grad((expected * dy).sum(), eps_l)
    torch.testing.assert_close(m.eps_l.grad, want, rtol=1e-12, atol=1e-14)
    assert m.eps_l.grad.abs().item() > 1e-3


@pytest.mark.parametrize("elements", [_chunked.CHUNK_ELEMENTS, 40], ids=["one", "chunks"])
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
def test_gradients_match_the_oracle_in_one_chunk_and_many(
    monkeypatch: pytest.MonkeyPatch, elements: int, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(_chunked, "CHUNK_ELEMENTS", elements)
    g = _gen(6)
    x = torch.randn(5, 3, 4, 2, generator=g, dtype=F64)
    params = [
        torch.rand(3, generator=g, dtype=F64) + 0.5,
        torch.randn(3, generator=g, dtype=F64) * 0.3,
        torch.randn(3, generator=g, dtype=F64) * 0.3,
        torch.tensor([0.05], dtype=F64),
    ]
    dy = torch.randn(x.shape, generator=g, dtype=F64)
    leaves = [t.to(dtype).requires_grad_() for t in (x, *params)]
    y = filter_response_norm(*leaves, eps=1e-6)
    got = torch.autograd.grad(y, leaves, dy.to(dtype))
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    expected = frn_ref(*ref_leaves, eps=1e-6)
    want = torch.autograd.grad(expected, ref_leaves, dy.to(dtype).double())
    tol = {F64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 0.1}[dtype]
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * max(1.0, b.abs().max()))


def test_bad_arguments_name_the_argument_value_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"eps must be a positive finite float; got 0\.0"):
        FilterResponseNorm(4, eps=0.0)
    x = torch.randn(2, 4, 3)
    with pytest.raises(InputError, match=r"eps_l.*one element; got \(4,\).*torch\.zeros\(1\)"):
        filter_response_norm(x, eps_l=torch.zeros(4))
    with pytest.raises(InputError, match=r"tau.*\(3,\)"):
        filter_response_norm(x, torch.ones(4), tau=torch.zeros(3))
    with pytest.raises(InputError, match="channel_dim=-1"):
        FilterResponseNorm(4)(torch.randn(2, 3, 4))
