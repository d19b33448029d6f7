"""Weight normalization beyond the contract battery: torch parity and checkpoints, zero norms,
gradients against the paper's formulas, bad input, and the data-dependent initialization.

Oracles are float64 and written from Salimans & Kingma 2016 (§2 for w and its gradients, §3 for
the initialization), never from normlab's code path.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations as torch_parametrizations

import normlab
import normlab.functional as NF
from normlab.errors import ConfigError, InputError
from oracles_weight_norm import weight_norm_oracle

F64 = torch.float64


def _g(m: nn.Module) -> Tensor:
    return m.parametrizations.weight.original0


def _v(m: nn.Module) -> Tensor:
    return m.parametrizations.weight.original1


# -- registration, torch parity, checkpoints -------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Linear(5, 4), lambda: nn.Conv2d(3, 4, 3), lambda: nn.ConvTranspose2d(3, 4, 2)],
    ids=["linear", "conv2d", "conv_transpose2d"],
)
def test_registration_keeps_the_function_and_g_is_the_unit_norm(make) -> None:
    layer = make().double()
    before = layer.weight.detach().clone()
    normlab.weight_norm(layer)
    dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    torch.testing.assert_close(layer.weight, before, rtol=1e-14, atol=1e-14)
    norms = torch.stack([before.select(dim, o).norm() for o in range(before.shape[dim])])
    torch.testing.assert_close(_g(layer).reshape(-1), norms, rtol=1e-14, atol=0)
    # claim 2 of METHODS.md §2: ‖w_o‖ = |g_o|
    with torch.no_grad():
        _g(layer).mul_(-3.0)
    w_norms = torch.stack([layer.weight.select(dim, o).norm() for o in range(before.shape[dim])])
    torch.testing.assert_close(w_norms, _g(layer).abs().reshape(-1), rtol=1e-12, atol=0)


def test_conv_transpose_default_follows_output_units_unlike_torch() -> None:
    layer = nn.ConvTranspose2d(3, 5, 2)
    ours, theirs = normlab.weight_norm(copy.deepcopy(layer)), copy.deepcopy(layer)
    torch_parametrizations.weight_norm(theirs)
    assert _g(ours).shape == (1, 5, 1, 1)  # one g per output channel (dim 1)
    assert _g(theirs).shape == (3, 1, 1, 1)  # torch's dim=0: one per *input* channel
    ours_dim0 = normlab.weight_norm(copy.deepcopy(layer), dim=0)
    assert _g(ours_dim0).shape == (3, 1, 1, 1)


@pytest.mark.parametrize("dim", [0, None], ids=["dim0", "global"])
def test_matches_torch_parametrization_and_loads_its_state_dict(dim: int | None) -> None:
    torch.manual_seed(0)
    theirs = torch_parametrizations.weight_norm(nn.Conv2d(3, 4, 3), dim=dim)
    with torch.no_grad():
        _g(theirs).mul_(torch.rand_like(_g(theirs)) + 0.5)
    ours = normlab.weight_norm(nn.Conv2d(3, 4, 3), dim=dim)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())  # and back


def test_loads_hook_based_torch_checkpoint_values_preserved() -> None:
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
        old = torch.nn.utils.weight_norm(nn.Linear(6, 3))
    with torch.no_grad():
        old.weight_g.mul_(2.5)
    state = old.state_dict()
    assert {"weight_g", "weight_v"} <= state.keys()
    ours = normlab.weight_norm(nn.Linear(6, 3))
    ours.load_state_dict(state)
    assert torch.equal(_g(ours), state["weight_g"])
    assert torch.equal(_v(ours), state["weight_v"])
    assert torch.equal(ours.bias, state["bias"])
    x = torch.randn(4, 6)
    torch.testing.assert_close(ours(x), old(x), rtol=1e-6, atol=1e-6)


def test_loads_a_plain_layer_checkpoint_as_the_same_function() -> None:
    plain = nn.Linear(6, 3).double()
    ours = normlab.weight_norm(nn.Linear(6, 3).double())
    ours.load_state_dict(plain.state_dict())
    torch.testing.assert_close(ours.weight, plain.weight, rtol=1e-14, atol=1e-14)


def test_state_survives_pickle_and_compat_hook_is_registered_once() -> None:
    layer = normlab.weight_norm(nn.Linear(4, 2))
    normlab.unparametrize(layer, inplace=True, bake=True)
    normlab.weight_norm(layer)
    assert len(layer._load_state_dict_pre_hooks) == 1


# -- zero norms ------------------------------------------------------------------------------------


def test_zero_weight_row_gives_zero_not_nan_and_g_still_learns() -> None:
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[1] = 0.0
    normlab.weight_norm(layer)
    assert _g(layer)[1].item() == 0.0
    torch.testing.assert_close(_v(layer)[1], torch.full((4,), 0.5))  # 1/sqrt(fan-in)
    assert torch.equal(layer.weight[1], torch.zeros(4))
    y = layer(torch.randn(5, 4))
    y.square().sum().backward()
    for t in (y, _g(layer).grad, _v(layer).grad):
        assert torch.isfinite(t).all()
    assert _g(layer).grad[1].item() != 0.0


def test_zero_v_in_a_torch_checkpoint_loads_as_zero_weight() -> None:
    theirs = torch_parametrizations.weight_norm(nn.Linear(4, 3))
    with torch.no_grad():
        _v(theirs)[2] = 0.0
    assert torch.isnan(theirs.weight).any()  # what torch computes
    ours = normlab.weight_norm(nn.Linear(4, 3))
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours.weight[2], torch.zeros(4))
    torch.testing.assert_close(ours.weight[:2], theirs.weight[:2], rtol=0, atol=0)


def test_eps_keeps_a_v_zeroed_in_place_finite() -> None:
    layer = normlab.weight_norm(nn.Linear(4, 3), eps=1e-6)
    with torch.no_grad():
        _v(layer)[0] = 0.0
    y = layer(torch.randn(2, 4))
    y.sum().backward()
    assert torch.isfinite(layer.weight).all() and torch.equal(layer.weight[0], torch.zeros(4))
    assert torch.isfinite(_v(layer).grad).all()


# -- functional and gradients ----------------------------------------------------------------------


def test_functional_matches_oracle_and_module() -> None:
    v = torch.randn(4, 3, 2, dtype=F64)
    g = torch.rand(4, 1, 1, dtype=F64) + 0.5
    torch.testing.assert_close(NF.weight_normalize(v, g), weight_norm_oracle(g, v, 0))
    g1 = torch.rand(1, 3, 1, dtype=F64)
    torch.testing.assert_close(NF.weight_normalize(v, g1, dim=1), weight_norm_oracle(g1, v, 1))
    gs = torch.tensor(2.0, dtype=F64)
    torch.testing.assert_close(NF.weight_normalize(v, gs, None), weight_norm_oracle(gs, v, None))


def test_gradients_match_the_papers_formulas() -> None:
    """∇g = ∇w·v/‖v‖ and ∇v = (g/‖v‖)(I − w wᵀ/‖w‖²)∇w per unit (§2, eq. 3)."""
    torch.manual_seed(2)
    v = torch.randn(3, 5, dtype=F64, requires_grad=True)
    g = (torch.rand(3, 1, dtype=F64) + 0.5).requires_grad_()
    gw = torch.randn(3, 5, dtype=F64)
    dv, dg = torch.autograd.grad(NF.weight_normalize(v, g), (v, g), gw)
    for o in range(3):
        vo, go = v[o].detach(), g[o, 0].detach()
        norm = torch.sqrt((vo * vo).sum())
        wo = go * vo / norm
        torch.testing.assert_close(dg[o, 0], (gw[o] * vo).sum() / norm, rtol=1e-12, atol=1e-14)
        projector = torch.eye(5, dtype=F64) - torch.outer(wo, wo) / (wo * wo).sum()
        torch.testing.assert_close(dv[o], go / norm * projector @ gw[o], rtol=1e-12, atol=1e-14)
    assert abs(float((dv * v.detach()).sum())) < 1e-12  # orthogonal to v: ‖v‖ grows under SGD


@pytest.mark.parametrize("eps", [None, 1e-6], ids=["fused", "eps"])
def test_gradcheck(eps: float | None) -> None:
    v = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    g = torch.randn(3, 1, 1, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: NF.weight_normalize(a, b, eps=eps), (v, g))


def test_norm_of_v_never_decreases_under_sgd() -> None:
    torch.manual_seed(3)
    layer = normlab.weight_norm(nn.Linear(8, 4))
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    last = _v(layer).detach().norm(dim=1)
    for _ in range(20):
        opt.zero_grad()
        (layer(torch.randn(16, 8)) - 1.0).square().mean().backward()
        opt.step()
        now = _v(layer).detach().norm(dim=1)
        assert (now >= last * (1 - 1e-6)).all()
        last = now


# -- bad input -------------------------------------------------------------------------------------


def test_weight_norm_after_another_parametrization_is_refused_and_before_it_works() -> None:
    conv = normlab.spectral_norm(nn.Conv2d(3, 4, 3))
    with pytest.raises(ConfigError, match=r"weight_norm: Conv2d.weight already has a "
                       r"parametrization \(SpectralNorm\).*Apply weight_norm before"):
        normlab.weight_norm(conv)
    assert len(conv.parametrizations.weight) == 1  # nothing half-registered
    model = normlab.parametrize(nn.Sequential(nn.Conv2d(3, 4, 3)), "spectral_norm")
    with pytest.raises(ConfigError, match="can only come first"):
        normlab.parametrize(model, "weight_norm")
    stacked = normlab.spectral_norm(normlab.weight_norm(nn.Conv2d(3, 4, 3)))
    assert stacked(torch.randn(1, 3, 5, 5)).shape == (1, 4, 3, 3)


def test_bad_arguments_name_the_value_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"dim=2 is out of range .* 2 dimensions"):
        normlab.weight_norm(nn.Linear(3, 4), dim=2)
    with pytest.raises(ConfigError, match=r"dim='rows'"):
        normlab.weight_norm(nn.Linear(3, 4), dim="rows")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"eps must be None .* got -1"):
        normlab.weight_norm(nn.Linear(3, 4), eps=-1)
    with pytest.raises(ConfigError, match="twice"):
        normlab.weight_norm(normlab.weight_norm(nn.Linear(3, 4)))
    with pytest.raises(ConfigError, match="no parameter named 'kernel'"):
        normlab.weight_norm(nn.Linear(3, 4), "kernel")
    with pytest.raises(ConfigError, match=r"Linear\.weight has no elements \(shape \(3, 0\)\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: zero-element init is a no-op
            empty = nn.Linear(0, 3)
        normlab.weight_norm(empty)
    with pytest.raises(ConfigError, match=r"dim=3 is out of range"):
        NF.weight_normalize(torch.ones(2, 2), torch.ones(2, 1), dim=3)
    with pytest.raises(InputError, match="must be tensors"):
        NF.weight_normalize([1.0], torch.ones(1))  # type: ignore[arg-type]


# -- data-dependent initialization (§3) ------------------------------------------------------------


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 6, 2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    )


def _deep_mlp() -> nn.Module:
    return nn.Sequential(
        *[m for _ in range(6) for m in (nn.Linear(16, 16), nn.Tanh())], nn.Linear(16, 3)
    )


NETS = {"conv": (_conv_net, (64, 3, 8, 8)), "mlp": (_deep_mlp, (128, 16))}


def _wn_outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Each weight-normalized layer's output on x, by path (units at dim 1 or last)."""
    outputs: dict[str, Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, a, y, p=path: outputs.setdefault(p, y.detach()))
        for path, m in model.named_modules()
        if hasattr(m, "parametrizations")
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outputs


def _unit_stats(y: Tensor, unit_dim: int) -> tuple[Tensor, Tensor]:
    """Per-unit mean and biased variance, two passes with explicit loops, float64."""
    y = y.to(F64).movedim(unit_dim, 0)
    means, variances = [], []
    for unit in y:
        values = unit.reshape(-1)
        mu = values.sum() / values.numel()
        means.append(mu)
        variances.append(((values - mu) ** 2).sum() / values.numel())
    return torch.stack(means), torch.stack(variances)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_init_gives_zero_mean_and_target_variance_for_every_layer(net: str, scale: float) -> None:
    torch.manual_seed(4)
    build, shape = NETS[net]
    model = normlab.parametrize(build().double(), "weight_norm")
    x = torch.randn(shape, dtype=F64) * 3 + 1
    normlab.init_weight_norm_(model, x, init_scale=scale)
    outputs = _wn_outputs(model, x)
    assert len(outputs) == sum(1 for m in model.modules() if hasattr(m, "parametrizations"))
    for path, y in outputs.items():
        mean, var = _unit_stats(y, -1 if isinstance(model.get_submodule(path), nn.Linear) else 1)
        torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-6, msg=path)
        torch.testing.assert_close(var, torch.full_like(var, scale**2), rtol=1e-6, atol=0, msg=path)


def test_each_layer_is_initialized_on_the_initialized_layers_below() -> None:
    torch.manual_seed(5)
    model = normlab.parametrize(_deep_mlp().double(), "weight_norm")
    x = torch.randn(64, 16, dtype=F64)
    seen: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a, p=p: seen.setdefault(p, a[0].clone()))
        for p, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    normlab.init_weight_norm_(model, x)
    for h in hooks:
        h.remove()
    after = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a, p=p: after.setdefault(p, a[0].clone()))
        for p, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    assert seen.keys() == after.keys() and len(seen) == 7
    for path in seen:  # what layer k saw during init is the output of the final layers < k
        torch.testing.assert_close(seen[path], after[path], rtol=1e-12, atol=1e-12, msg=path)


def test_init_leaves_modes_and_other_layers_state_alone() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.0), nn.Conv2d(4, 4, 1)
    )
    torch.nn.utils.parametrizations.weight_norm(model[0])  # torch's parametrization
    normlab.weight_norm(model[3])
    model[1].train(False)
    model[3].train(False)
    modes = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num" in k}
    g0 = _g(model[0]).clone()
    normlab.init_weight_norm_(model, torch.randn(8, 3, 6, 6))
    assert [m.training for m in model.modules()] == modes
    for key, value in buffers.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(_g(model[0]), g0)  # torch's layer was initialized too


def test_layer_without_bias_gets_only_g() -> None:
    model = normlab.parametrize(nn.Sequential(nn.Linear(6, 4, bias=False)).double(), "wn")
    x = torch.randn(200, 6, dtype=F64) + 2.0
    normlab.init_weight_norm_(model, x)
    mean, var = _unit_stats(model(x).detach(), -1)
    torch.testing.assert_close(var, torch.ones_like(var), rtol=1e-6, atol=0)
    assert mean.abs().max() > 0.1  # no bias to remove it


def test_init_errors_and_restores_parameters_on_failure() -> None:
    wn_model = normlab.parametrize(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)), "weight_norm")
    with pytest.raises(InputError, match=r"batch is empty \(shape \(0, 3\)\)"):
        normlab.init_weight_norm_(wn_model, torch.zeros(0, 3))
    with pytest.raises(InputError, match="batch is a str"):
        normlab.init_weight_norm_(wn_model, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no weight-normalized layer"):
        normlab.init_weight_norm_(nn.Sequential(nn.Linear(3, 3)), torch.ones(2, 3))
    with pytest.raises(
        ConfigError, match=r"init_scale must be a positive finite float \(e\.g\. 1\.0\); got 0"
    ):
        normlab.init_weight_norm_(wn_model, torch.ones(2, 3), init_scale=0)
    glob = normlab.weight_norm(nn.Linear(3, 3), dim=None)
    with pytest.raises(ConfigError, match=r"along dim=None, not per output unit \(dim=0\)"):
        normlab.init_weight_norm_(glob, torch.ones(2, 3))
    broken = normlab.parametrize(nn.Sequential(nn.Linear(3, 3), nn.Linear(4, 2)), "wn")
    state = copy.deepcopy(broken.state_dict())
    with pytest.raises(RuntimeError):  # the first layer is initialized, the second fails
        normlab.init_weight_norm_(broken, torch.randn(5, 3))
    for key, value in broken.state_dict().items():
        assert torch.equal(value, state[key]), key
