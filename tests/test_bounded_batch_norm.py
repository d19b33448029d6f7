"""Bounded Batch Normalization (Jia et al. 2017, METHODS.md §16): what is unique to it.

The forward pass is BatchNorm's (the generic contract, state and parity tests run on the cases
in cases_bounded_batch_norm.py). Here: the scale projection against a per-channel float64
oracle written from the paper's rule (and the reference code's ``BNScalingBounding``, whose ᾱ
is the mean scale *before* the projection), its model-wide form over torch and normlab layers,
and bad input. Done-when: after bounding every s_i = γ_i/sqrt(running_var_i + eps) lies in
[ᾱ/(1+ε̃), ᾱ(1+ε̃)], checked in float64 on the stored float32 γ with no tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import normlab
import normlab.functional as NF
from catalogue import make_input
from normlab import registry
from normlab.errors import ConfigError, InputError, UnknownNameError

# -- oracle ----------------------------------------------------------------------------------------


def bbn_oracle(
    gamma: Tensor, var: Tensor | None, bn_eps: float, eps: float
) -> tuple[list[float], float]:
    """The paper's projection channel by channel in Python floats: the new γ and ᾱ (computed
    once, before any γ changes). ``var=None`` is the reference's "rel" mode (σ_i = 1)."""
    g = [float(v) for v in gamma.detach()]
    sigma = [1.0] * len(g) if var is None else [math.sqrt(float(v) + bn_eps) for v in var.detach()]
    alpha = sum(gi / si for gi, si in zip(g, sigma, strict=True)) / len(g)
    out = []
    for gi, si in zip(g, sigma, strict=True):
        ratio = gi / si / alpha
        if ratio > 1 + eps:
            gi = si * alpha * (1 + eps)
        elif ratio < 1 / (1 + eps):
            gi = si * alpha / (1 + eps)
        out.append(gi)
    return out, alpha


def ratios(layer: nn.Module, alpha: float, use_var: bool = True) -> Tensor:
    """s_i/ᾱ in float64 from the layer's stored γ and running_var."""
    gamma = layer.weight.detach().double()
    sigma = (layer.running_var.double() + layer.eps).sqrt() if use_var else 1.0
    return gamma / sigma / alpha


def trained(cls: type[nn.Module] = normlab.BoundedBatchNorm, c: int = 8, **kw: object) -> nn.Module:
    """A BN layer with running statistics from a few batches and a spread-out γ (both signs of
    the bound exceeded), in eval mode."""
    layer = cls(c, **kw)
    layer.train()
    with torch.no_grad():
        for seed in range(3):
            layer(make_input((16, c, 3), seed=seed).float() * 2)
        if layer.weight is not None:
            layer.weight.copy_(torch.logspace(math.log10(0.05), math.log10(6.0), c))
    return layer.eval()


# -- done-when: the bound -------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1.0, 0.2, 0.01])
def test_every_scale_within_bound(eps: float) -> None:
    layer = trained()
    _, alpha = bbn_oracle(layer.weight, layer.running_var, layer.eps, eps)
    before = ratios(layer, alpha)
    assert before.max() > 1 + eps and before.min() < 1 / (1 + eps)  # the projection must act
    bound = layer.bound_scales_(eps=eps)
    after = ratios(layer, alpha)  # float64, from the stored float32 γ
    assert after.min() >= 1 / (1 + eps) and after.max() <= 1 + eps, (after.min(), after.max())
    assert bound.mean_scale == pytest.approx(alpha, rel=1e-12)
    assert bound.clipped == int(((before > 1 + eps) | (before < 1 / (1 + eps))).sum())


@pytest.mark.parametrize("mode", ["bbn", "rel"])
def test_matches_float64_oracle(mode: str) -> None:
    layer = trained().double()
    var = layer.running_var if mode == "bbn" else None
    expected, alpha = bbn_oracle(layer.weight, var, layer.eps, 0.5)
    bound = layer.bound_scales_(eps=0.5, mode=mode)
    torch.testing.assert_close(
        layer.weight.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert bound.mean_scale == pytest.approx(alpha, rel=1e-12)


def test_alpha_is_the_mean_before_the_projection() -> None:
    """The reference computes ᾱ once; after the projection the mean scale has moved, so a bound
    relative to the new mean would be a different (and here violated) statement."""
    layer = trained()
    _, alpha = bbn_oracle(layer.weight, layer.running_var, layer.eps, 0.2)
    layer.bound_scales_(eps=0.2)
    new_alpha = float(ratios(layer, 1.0).mean())
    assert abs(new_alpha - alpha) > 0.01 * abs(alpha)
    assert ratios(layer, new_alpha).max() > 1.2 or ratios(layer, new_alpha).min() < 1 / 1.2


def test_rel_mode_bounds_gamma_relative_to_its_mean_and_ignores_running_var() -> None:
    a, b = trained(), trained()
    with torch.no_grad():
        b.running_var.mul_(torch.linspace(0.1, 9.0, 8))
    mean = float(a.weight.detach().double().mean())
    a.bound_scales_(eps=0.3, mode="rel")
    b.bound_scales_(eps=0.3, mode="REL")  # the reference spells its types in capitals
    assert torch.equal(a.weight, b.weight)
    r = ratios(a, mean, use_var=False)
    assert r.min() >= 1 / 1.3 and r.max() <= 1.3


def test_only_clipped_channels_change_and_nothing_else() -> None:
    layer = trained()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    _, alpha = bbn_oracle(layer.weight, layer.running_var, layer.eps, 1.0)
    inside = ((r := ratios(layer, alpha)) <= 2.0) & (r >= 0.5)
    assert inside.any() and not inside.all()
    layer.bound_scales_()
    for key, value in layer.state_dict().items():
        if key != "weight":
            assert torch.equal(value, state[key]), key
    assert torch.equal(layer.weight.detach()[inside], state["weight"][inside])


def test_negative_mean_scale_reads_the_bound_as_a_ratio() -> None:
    layer = trained()
    with torch.no_grad():
        layer.weight.neg_()
    expected, alpha = bbn_oracle(layer.weight, layer.running_var, layer.eps, 1.0)
    assert alpha < 0
    layer.bound_scales_()
    r = ratios(layer, alpha)
    assert r.min() >= 0.5 and r.max() <= 2.0
    torch.testing.assert_close(
        layer.weight.detach().double(), torch.tensor(expected).double(), rtol=1e-6, atol=0
    )


def test_forward_is_batch_norm() -> None:
    bbn, bn = trained(), normlab.BatchNorm(8)
    bn.load_state_dict(bbn.state_dict())
    x = make_input((5, 8, 4), dtype=torch.float32, seed=7)
    for mode in (False, True):
        bbn.train(mode)
        bn.train(mode)
        assert torch.equal(bbn(x), bn(x))
    assert isinstance(bbn, normlab.BatchNorm)


def test_functional_matches_the_method() -> None:
    layer = trained()
    weight, var = layer.weight.detach().clone(), layer.running_var.clone()
    out = NF.bounded_bn_weight(weight, var, bn_eps=layer.eps, eps=0.4)
    rel = NF.bounded_bn_weight(weight, eps=0.4)
    assert torch.equal(layer.weight.detach(), weight)  # pure
    layer.bound_scales_(eps=0.4)
    assert torch.equal(layer.weight.detach(), out)
    expected, _ = bbn_oracle(weight, None, 0.0, 0.4)
    torch.testing.assert_close(rel.double(), torch.tensor(expected).double(), rtol=1e-6, atol=0)


# -- whole models ---------------------------------------------------------------------------------


class ForeignFrozenBN(nn.Module):
    """A BN-like layer from another library (torchvision's FrozenBatchNorm2d has this shape)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.eps = 1e-5
        self.register_buffer("weight", torch.linspace(0.1, 5.0, c))
        self.register_buffer("bias", torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.linspace(0.5, 2.0, c))


def test_model_wide_finds_every_bn_layer_by_duck_typing() -> None:
    model = nn.ModuleDict(
        {
            "torch_bn": trained(nn.BatchNorm1d),
            "normlab_bn": trained(normlab.BatchNorm),
            "bbn": trained(),
            "ghost": trained(normlab.GhostBatchNorm, ghost_batch_size=4),
            "foreign": ForeignFrozenBN(8),
            "nested": nn.Sequential(nn.Linear(8, 8), trained(nn.BatchNorm1d)),
            # skipped: no γ, no running_var, or not BN's inference function
            "no_affine": trained(nn.BatchNorm1d, affine=False),
            "no_stats": nn.BatchNorm1d(8, track_running_stats=False),
            "instance": nn.InstanceNorm1d(8, affine=True, track_running_stats=True),
            "evonorm": normlab.EvoNormB0(8),
            "switchable": normlab.SwitchableNorm(8),
        }
    )
    layers = ["torch_bn", "normlab_bn", "bbn", "ghost", "foreign", "nested.1"]
    alphas = {}
    for name in layers:
        layer = model.get_submodule(name)
        alphas[name] = bbn_oracle(layer.weight, layer.running_var, layer.eps, 1.0)[1]
    skipped = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.split(".")[0] in {"no_affine", "no_stats", "instance", "evonorm", "switchable"}
    }
    report = normlab.bound_batch_norm_scales_(model)
    assert set(report) == set(layers)
    for name in layers:
        r = ratios(model.get_submodule(name), alphas[name])
        assert r.min() >= 0.5 and r.max() <= 2.0, name
        assert report[name].clipped > 0
    for key, value in skipped.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_model_wide_refusal_changes_nothing() -> None:
    model = nn.Sequential(trained(nn.BatchNorm1d), trained(nn.BatchNorm1d))
    with torch.no_grad():
        model[1].running_var[0] = float("nan")
    first = model[0].weight.detach().clone()
    with pytest.raises(InputError, match=r"layer 1 has scales .* non-finite"):
        normlab.bound_batch_norm_scales_(model)
    assert torch.equal(model[0].weight, first)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0, -1.0, float("nan"), float("inf"), True, "1", None])
def test_invalid_eps(eps: object) -> None:
    layer = trained()
    with pytest.raises(ConfigError, match=r"bound_scales_: eps \(ε̃.*got eps="):
        layer.bound_scales_(eps=eps)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bound_batch_norm_scales_: eps"):
        normlab.bound_batch_norm_scales_(layer, eps=eps)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bounded_bn_weight: eps"):
        NF.bounded_bn_weight(layer.weight, eps=eps)  # type: ignore[arg-type]


def test_eps_below_the_weight_dtype_resolution() -> None:
    layer = trained().half()
    with pytest.raises(ConfigError, match=r"eps=0\.0001 is below the resolution .*float16"):
        layer.bound_scales_(eps=1e-4)
    assert layer.bound_scales_(eps=0.01).clipped > 0


def test_invalid_mode() -> None:
    with pytest.raises(UnknownNameError, match=r"mode 'bnn'\. Did you mean 'bbn'\?"):
        trained().bound_scales_(mode="bnn")  # type: ignore[arg-type]


def test_layer_without_what_the_mode_needs() -> None:
    with pytest.raises(ConfigError, match=r"BoundedBatchNorm\(8\) has no affine weight"):
        trained(affine=False).bound_scales_()
    untracked = normlab.BoundedBatchNorm(8, track_running_stats=False)
    with torch.no_grad():
        untracked.weight.copy_(torch.linspace(0.1, 4.0, 8))
    with pytest.raises(ConfigError, match=r"has no running_var.*use mode='rel'"):
        untracked.bound_scales_()
    assert untracked.bound_scales_(mode="rel").clipped > 0


def test_zero_mean_scale() -> None:
    layer = normlab.BoundedBatchNorm(2).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, -1.0]))
    with pytest.raises(InputError, match="average to 0"):
        layer.bound_scales_()


@pytest.mark.parametrize("bad", [torch.ones(3), None, [nn.BatchNorm1d(2)]])
def test_model_not_a_module(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"model must be a torch\.nn\.Module"):
        normlab.bound_batch_norm_scales_(bad)  # type: ignore[arg-type]


def test_model_without_bn_layers() -> None:
    with pytest.raises(ConfigError, match="found no BatchNorm layer"):
        normlab.bound_batch_norm_scales_(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))


def test_functional_bad_tensors() -> None:
    with pytest.raises(InputError, match="weight must be a 1-D"):
        NF.bounded_bn_weight(torch.ones(2, 3))
    with pytest.raises(InputError, match=r"running_var must be a 1-D .* like weight"):
        NF.bounded_bn_weight(torch.ones(3), torch.ones(4))
    with pytest.raises(ConfigError, match="eps must be a positive"):
        NF.bounded_bn_weight(torch.ones(3), torch.ones(3), bn_eps=-1.0)


def test_registry_entry() -> None:
    entry = registry.lookup("bbn")
    assert entry.name == "bounded_batch_norm" and registry.lookup("bounded-bn") is entry
    assert entry.cls is normlab.BoundedBatchNorm
    assert isinstance(normlab.create("bbn", 4), normlab.BoundedBatchNorm)
    assert normlab.bound_batch_norm_scales_ in entry.exports
    assert "arXiv:1611.06013" in entry.paper
