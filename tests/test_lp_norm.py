"""LpNorm's own tests: the paper's claims (Gaussian L1 output std sqrt(π/2), p = 2 equals
GroupNorm / LayerNorm), p = ∞, and the errors for p <= 0 and bad sets."""

from __future__ import annotations

import math

import pytest
import torch

import normlab
import oracles_streaming as ref
from catalogue import close, make_input
from normlab.errors import ConfigError

F64 = torch.float64


def test_gaussian_l1_output_std_is_sqrt_pi_over_2() -> None:
    """E|x − μ| = σ·sqrt(2/π) for Gaussian x: the L1-normalized output has std sqrt(π/2)."""
    x = torch.randn(2, 4, 256, 256, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = normlab.LpNorm(4, p=1, affine=False, dtype=F64)(x)
    assert abs(y.std().item() - math.sqrt(math.pi / 2)) < 2e-3


@pytest.mark.parametrize(("over", "twin"), [("layer", 1), ("instance", 6), ("group", 3)])
def test_p2_is_group_norm(over: str, twin: int) -> None:
    x = make_input((3, 6, 4, 5), F64, seed=1)
    m = normlab.LpNorm(6, p=2, over=over, num_groups=3, dtype=F64)
    gn = torch.nn.GroupNorm(twin, 6, dtype=F64)
    close(m(x), gn(x), 1e-12)


def test_p2_over_position_is_layer_norm_on_channels_last() -> None:
    x = make_input((3, 5, 6), F64, seed=2)  # (N, *S, C)
    m = normlab.LpNorm(6, p=2, over="position", channel_dim=-1, dtype=F64)
    close(m(x), torch.nn.LayerNorm(6, dtype=F64)(x), 1e-12)


def test_p_inf_divides_by_the_largest_deviation() -> None:
    x = torch.tensor([[1.0, 3.0, 5.0, 11.0]], dtype=F64)  # μ = 5, max |x − μ| = 6
    y = normlab.functional.lp_norm(x, p=math.inf, eps=1e-12)
    close(y, (x - 5) / 6, 1e-12)


@pytest.mark.parametrize("p", [1, 2, 3.5, math.inf])
def test_matches_oracle_uncentered_grouped(p: float) -> None:
    x = make_input((2, 6, 3, 2), F64, seed=3)
    m = normlab.LpNorm(6, p=p, over="group", num_groups=2, center=False, dtype=F64)
    torch.nn.init.normal_(m.weight)
    expected = ref.lp_norm_ref(
        x, m.weight, m.bias, p=p, reduce=("channel", "spatial"), groups=2, center=False, eps=m.eps
    )
    close(m(x), expected, 1e-10)


@pytest.mark.parametrize("p", [0, -1, 0.0, math.nan, "1", True])
def test_bad_p_is_refused(p: object) -> None:
    with pytest.raises(ConfigError, match=r"p must be a positive number or math.inf; got"):
        normlab.LpNorm(4, p=p)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"p must be a positive"):
        normlab.functional.lp_norm(torch.ones(2, 4), p=p)  # type: ignore[arg-type]


def test_a_set_over_the_batch_is_refused_with_the_streaming_fix() -> None:
    with pytest.raises(ConfigError, match=r"over must be one of .* StreamingNorm"):
        normlab.LpNorm(4, over=normlab.core.axes.BATCH)
    with pytest.raises(ConfigError, match=r"over='group' needs num_groups"):
        normlab.LpNorm(4, over="group")
    with pytest.raises(ConfigError, match="over must be one of"):
        normlab.LpNorm(4, over="batch")
