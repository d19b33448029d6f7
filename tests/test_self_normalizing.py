"""Self-normalizing networks (Klambauer et al. 2017, METHODS.md §19): LeCun-normal init.

Oracles come from the paper's equations: SELU with its λ and α, the fixed point by numerical
integration against the standard normal density, alpha dropout's a and b in closed form, and
the LeCun law w ~ N(0, 1/fan_in) with fan_in counted by hand. Done-when: a 64-layer SELU MLP
(width 256, float32, fixed seeds) at init keeps every layer's activation mean within ±0.1 and
variance within 1 ± 0.2 on standard-normal input; the same network with He init does not.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

import normlab
from normlab import registry
from normlab.errors import ConfigError

LAMBDA = 1.0507009873554804934193349852946
ALPHA = 1.6732632423543772848170429916717
ALPHA_PRIME = -LAMBDA * ALPHA


def selu_ref(x: torch.Tensor) -> torch.Tensor:
    return LAMBDA * torch.where(x > 0, x, ALPHA * torch.expm1(x.clamp(max=0)))


def gaussian_moment(fn: object) -> float:
    """∫ fn(z) φ(z) dz by the trapezoid rule on [-12, 12] (tails below 1e-30), in float64."""
    z = torch.linspace(-12.0, 12.0, 2_400_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(fn(z) * density, z))  # type: ignore[operator]


# -- the fixed point and alpha dropout -------------------------------------------------------------


def test_selu_constants_give_the_fixed_point() -> None:
    mean = gaussian_moment(selu_ref)
    second = gaussian_moment(lambda z: selu_ref(z) ** 2)
    assert abs(mean) < 1e-8 and abs(second - 1.0) < 1e-8, (mean, second)
    # not a tautology: a slightly different α moves the mean off 0 by far more than that
    off = gaussian_moment(
        lambda z: LAMBDA * torch.where(z > 0, z, 1.67 * torch.expm1(z.clamp(max=0)))
    )
    assert abs(off) > 1e-4


def test_torch_selu_uses_the_paper_constants() -> None:
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(F.selu(x), selu_ref(x), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize(
    ("rate", "a_paper", "b_paper"), [(0.05, 0.95484, 0.08394), (0.1, 0.92128, 0.16197)]
)
def test_alpha_dropout_keeps_mean_zero_and_variance_one(
    rate: float, a_paper: float, b_paper: float
) -> None:
    q = 1.0 - rate
    a = (q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5
    b = -a * (1 - q) * ALPHA_PRIME
    assert a == pytest.approx(a_paper, abs=1e-5) and b == pytest.approx(b_paper, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    x = selu_ref(torch.randn(4_000_000, generator=g, dtype=torch.float64))
    torch.manual_seed(1)
    y = nn.AlphaDropout(rate).train()(x)
    dropped = torch.isclose(y, torch.full_like(y, a * ALPHA_PRIME + b), rtol=0, atol=1e-12)
    # every unit is either a·x + b (kept) or a·α' + b (dropped), at the dropout rate
    torch.testing.assert_close(y[~dropped], a * x[~dropped] + b, rtol=1e-12, atol=1e-12)
    assert float(dropped.double().mean()) == pytest.approx(rate, abs=2e-3)
    assert abs(float(y.mean())) < 5e-3 and abs(float(y.var()) - 1.0) < 5e-3
    assert torch.equal(nn.AlphaDropout(rate).eval()(x), x)


# -- LeCun-normal init -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fan_in"),
    [
        (lambda: nn.Linear(300, 200), 300),
        (lambda: nn.Conv2d(32, 64, 3), 32 * 3 * 3),
        (lambda: nn.Conv2d(32, 64, 3, groups=4), 8 * 3 * 3),
        (lambda: nn.Conv1d(16, 40, 5), 16 * 5),
        (lambda: nn.Conv3d(8, 16, (2, 3, 3)), 8 * 2 * 3 * 3),
        # torch's _calculate_fan_in_and_fan_out would say 4·3·3 (its fan-out)
        (lambda: nn.ConvTranspose2d(64, 4, 3), 64 * 3 * 3),
        (lambda: nn.ConvTranspose2d(64, 8, 3, groups=2), 32 * 3 * 3),
    ],
    ids=["linear", "conv2d", "conv2d_groups", "conv1d", "conv3d", "conv_t2d", "conv_t2d_groups"],
)
def test_lecun_normal_law(make: object, fan_in: int) -> None:
    layer = make()  # type: ignore[operator]
    assert normlab.selu_init_(layer, generator=torch.Generator().manual_seed(0)) is layer
    w = layer.weight.detach().double().flatten()
    n = w.numel()
    # the sample variance of n normals is within 5 standard errors (sqrt(2/n)) of 1/fan_in
    assert abs(float(w.var()) * fan_in - 1.0) < 5 * math.sqrt(2 / n), float(w.var()) * fan_in
    assert abs(float(w.mean())) * math.sqrt(fan_in * n) < 5
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_conv_transpose_output_variance_is_one() -> None:
    """At interior output positions a stride-1 ConvTranspose sums in·kh·kw terms: with that
    fan-in, standardized input gives variance 1 (torch's fan-in would give in/out = 16)."""
    layer = normlab.selu_init_(
        nn.ConvTranspose2d(64, 4, 3, bias=False), generator=torch.Generator().manual_seed(0)
    )
    x = torch.randn(16, 64, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = layer(x)[:, :, 2:-2, 2:-2]
    assert abs(float(y.var()) - 1.0) < 0.1


def _selu_mlp(depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.SELU()]
    return nn.Sequential(*layers)


def _activation_moments(model: nn.Sequential, width: int) -> list[tuple[float, float]]:
    x = torch.randn(1024, width, generator=torch.Generator().manual_seed(1))
    moments = []
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            if isinstance(layer, nn.SELU):
                moments.append((float(x.mean()), float(x.var())))
    return moments


def _self_normalized(moments: list[tuple[float, float]]) -> bool:
    return all(abs(m) <= 0.1 and abs(v - 1.0) <= 0.2 for m, v in moments)


@pytest.mark.parametrize("width", [256, 512])
def test_deep_selu_mlp_stays_normalized(width: int) -> None:
    model = normlab.selu_init_(_selu_mlp(64, width), generator=torch.Generator().manual_seed(0))
    moments = _activation_moments(model, width)
    assert len(moments) == 64
    assert _self_normalized(moments), [(i, m, v) for i, (m, v) in enumerate(moments)]


def test_he_init_drifts() -> None:
    """METHODS §19 pitfall: He init (variance 2/fan_in) breaks the fixed point."""
    model = _selu_mlp(64, 256)
    g = torch.Generator().manual_seed(0)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=g)
            nn.init.zeros_(layer.bias)
    moments = _activation_moments(model, 256)
    assert not _self_normalized(moments)
    assert moments[-1][1] > 2.0  # the variance grows instead of returning to 1


def test_reproducible_with_a_generator() -> None:
    a = normlab.selu_init_(_selu_mlp(2, 8), generator=torch.Generator().manual_seed(3))
    b = normlab.selu_init_(_selu_mlp(2, 8), generator=torch.Generator().manual_seed(3))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_layers_without_bias_and_other_modules_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Embedding(5, 3))
    bn_state = {k: v.clone() for k, v in model[1].state_dict().items()}
    embedding = model[2].weight.detach().clone()
    normlab.selu_init_(model)
    assert model[0].bias is None
    assert all(torch.equal(v, bn_state[k]) for k, v in model[1].state_dict().items())
    assert torch.equal(model[2].weight, embedding)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [torch.zeros(3, 3), None, [nn.Linear(2, 2)]])
def test_not_a_module(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"selu_init_: module must be a torch\.nn\.Module"):
        normlab.selu_init_(bad)  # type: ignore[arg-type]


def test_parametrized_weight_is_refused_and_nothing_changes() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    parametrizations.spectral_norm(model[1])
    first = model[0].weight.detach().clone()
    with pytest.raises(ConfigError, match=r"layer '1' .* parametrized weight \(_SpectralNorm\)"):
        normlab.selu_init_(model)
    assert torch.equal(model[0].weight, first)


def test_lazy_layer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"lazy.*forward pass first"):
        normlab.selu_init_(nn.Sequential(nn.LazyConv2d(4, 3)))


def test_nothing_to_initialize() -> None:
    with pytest.raises(ConfigError, match=r"found no nn\.Linear"):
        normlab.selu_init_(nn.Sequential(nn.SELU(), nn.AlphaDropout(0.1)))


def test_registry_entry() -> None:
    entry = registry.lookup_weight("self_normalizing")
    assert entry.name == "selu" and entry.apply is None
    assert entry.exports == (normlab.selu_init_,)
    assert "arXiv:1706.02515" in entry.paper
