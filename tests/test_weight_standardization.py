"""Weight Standardization (Qiao et al. 2019, arXiv:1903.10520): properties, conventions, the
zero-variance policy and bad input. The float64 oracle and the contract battery run from
tests/weight_cases_weight_standardization.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab
import weight_catalogue  # noqa: F401  (first: it imports the cases module; the reverse is circular)
from normlab import registry
from normlab.errors import ConfigError
from normlab.functional import standardized_weight

# isort: split
from weight_cases_weight_standardization import standardized_oracle


def _per_unit(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return weight.movedim(dim, 0).flatten(1)


@pytest.mark.parametrize(
    ("layer", "dim"),
    [(nn.Conv2d(8, 16, 3), 0), (nn.Linear(20, 7), 0), (nn.ConvTranspose2d(6, 5, 3), 1)],
)
def test_effective_weight_has_zero_mean_and_unit_std_per_output_unit(
    layer: nn.Module, dim: int
) -> None:
    layer = layer.double()
    with torch.no_grad():
        layer.weight.mul_(7.0).add_(3.0)  # far from standardized to start with
    w = _per_unit(normlab.weight_standardization(layer).weight, dim)
    torch.testing.assert_close(w.mean(1), torch.zeros(w.shape[0], dtype=w.dtype), atol=1e-12,
                               rtol=0)  # fmt: skip
    # biased variance = σ²/(σ² + ε): 1 up to ε/σ² (σ ≈ 7·std(W) here, σ² far above ε)
    var = w.var(1, correction=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)


def test_authors_convention_has_unit_unbiased_std() -> None:
    for eps_in_sqrt in (False, True):
        layer = normlab.weight_standardization(
            nn.Conv2d(3, 4, 3).double(), unbiased=True, eps_in_sqrt=eps_in_sqrt, eps=1e-12
        )
        w = _per_unit(layer.weight)
        torch.testing.assert_close(w.std(1), torch.ones(4, dtype=w.dtype))


def test_invariant_to_per_filter_affine_maps_up_to_eps() -> None:
    # authors' form: Ŵ(aW + b) = (W − μ)/(σ + ε/a), a relative change ≤ ε|1/a − 1|/σ;
    # default form: (W − μ)/sqrt(σ² + ε/a²), a relative change ≤ ε|1/a² − 1|/(2σ²).
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    a = torch.rand(6, 1, 1, 1, dtype=torch.float64) * 10 + 0.1
    b = torch.randn(6, 1, 1, 1, dtype=torch.float64) * 5
    eps, ref = 1e-5, {"unbiased": True, "eps_in_sqrt": False}
    base, moved = standardized_weight(w, eps, **ref), standardized_weight(a * w + b, eps, **ref)
    sigma = w.flatten(1).std(1).view(-1, 1, 1, 1)
    bound = eps * (1 / a - 1).abs() / sigma * base.abs() + 1e-12
    assert ((moved - base).abs() <= bound).all()
    assert not torch.equal(moved, base)  # the ε term is real
    base, moved = standardized_weight(w, eps), standardized_weight(a * w + b, eps)
    var = w.flatten(1).var(1, correction=0).view(-1, 1, 1, 1)
    bound = eps * (1 / a**2 - 1).abs() / (2 * var) * base.abs() + 1e-12
    assert ((moved - base).abs() <= bound).all()
    assert not torch.equal(moved, base)  # the ε term is real
    exact = standardized_weight(a * w + b, 1e-300), standardized_weight(w, 1e-300)
    torch.testing.assert_close(*exact, rtol=1e-12, atol=1e-12)


def test_conv_output_invariant_to_per_filter_affine_maps() -> None:
    torch.manual_seed(1)
    conv = normlab.weight_standardization(nn.Conv2d(3, 5, 3).double(), eps=1e-12)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = conv(x)
    with torch.no_grad():
        original = conv.parametrizations.weight.original
        original.mul_(torch.rand(5, 1, 1, 1, dtype=torch.float64) + 0.5).add_(2.0)
    torch.testing.assert_close(conv(x), before, rtol=1e-9, atol=1e-9)


def test_biased_eps_in_sqrt_equals_layer_norm_of_the_weight() -> None:
    # STYLE §10.5's equivalence: WS (paper form) is LayerNorm over each filter's fan-in.
    w = torch.randn(7, 3, 2, 2, dtype=torch.float64)
    expected = F.layer_norm(w, w.shape[1:], eps=1e-6)
    got = standardized_weight(w, 1e-6, unbiased=False, eps_in_sqrt=True)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_reference_convention_matches_authors_code_form() -> None:
    # joe-siyuan-qiao/WeightStandardization: w − mean, then / (w.view(C, -1).std(1) + 1e-5)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    centered = w - w.mean(dim=(1, 2, 3), keepdim=True)
    expected = centered / (centered.flatten(1).std(1).view(-1, 1, 1, 1) + 1e-5)
    got = standardized_weight(w, unbiased=True, eps_in_sqrt=False)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("eps_in_sqrt", [False, True])
def test_zero_variance_filter_becomes_zero_with_finite_gradients(eps_in_sqrt: bool) -> None:
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[1].fill_(0.37)  # a constant filter: zero variance
        conv.weight[2].zero_()
    normlab.weight_standardization(conv, eps_in_sqrt=eps_in_sqrt)
    weight = conv.weight
    # zero up to the mean's rounding error (≤ 1e-8 here) times 1/sqrt(ε) or 1/ε
    assert weight[1:].abs().max() < 1e-3
    assert weight[0].abs().max() > 0.1
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    conv(x).square().sum().backward()
    grad = conv.parametrizations.weight.original.grad
    assert torch.isfinite(grad).all() and torch.isfinite(x.grad).all()


def test_matches_float64_oracle_in_float32() -> None:
    conv = normlab.weight_standardization(nn.Conv2d(16, 8, 3))
    expected = standardized_oracle(conv.parametrizations.weight.original)
    torch.testing.assert_close(conv.weight.double(), expected, rtol=1e-5, atol=1e-5)


def test_gradcheck() -> None:
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    forms = ({}, {"unbiased": True}, {"unbiased": True, "eps_in_sqrt": False})
    for kwargs in forms:
        assert torch.autograd.gradcheck(lambda v, k=kwargs: standardized_weight(v, **k), (w,))
        assert torch.autograd.gradgradcheck(lambda v, k=kwargs: standardized_weight(v, **k), (w,))


def test_same_in_training_and_eval() -> None:
    conv = normlab.WSConv2d(3, 4, 3)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(conv.train()(x), conv.eval()(x))


def test_functional_equals_module() -> None:
    layer = normlab.weight_standardization(nn.ConvTranspose1d(4, 6, 3), eps=1e-4, unbiased=False)
    expected = standardized_weight(layer.parametrizations.weight.original, 1e-4, 1, unbiased=False)
    assert torch.equal(layer.weight, expected)


def test_ws_conv2d_state_dict_is_conv2d_plus_parametrization() -> None:
    ws = normlab.WSConv2d(3, 4, 3, stride=2, bias=True)
    twin = normlab.weight_standardization(nn.Conv2d(3, 4, 3, stride=2))
    assert ws.state_dict().keys() == twin.state_dict().keys()
    twin.load_state_dict(ws.state_dict())
    x = torch.randn(1, 3, 7, 7)
    assert torch.equal(twin(x), ws(x))
    assert isinstance(ws, nn.Conv2d) and ws.bias is not None
    assert normlab.WSConv2d(3, 4, 3).bias is None  # WS convs feed a norm layer


def test_registered_under_its_name_and_alias() -> None:
    entry = registry.lookup_weight("ws")
    assert entry is registry.lookup_weight("weight_standardization")
    assert entry.apply is normlab.weight_standardization
    assert "weight_standardization" in normlab.available("weight")
    model = normlab.parametrize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(2, 3)), "ws")
    assert isinstance(model[0].parametrizations.weight[0], entry.parametrization)


@pytest.mark.parametrize("dim", [2, -3, 1.0, True])
def test_dim_out_of_range_is_a_config_error(dim: object) -> None:
    with pytest.raises(ConfigError, match=rf"dim={dim!r} is out of range .* 2 dimensions"):
        normlab.weight_standardization(nn.Linear(3, 4), dim=dim)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"dim=.* is out of range"):
        standardized_weight(torch.ones(3, 4), dim=dim)  # type: ignore[arg-type]


def test_fan_in_of_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"fan-in of 1 .* at least 2"):
        normlab.weight_standardization(nn.Linear(1, 4))
    with pytest.raises(ConfigError, match=r"fan-in of 1"):
        normlab.WSConv2d(1, 4, 1)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), "1e-5"])
def test_bad_eps_is_a_config_error(eps: object) -> None:
    with pytest.raises(ConfigError, match=r"eps must be a positive finite float"):
        normlab.weight_standardization(nn.Linear(3, 4), eps=eps)  # type: ignore[arg-type]


def test_bad_flags_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unbiased must be True or False; got 'yes'"):
        normlab.weight_standardization(nn.Linear(3, 4), unbiased="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"eps_in_sqrt must be True or False"):
        standardized_weight(torch.ones(3, 4), eps_in_sqrt=1)  # type: ignore[arg-type]


def test_failed_application_leaves_the_module_plain() -> None:
    layer = nn.Linear(3, 4)
    with pytest.raises(ConfigError):
        normlab.weight_standardization(layer, dim=5)
    assert not torch.nn.utils.parametrize.is_parametrized(layer)
