"""Divisive Normalization's own tests: the paper's special cases, its field geometry, the L1
regularizer, learned σ and the errors (a field larger than the input)."""

from __future__ import annotations

import pytest
import torch

import normlab
import normlab.functional as NF
from catalogue import close, make_input
from normlab.errors import ConfigError, InputError
from oracles_divisive_norm import divisive_norm_ref, l1_penalty_ref

F64 = torch.float64


def test_whole_layer_fields_are_layer_norm() -> None:
    """Claim 1: A = B = all units of the sample reproduces LN (σ² = ε)."""
    x = make_input((3, 6, 5, 4), F64, seed=1)
    y = NF.divisive_norm(x, sum_window=None, sup_window=None, eps=1e-5)
    close(y, NF.layer_norm(x, eps=1e-5), 1e-12)


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_cnn_reference_fields_match_oracle(channel_dim: int) -> None:
    """All channels × a 5×5 window, then 3×3 (cifar_exp_config), and σ = 0.5."""
    x = make_input((2, 4, 7, 6), F64, seed=2)
    for sum_w, sup_w in ((5, 5), (3, 3), ((3, 5), (1, 3))):
        expected = divisive_norm_ref(x, sum_window=sum_w, sup_window=sup_w, sigma2=0.25)
        xin = x.movedim(1, -1) if channel_dim == -1 else x
        layer = normlab.DivisiveNorm(
            4, sum_window=sum_w, sup_window=sup_w, channel_dim=channel_dim, dtype=F64
        )
        y = layer(xin)
        close(y.movedim(-1, 1) if channel_dim == -1 else y, expected, 1e-10)


def test_border_fields_are_clipped_and_averaged_over_existing_units() -> None:
    """A corner unit's 3-wide field holds 2 positions per dim (the paper's 1/|A_j|), not the
    reference code's zero padding: a constant input centers to exactly 0."""
    x = torch.full((1, 2, 4, 4), 3.0, dtype=F64)
    assert NF.divisive_norm(x).abs().max() == 0
    x = torch.zeros(1, 1, 1, 5, dtype=F64)
    x[..., 0] = 1.0
    v0 = 1.0 - 0.5  # A of position 0: positions {0, 1}
    v1 = 0.0 - 1.0 / 3.0  # A of position 1: positions {0, 1, 2}
    energy0 = (v0**2 + v1**2) / 2  # B of position 0: positions {0, 1}
    y = NF.divisive_norm(x, sum_window=(1, 3), sup_window=(1, 3), eps=0.25)
    close(y[..., 0], torch.tensor([[[v0 / (energy0 + 0.25) ** 0.5]]], dtype=F64), 1e-14)


def test_l1_penalty_matches_oracle_and_layer() -> None:
    x = make_input((2, 6, 5, 5), F64, seed=3)
    for kw in ({}, {"sum_window": 5, "sum_channels": 3}, {"sum_window": None}):
        expected = l1_penalty_ref(x, **kw)
        close(normlab.divisive_l1_penalty(x, **kw), expected, 1e-12)
        close(normlab.DivisiveNorm(6, **kw).l1_penalty(x), expected, 1e-12)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: normlab.divisive_l1_penalty(t, sum_channels=3),
        (x[:, :, :3, :3].detach().clone().requires_grad_(),),
    )


def test_learned_sigma_gets_a_gradient_and_starts_at_sqrt_eps() -> None:
    layer = normlab.DivisiveNorm(6, learn_sigma=True, eps=0.25, dtype=F64)
    assert layer.sigma is not None and layer.sigma.item() == 0.5
    x = make_input((2, 6, 4, 4), F64, seed=4)
    layer(x).square().sum().backward()
    assert layer.sigma.grad is not None and layer.sigma.grad.abs() > 0
    sigma = torch.tensor(0.7, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: NF.divisive_norm(x[:, :, :3, :3], eps=s.square()), (sigma,)
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"sum_window": None, "sup_window": 3},
        {"sum_window": 3, "sup_window": None},
        {"sum_window": (1, 3), "sup_window": (3, 1), "center": False},
        {"sum_window": (1, 1), "sup_window": 1},
        {"channel_dim": -1},
    ],
)
def test_all_channel_fields_gradcheck(kw: dict[str, object]) -> None:
    """The all-channel Function's analytic backward, for mixed and degenerate windows."""
    x = make_input((2, 6, 5, 4), F64, seed=6)
    if kw.get("channel_dim") == -1:
        x = x.movedim(1, -1).contiguous()
    layer = normlab.DivisiveNorm(6, dtype=F64, **kw)  # type: ignore[arg-type]
    assert torch.autograd.gradcheck(layer, (x.requires_grad_(),))
    for shape in ((3, 6, 7), (2, 6, 3, 4, 3), (2, 3, 8, 9)):  # 72 positions: per-sample
        x = make_input(shape, F64, seed=7).requires_grad_()  # batch-norm kernels
        assert torch.autograd.gradcheck(normlab.DivisiveNorm(6 if shape[1] == 6 else 3,
                                                             dtype=F64), (x,))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_all_channel_fields_on_a_large_grid_match_oracle(dtype: torch.dtype) -> None:
    """Grids of >= 64 positions take per-sample batch-norm statistics; an offset mean."""
    x = make_input((3, 5, 9, 11), F64, seed=8) * 2 + 3
    for kw in ({}, {"sum_window": 5, "sup_window": (3, 1)}, {"center": False}):
        y = normlab.DivisiveNorm(5, dtype=dtype, **kw)(x.to(dtype))  # type: ignore[arg-type]
        expected = divisive_norm_ref(x, **kw)  # type: ignore[arg-type]
        close(y.double(), expected, 1e-12 if dtype == F64 else 1e-5)


def test_a_field_larger_than_the_input_is_a_clear_error() -> None:
    x = make_input((2, 6, 4, 2), torch.float32, seed=5)
    with pytest.raises(
        InputError,
        match=r"sum_window=3 is a divisive field larger than the "
        r"input: size 3 along spatial dim 1 of extent 2",
    ):
        normlab.DivisiveNorm(6)(x)
    with pytest.raises(InputError, match="sup_window=5 is a divisive field larger"):
        NF.divisive_norm(x, sum_window=1, sup_window=5)
    with pytest.raises(
        ConfigError,
        match=r"sum_channels=7 is a divisive field larger than "
        r"the input's 6 channels",
    ):
        normlab.DivisiveNorm(6, sum_channels=7)
    with pytest.raises(ConfigError, match="sup_channels=9 is a divisive field larger"):
        NF.divisive_norm(x, sup_channels=9)


def test_other_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"sum_window must be an odd positive int .* got 4"):
        normlab.DivisiveNorm(6, sum_window=4)
    with pytest.raises(ConfigError, match=r"sup_window must be .* got \(3, 0\)"):
        normlab.DivisiveNorm(6, sup_window=(3, 0))
    with pytest.raises(ConfigError, match="eps must be a positive finite float"):
        normlab.DivisiveNorm(6, eps=0.0)
    with pytest.raises(
        InputError,
        match=r"sum_window=\(3, 3\) gives 2 spatial sizes for "
        r"input with 1 spatial dims",
    ):
        NF.divisive_norm(make_input((2, 6, 5), F64), sum_window=(3, 3))
