"""Spectral normalization (Miyato et al. 2018): convergence of σ̂ to the largest singular value,
Algorithm 1 step by step, eval without power iteration, the exact convolution operator norm
against an explicit float64 matrix, zero weights, checkpoints of torch's two spectral norms, the
functional form and bad input. The contract battery (test_reparam_contract.py) runs the cases
of weight_cases_spectral_norm.py."""

from __future__ import annotations

import copy
import importlib
import io
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from normlab import registry
from normlab.errors import ConfigError, InputError
from normlab.reparam.spectral_norm import SpectralNorm, spectral_normalized_weight


def _sn(module: nn.Module) -> SpectralNorm:
    return module.parametrizations.weight[0]


def _original(module: nn.Module) -> Tensor:
    return module.parametrizations.weight.original


def _matrix(w: Tensor, dim: int = 0) -> Tensor:
    return w.detach().double().movedim(dim, 0).reshape(w.shape[dim], -1)


def _sigma_max(w: Tensor, dim: int = 0) -> float:
    return torch.linalg.svdvals(_matrix(w, dim))[0].item()


def explicit_operator(layer: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    """The float64 matrix of ``layer``'s bias-free linear map on one input: column i is the
    layer applied to the i-th basis vector (the layer's own forward, in eval mode)."""
    layer = copy.deepcopy(layer).double().eval()
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    with torch.no_grad():
        out = layer(basis) - layer(torch.zeros(1, *input_shape, dtype=torch.float64))
    return out.reshape(n, -1).T


def _train(module: nn.Module, shape: tuple[int, ...], steps: int) -> nn.Module:
    dtype = next(module.parameters()).dtype
    module.train()
    with torch.no_grad():
        for _ in range(steps):
            module(torch.randn(shape, dtype=dtype))
    return module.eval()


# -- σ̂ converges to σ_max (METHODS §8 claim 1) ---------------------------------------------------


@pytest.mark.parametrize("lipschitz", [1.0, 2.0])
@pytest.mark.parametrize(
    ("make", "shape"),
    [(lambda: nn.Linear(96, 64), (4, 96)), (lambda: nn.Conv2d(16, 32, 3), (2, 16, 6, 6))],
    ids=["linear", "conv2d"],
)
def test_sigma_max_reaches_lipschitz_after_50_training_forwards(
    make: Callable[[], nn.Module], shape: tuple[int, ...], lipschitz: float
) -> None:
    module = _train(normlab.spectral_norm(make(), lipschitz=lipschitz), shape, 50)
    assert _sigma_max(module.weight) == pytest.approx(lipschitz, rel=0.01)


def test_sigma_tracks_a_weight_that_an_optimizer_changes() -> None:
    module = normlab.spectral_norm(nn.Linear(64, 64))
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        module(torch.randn(16, 64)).square().mean().backward()
        opt.step()
    module.eval()
    assert _sigma_max(module.weight) == pytest.approx(1.0, rel=0.01)


def test_conv_transpose_normalizes_along_its_output_channels() -> None:
    module = _train(normlab.spectral_norm(nn.ConvTranspose2d(24, 8, 3)), (2, 24, 5, 5), 50)
    assert _sn(module).dim == 1
    assert _sn(module)._u.shape == (8,)
    assert _sigma_max(module.weight, dim=1) == pytest.approx(1.0, rel=0.01)


def test_sn_mlp_is_lipschitz_on_random_pairs() -> None:
    mlp = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5)
    )
    model = normlab.parametrize(mlp, "spectral_norm", n_power_iterations=30)
    _train(model, (4, 20), 3)
    x, x2 = torch.randn(500, 20), torch.randn(500, 20)
    with torch.no_grad():
        ratio = (model(x) - model(x2)).norm(dim=1) / (x - x2).norm(dim=1)
    assert ratio.max() <= 1.0 + 1e-4


# -- Algorithm 1, step by step -------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 3])
def test_training_forward_is_algorithm_1(iterations: int) -> None:
    module = normlab.spectral_norm(
        nn.Linear(7, 5).double(), n_power_iterations=iterations, lipschitz=1.5
    )
    w, u, v = _original(module).detach().clone(), _sn(module)._u.clone(), _sn(module)._v.clone()
    for _ in range(iterations):
        v = w.T @ u / torch.linalg.norm(w.T @ u)
        u = w @ v / torch.linalg.norm(w @ v)
    effective = module.train().weight
    torch.testing.assert_close(_sn(module)._v, v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_sn(module)._u, u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(effective, 1.5 * w / (u @ w @ v), rtol=1e-12, atol=1e-14)


def test_gradient_flows_through_w_only() -> None:
    # d(W/σ̂)/dW with u, v constants: σ̂ = uᵀWv has gradient u vᵀ
    module = normlab.spectral_norm(nn.Linear(4, 3).double()).eval()
    w, u, v = _original(module), _sn(module)._u, _sn(module)._v
    g = torch.randn(3, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(module.weight, w, g)
    sigma = u @ w.detach() @ v
    expected = g / sigma - (g * w.detach()).sum() / sigma**2 * torch.outer(u, v)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


_IMPL = importlib.import_module("normlab.reparam.spectral_norm")


@pytest.mark.parametrize("impl", ["_MatrixSpectralNormFunction", "_matrix_spectral_norm_op"])
@pytest.mark.parametrize("make", [lambda: nn.Linear(5, 4), lambda: nn.ConvTranspose1d(3, 2, 2)])
def test_gradcheck_and_gradgradcheck(make: Callable[[], nn.Module], impl: str) -> None:
    # the fused backward against finite differences, to second order (gradient penalties),
    # for the eager autograd.Function and the custom op torch.compile uses
    module = normlab.spectral_norm(make().double(), lipschitz=1.5).eval()
    sn = _sn(module)
    fn = getattr(_IMPL, impl)
    fn = fn.apply if isinstance(fn, type) else fn

    def effective(w: Tensor) -> Tensor:
        return fn(w, sn._u, sn._v, 1.5, sn.dim)

    w = _original(module).detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(effective, (w,))
    assert torch.autograd.gradgradcheck(effective, (w,))


def test_compiled_weight_gradient_matches_eager() -> None:
    eager = normlab.spectral_norm(nn.Linear(12, 8))
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 12)
    eager(x).square().sum().backward()
    compiled(x).square().sum().backward()
    torch.testing.assert_close(
        _original(compiled_module).grad, _original(eager).grad, rtol=1e-5, atol=1e-6
    )


def test_two_training_forwards_backpropagate_together() -> None:
    # GAN pattern D(real) - D(fake): the second forward's in-place u, v update must not break
    # the first forward's backward (hence the clones)
    module = normlab.spectral_norm(nn.Linear(6, 4)).train()
    loss = module(torch.randn(3, 6)).sum() - module(torch.randn(3, 6)).sum()
    loss.backward()
    assert torch.isfinite(_original(module).grad).all()


# -- eval runs no power iteration ----------------------------------------------------------------


def test_eval_uses_the_stored_vectors() -> None:
    module = normlab.spectral_norm(nn.Linear(8, 6).double()).eval()
    with torch.no_grad():
        _original(module).mul_(-2.0).add_(0.3)  # the stored u, v no longer fit W
    u, v = _sn(module)._u.clone(), _sn(module)._v.clone()
    w = _original(module).detach()
    torch.testing.assert_close(module.weight, w / (u @ w @ v), rtol=1e-12, atol=1e-14)
    assert torch.equal(_sn(module)._u, u) and torch.equal(_sn(module)._v, v)


def test_only_the_parametrizations_own_flag_counts() -> None:
    module = normlab.spectral_norm(nn.Linear(32, 24))
    u = _sn(module)._u.clone()
    module.train()
    _sn(module).eval()
    module(torch.randn(2, 32))
    assert torch.equal(_sn(module)._u, u)
    module.eval()
    _sn(module).train()
    module(torch.randn(2, 32))
    assert not torch.equal(_sn(module)._u, u)


# -- exact-conv mode -----------------------------------------------------------------------------

EXACT = [
    (lambda: nn.Conv2d(2, 3, 3, padding=1), (6, 6)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), (7, 7)),
    (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), (5, 5)),
    (lambda: nn.Conv1d(3, 5, 4, stride=2, padding="valid"), (11,)),
    (lambda: nn.Conv1d(3, 4, 3, padding="same"), (9,)),
    (lambda: nn.Conv3d(2, 2, 2), (3, 3, 3)),
    (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (4, 4)),
    (lambda: nn.ConvTranspose1d(4, 2, 3, stride=3, groups=2), (5,)),
]
EXACT_IDS = ["c2d", "c2d-stride", "c2d-dil-groups", "c1d-valid", "c1d-same", "c3d", "ct2d", "ct1d"]


@pytest.mark.parametrize(("make", "size"), EXACT, ids=EXACT_IDS)
def test_exact_conv_bounds_the_true_operator_norm(
    make: Callable[[], nn.Module], size: tuple[int, ...]
) -> None:
    layer = make().double()
    in_shape = (layer.in_channels, *size)
    sigma_true = torch.linalg.svdvals(explicit_operator(layer, in_shape))[0].item()
    module = normlab.spectral_norm(layer, exact_conv=True, input_size=size, n_power_iterations=5)
    _train(module, (2, *in_shape), 20)
    sigma_hat = (_original(module) / module.weight).flatten()[0].item()
    assert sigma_hat == pytest.approx(sigma_true, rel=0.02)
    normalized = torch.linalg.svdvals(explicit_operator(module, in_shape))[0].item()
    assert normalized == pytest.approx(1.0, rel=0.02)


def test_reshape_mode_is_only_a_surrogate_for_a_conv() -> None:
    layer = nn.Conv2d(2, 3, 3, padding=1).double()
    reshaped = _train(normlab.spectral_norm(copy.deepcopy(layer)), (2, 2, 6, 6), 100)
    exact = _train(
        normlab.spectral_norm(layer, exact_conv=True, input_size=6, n_power_iterations=5),
        (2, 2, 6, 6),
        40,
    )
    norm_reshaped = torch.linalg.svdvals(explicit_operator(reshaped, (2, 6, 6)))[0].item()
    norm_exact = torch.linalg.svdvals(explicit_operator(exact, (2, 6, 6)))[0].item()
    assert norm_exact == pytest.approx(1.0, rel=0.02)
    assert abs(norm_reshaped - 1.0) > 0.1, norm_reshaped


def test_exact_conv_vectors_have_the_layers_input_and_output_shapes() -> None:
    module = normlab.spectral_norm(
        nn.Conv2d(3, 5, 3, stride=2, padding=1), exact_conv=True, input_size=(9, 7)
    )
    assert _sn(module)._v.shape == (1, 3, 9, 7)
    assert _sn(module)._u.shape == (1, 5, 5, 4)
    assert module(torch.randn(2, 3, 16, 16)).shape == (2, 5, 8, 8)  # other sizes still run


# -- zero weight ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True], ids=["matrix", "exact"])
def test_zero_weight_stays_zero_with_finite_gradients(exact: bool) -> None:
    layer = nn.Conv2d(3, 4, 3, padding=1)
    kwargs = {"exact_conv": True, "input_size": 5} if exact else {}
    module = normlab.spectral_norm(layer, **kwargs).train()
    with torch.no_grad():
        _original(module).zero_()
    u, v = _sn(module)._u.clone(), _sn(module)._v.clone()
    y = module(torch.randn(2, 3, 5, 5))
    y.square().sum().backward()
    assert torch.equal(module.weight, torch.zeros_like(module.weight))
    assert torch.isfinite(_original(module).grad).all()
    assert _original(module).grad.abs().sum() > 0
    assert torch.equal(_sn(module)._u, u) and torch.equal(_sn(module)._v, v)  # kept, not zeroed
    with torch.no_grad():  # the weight comes back: the iteration is not stuck at 0
        _original(module).normal_()
    assert torch.linalg.vector_norm(module.weight) > 0
    if not exact:
        _train(module, (2, 3, 5, 5), 50)
        assert _sigma_max(module.weight) == pytest.approx(1.0, rel=0.01)


def test_functional_zero_weight_is_zero() -> None:
    out = spectral_normalized_weight(torch.zeros(3, 4), F.normalize(torch.ones(3), dim=0),
                                     F.normalize(torch.ones(4), dim=0))  # fmt: skip
    assert torch.equal(out, torch.zeros(3, 4))


# -- the functional form -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: nn.Linear(6, 5), lambda: nn.ConvTranspose2d(4, 3, 2)])
def test_functional_equals_the_module_and_mutates_nothing(make: Callable[[], nn.Module]) -> None:
    module = normlab.spectral_norm(make(), lipschitz=0.5).eval()
    sn = _sn(module)
    w, u, v = _original(module).detach().clone(), sn._u.clone(), sn._v.clone()
    out = spectral_normalized_weight(w, u, v, dim=sn.dim, lipschitz=0.5)
    torch.testing.assert_close(out, module.weight, rtol=0, atol=0)
    assert torch.equal(w, _original(module)) and torch.equal(u, sn._u) and torch.equal(v, sn._v)


def test_functional_rejects_vectors_of_the_wrong_shape() -> None:
    with pytest.raises(InputError, match=r"u has shape \(4,\); .* needs \(3,\)"):
        spectral_normalized_weight(torch.randn(3, 5), torch.randn(4), torch.randn(5))
    with pytest.raises(InputError, match=r"v has shape \(3,\)"):
        spectral_normalized_weight(torch.randn(3, 5), torch.randn(3), torch.randn(3))


def test_one_dimensional_weight_is_divided_by_its_norm() -> None:
    norm = nn.LayerNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
    normlab.spectral_norm(norm, lipschitz=2.0)
    assert not list(norm.parametrizations.weight[0].buffers())
    assert torch.linalg.vector_norm(norm.weight).item() == pytest.approx(2.0, rel=1e-6)


# -- checkpoints ---------------------------------------------------------------------------------

LAYERS = [
    (lambda: nn.Linear(9, 7), (3, 9)),
    (lambda: nn.Conv2d(3, 4, 3), (2, 3, 6, 6)),
    (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), (2, 4, 4, 4)),
]
LAYER_IDS = ["linear", "conv2d", "conv_transpose2d"]


def _torch_parametrizations_sn(m: nn.Module) -> nn.Module:
    return torch.nn.utils.parametrizations.spectral_norm(m)


def _torch_hook_sn(m: nn.Module) -> nn.Module:
    dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
    return torch.nn.utils.spectral_norm(m, dim=dim)


@pytest.mark.parametrize("torch_sn", [_torch_hook_sn, _torch_parametrizations_sn],
                         ids=["hook", "parametrizations"])  # fmt: skip
@pytest.mark.parametrize(("make", "shape"), LAYERS, ids=LAYER_IDS)
def test_torch_checkpoints_load_with_values_preserved(
    make: Callable[[], nn.Module], shape: tuple[int, ...], torch_sn: Callable[..., nn.Module]
) -> None:
    source = _train(torch_sn(make()), shape, 3)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)  # a real checkpoint file
    buffer.seek(0)
    state = torch.load(buffer)
    target = normlab.spectral_norm(make())
    target.load_state_dict(state)  # strict
    keys = {k.split(".")[-1].replace("_orig", ""): v for k, v in state.items()}
    torch.testing.assert_close(_original(target), keys.get("original", keys.get("weight")))
    torch.testing.assert_close(_sn(target)._u, keys.get("_u", keys.get("weight_u")))
    torch.testing.assert_close(_sn(target)._v, keys.get("_v", keys.get("weight_v")))
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=1e-5, atol=1e-6)


def test_old_checkpoint_loads_into_a_nested_model_and_a_copy() -> None:
    source = _train(nn.Sequential(nn.ReLU(), _torch_hook_sn(nn.Linear(5, 4))), (2, 5), 2)
    target = normlab.parametrize(nn.Sequential(nn.ReLU(), nn.Linear(5, 4)), "spectral_norm")
    target = copy.deepcopy(target)  # the hook is a partial of a module-level function
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(_sn(target[1])._u, source[1].weight_u)


def test_plain_weights_load_and_the_vectors_are_re_estimated() -> None:
    plain = nn.Linear(40, 30)
    target = normlab.spectral_norm(nn.Linear(40, 30))
    target.load_state_dict(plain.state_dict())
    assert torch.equal(_original(target), plain.weight)
    sigma_hat = (_original(target) / target.eval().weight)[0, 0].item()
    assert sigma_hat == pytest.approx(_sigma_max(plain.weight), rel=0.01)


def test_matrix_checkpoint_loads_into_exact_conv_mode() -> None:
    source = _torch_parametrizations_sn(nn.Conv2d(2, 3, 3, padding=1))
    target = normlab.spectral_norm(nn.Conv2d(2, 3, 3, padding=1), exact_conv=True, input_size=6)
    target.load_state_dict(source.state_dict())
    assert torch.equal(_original(target), _original(source))
    assert _sn(target)._u.shape == (1, 3, 6, 6)
    sigma_true = torch.linalg.svdvals(explicit_operator(source.eval(), (2, 6, 6)))[0].item()
    sigma_true *= (_original(source) / source.weight).flatten()[0].item()  # of the original W
    _train(target, (1, 2, 6, 6), 30)  # 15 re-estimation steps, then the usual iteration
    sigma_hat = (_original(target) / target.weight).flatten()[0].item()
    assert sigma_hat == pytest.approx(sigma_true, rel=0.02)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_power_iterations": 0}, r"n_power_iterations must be an int >= 1; got 0"),
        ({"n_power_iterations": -1}, r"n_power_iterations .* got -1"),
        ({"n_power_iterations": 1.5}, r"n_power_iterations .* got 1\.5"),
        ({"n_power_iterations": True}, r"n_power_iterations .* got True"),
        ({"eps": 0.0}, r"eps must be a positive finite float; got 0\.0"),
        ({"eps": float("nan")}, r"eps .* got nan"),
        ({"lipschitz": 0}, r"lipschitz must be a positive finite float; got 0\."),
        ({"lipschitz": -1.0}, r"lipschitz .* got -1\.0"),
        ({"lipschitz": float("inf")}, r"lipschitz .* got inf"),
        ({"dim": 2}, r"dim=2 is out of range for a weight with 2 dimensions"),
        ({"dim": "0"}, r"dim='0' is out of range"),
        ({"exact_conv": True, "input_size": 4}, r"exact_conv=True needs a convolution .* Linear"),
        ({"input_size": 8}, r"input_size=8 is only used with exact_conv=True"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normlab.spectral_norm(nn.Linear(3, 4), **kwargs)


@pytest.mark.parametrize(
    ("layer", "kwargs", "message"),
    [
        (nn.Conv2d(2, 3, 3), {}, r"needs input_size.*input_size=None.*input_size=\(32, 32\)"),
        (nn.Conv2d(2, 3, 3), {"input_size": (8,)}, r"got input_size=\(8,\)"),
        (nn.Conv2d(2, 3, 3), {"input_size": (8, 0)}, r"got input_size=\(8, 0\)"),
        (nn.Conv2d(2, 3, 5), {"input_size": 3}, r"input_size=\(3, 3\) is too small"),
        (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), {"input_size": 8},
         r"padding_mode='zeros' only; .* padding_mode='reflect'"),
        (nn.Conv1d(2, 3, 4, padding="same"), {"input_size": 8}, r"padding='same' needs an even"),
        (nn.Conv2d(2, 3, 3), {"input_size": 8, "dim": 0}, r"dim=0 has no meaning with exact_conv"),
    ],
)  # fmt: skip
def test_bad_exact_conv_setups_are_config_errors(
    layer: nn.Module, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        normlab.spectral_norm(layer, exact_conv=True, **kwargs)


def test_applying_twice_and_missing_tensors_are_config_errors() -> None:
    layer = normlab.spectral_norm(nn.Linear(3, 4))
    with pytest.raises(ConfigError, match=r"already has spectral_norm; applying it twice"):
        normlab.spectral_norm(layer)
    with pytest.raises(ConfigError, match=r"already has spectral_norm"):
        normlab.spectral_norm(layer, exact_conv=True, input_size=3)
    with pytest.raises(ConfigError, match=r"no parameter named 'kernel'"):
        normlab.spectral_norm(nn.Linear(3, 4), name="kernel")
    with pytest.raises(ConfigError, match=r"0-dimensional"):
        module = nn.Module()
        module.scale = nn.Parameter(torch.tensor(2.0))
        normlab.spectral_norm(module, name="scale")


def test_registry_names() -> None:
    entry = registry.lookup_weight("spectral-norm")
    assert entry.name == "spectral_norm" and entry.parametrization is SpectralNorm
    assert registry.lookup_weight("spectralnorm") is entry
    assert normlab.functional.spectral_normalized_weight is spectral_normalized_weight
    assert registry.lookup("sn").name == "switchable_norm"  # the layer alias stays switchable's
