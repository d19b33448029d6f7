"""The channels-innermost paths (channels_last memory, ``channel_dim=-1``) of FilterResponseNorm,
DynamicTanh and RMSNorm: they take the path, agree with the float64 oracles in value and
gradients (over several chunks where the path is chunked), and save at most 1.5x the input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import oracles
import oracles_dynamic_tanh
import oracles_filter_response_norm
from catalogue import saved_storages
from normlab.norms import _dyt_kernels, _frn_last_dim, _rms_last_dim
from normlab.norms.dynamic_tanh import DynamicTanh
from normlab.norms.filter_response_norm import FilterResponseNorm
from normlab.norms.rms_norm import RMSNorm


def _frn(c: int, channel_dim: int) -> tuple[nn.Module, Callable[..., Tensor]]:
    m = FilterResponseNorm(c, channel_dim=channel_dim, learn_eps=True, dtype=torch.float64)

    def ref(x: Tensor) -> Tensor:
        return oracles_filter_response_norm.frn_ref(
            x, m.weight, m.bias, m.tau, m.eps_l, eps=m.eps, channel_dim=channel_dim)

    return m, ref


def _dyt(c: int, channel_dim: int) -> tuple[nn.Module, Callable[..., Tensor]]:
    m = DynamicTanh(c, channel_dim=channel_dim, dtype=torch.float64)

    def ref(x: Tensor) -> Tensor:
        return oracles_dynamic_tanh.dyt_ref(x, m.alpha, m.weight, m.bias,
                                            channel_dim=channel_dim)

    return m, ref


def _rms(c: int, channel_dim: int) -> tuple[nn.Module, Callable[..., Tensor]]:
    m = RMSNorm(c, channel_dim=channel_dim, eps=1e-3, dtype=torch.float64)

    def ref(x: Tensor) -> Tensor:
        return oracles.rms_norm_ref(x, m.weight, eps=1e-3, channel_dim=channel_dim)

    return m, ref


LAYERS: dict[str, tuple[Callable[..., Any], Any]] = {
    "frn": (_frn, _frn_last_dim),
    "dyt": (_dyt, _dyt_kernels),
    "rms": (_rms, _rms_last_dim),
}


def _input(layout: str, gen: torch.Generator) -> tuple[Tensor, int]:
    if layout == "channels_last":
        x = torch.randn(3, 5, 4, 6, generator=gen, dtype=torch.float64)
        return x.contiguous(memory_format=torch.channels_last), 1
    return torch.randn(3, 7, 5, generator=gen, dtype=torch.float64), -1


@pytest.mark.parametrize("layout", ["channels_last", "channel_dim_last"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_matches_the_float64_oracle(
    name: str, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, module = LAYERS[name]
    if hasattr(module, "CHUNK_ELEMENTS"):  # several chunks on this small input
        monkeypatch.setattr(module, "CHUNK_ELEMENTS", 40)
    gen = torch.Generator().manual_seed(7)
    x, channel_dim = _input(layout, gen)
    m, ref = make(x.shape[channel_dim], channel_dim)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) * 0.8 + 0.2)
        if getattr(m, "tau", None) is not None:
            m.tau.uniform_(-0.5, 0.5, generator=gen)
    xc = x.movedim(channel_dim, 1)
    params = list(m.parameters())
    assert module.applies(xc, *params) if name != "rms" else module.applies(x, params[0],
                                                                             channel_dim)
    x.requires_grad_()
    y = m(x)
    assert y.stride() == x.stride()
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(y, [x, *params], g)
    x64 = x.detach().clone().requires_grad_()
    expected_y = ref(x64)
    expected = torch.autograd.grad(expected_y, [x64, *params], g)
    torch.testing.assert_close(y, expected_y, rtol=1e-10, atol=1e-10)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_saves_at_most_1_5x_the_input_on_channels_last(name: str) -> None:
    make, _ = LAYERS[name]
    x = torch.randn(8, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    m, _ = make(16, 1)
    m = m.float()
    x.requires_grad_()
    used = sum(saved_storages(lambda: m(x)).values())
    assert used <= 1.5 * x.numel() * x.element_size(), f"saved {used / (4 * x.numel()):.2f}x"
