"""Singular Value Bounding (Jia et al. 2017, METHODS.md §16).

The oracle is the paper's projection written with numpy: each layer's weight as the
(units, fan-in) matrix the paper bounds (conv: C_out × C_in·kh·kw; ConvTranspose: its output
channels first, so C_out × C_in·kh·kw too; one block per group), a float64 SVD, singular values
clipped to [1/(1+ε), 1+ε]. Done-when: after `bound_singular_values_` every singular value of every
layer, measured with torch.linalg.svdvals in float64 on the stored (float32) weight, lies in
[1/(1+ε), 1+ε] with no tolerance.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import normlab
import normlab.functional as NF
from normlab import registry
from normlab.errors import ConfigError, InputError

# -- oracle ----------------------------------------------------------------------------------------


def _blocks(weight: torch.Tensor, transposed: bool, groups: int) -> list[np.ndarray]:
    """The (units, fan-in) matrix of each group, by hand: groups split dim 0 of every weight."""
    w = weight.detach().double().numpy()
    out = []
    for chunk in np.split(w, groups, axis=0):
        if transposed:  # (C_in/g, C_out/g, *k): the units are the output channels, dim 1
            chunk = np.swapaxes(chunk, 0, 1)
        out.append(chunk.reshape(chunk.shape[0], -1))
    return out


def _from_blocks(
    blocks: list[np.ndarray], like: torch.Tensor, transposed: bool, groups: int
) -> torch.Tensor:
    """The inverse of `_blocks`: (units, fan-in) matrices back in ``like``'s layout."""
    pieces = []
    for m, chunk in zip(blocks, np.split(like.detach().numpy(), groups, axis=0), strict=True):
        if transposed:
            swapped = np.swapaxes(chunk, 0, 1)
            pieces.append(np.swapaxes(m.reshape(swapped.shape), 0, 1))
        else:
            pieces.append(m.reshape(chunk.shape))
    return torch.from_numpy(np.concatenate(pieces, axis=0))


def _layout(layer: nn.Module) -> tuple[bool, int]:
    return isinstance(layer, nn.modules.conv._ConvTransposeNd), getattr(layer, "groups", 1)


def svb_oracle(layer: nn.Module, eps: float) -> torch.Tensor:
    """W = UΣVᵀ per block, Σ clipped to [1/(1+ε), 1+ε], in float64."""
    transposed, groups = _layout(layer)
    bounded = []
    for m in _blocks(layer.weight, transposed, groups):
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        bounded.append((u * np.clip(s, 1 / (1 + eps), 1 + eps)) @ vt)
    return _from_blocks(bounded, layer.weight.double(), transposed, groups)


def singular_values(layer: nn.Module) -> torch.Tensor:
    blocks = _blocks(layer.weight, *_layout(layer))
    return torch.cat([torch.linalg.svdvals(torch.from_numpy(b)) for b in blocks])


def spread_(layer: nn.Module, seed: int = 0) -> nn.Module:
    """Give every block singular values from 20 down to 1e-3 (random singular vectors), far
    outside [1/(1+ε), 1+ε] on both sides."""
    rng = np.random.default_rng(seed)
    transposed, groups = _layout(layer)
    blocks = []
    for m in _blocks(layer.weight, transposed, groups):
        r = min(m.shape)
        u = np.linalg.qr(rng.standard_normal((m.shape[0], r)))[0]
        v = np.linalg.qr(rng.standard_normal((m.shape[1], r)))[0]
        blocks.append((u * np.geomspace(20.0, 1e-3, r)) @ v.T)
    with torch.no_grad():
        layer.weight.copy_(_from_blocks(blocks, layer.weight.double(), transposed, groups))
    return layer


LAYERS = {
    "linear_wide": lambda: nn.Linear(30, 50),
    "linear_narrow": lambda: nn.Linear(64, 16),
    "conv1d": lambda: nn.Conv1d(4, 6, 5),
    "conv2d": lambda: nn.Conv2d(3, 8, 3),
    "conv2d_many_out": lambda: nn.Conv2d(2, 24, 3),
    "conv3d": lambda: nn.Conv3d(2, 4, 2),
    "conv2d_groups": lambda: nn.Conv2d(8, 12, 3, groups=4),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(4, 6, 3),
    "conv_transpose2d_stride": lambda: nn.ConvTranspose2d(12, 3, 2, stride=2),
    "conv_transpose2d_groups": lambda: nn.ConvTranspose2d(4, 6, 3, groups=2),
}


# -- done-when: the bound holds on every layer ----------------------------------------------------


@pytest.mark.parametrize("eps", [0.05, 0.5])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_singular_value_within_bound(kind: str, eps: float) -> None:
    layer = spread_(LAYERS[kind]())
    before = singular_values(layer)
    assert before.max() > 1 + eps and before.min() < 1 / (1 + eps)  # the projection must act
    normlab.bound_singular_values_(layer, eps=eps)
    after = singular_values(layer)  # float64 svdvals of the stored float32 weight
    assert layer.weight.dtype == torch.float32
    assert after.min() >= 1 / (1 + eps) and after.max() <= 1 + eps, (after.min(), after.max())


def test_whole_model_every_layer_and_report() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Sequential(nn.Linear(16, 20), nn.Linear(20, 5)),
    )
    targets = {"0": model[0], "2": model[2], "5.0": model[5][0], "5.1": model[5][1]}
    for i, layer in enumerate(targets.values()):
        spread_(layer, seed=i)
    before = {k: singular_values(m) for k, m in targets.items()}
    report = normlab.bound_singular_values_(model, eps=0.2)
    assert set(report) == set(targets)
    for key, layer in targets.items():
        after = singular_values(layer)
        assert after.min() >= 1 / 1.2 and after.max() <= 1.2
        r = report[key]
        assert r.largest_before == pytest.approx(float(before[key].max()), rel=1e-9)
        assert r.smallest_before == pytest.approx(float(before[key].min()), rel=1e-9)
        assert r.largest_after == pytest.approx(float(after.max()), rel=1e-9)
        assert r.smallest_after == pytest.approx(float(after.min()), rel=1e-9)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_matches_float64_oracle(kind: str) -> None:
    layer = spread_(LAYERS[kind]()).double()
    expected = svb_oracle(layer, 0.3)
    normlab.bound_singular_values_(layer, eps=0.3)
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=1e-10, atol=1e-12)


def test_functional_is_pure_and_matches_the_layer_path() -> None:
    layer = spread_(nn.ConvTranspose2d(4, 6, 3, groups=2))
    original = layer.weight.detach().clone()
    out = NF.bounded_singular_values(layer.weight, 0.1, dim=1, groups=2)
    assert torch.equal(layer.weight, original)  # pure
    assert not out.requires_grad and out.dtype == original.dtype and out.shape == original.shape
    normlab.bound_singular_values_(layer, eps=0.1)
    assert torch.equal(layer.weight.detach(), out)


def test_values_inside_the_bound_are_left_alone() -> None:
    layer = nn.Linear(8, 8).double()
    nn.init.orthogonal_(layer.weight)  # the paper's init: every singular value 1
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.9, 1.1, 8, dtype=torch.float64)[:, None])
    before = layer.weight.detach().clone()
    normlab.bound_singular_values_(layer, eps=0.2)
    torch.testing.assert_close(layer.weight.detach(), before, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (8, 8)])
def test_small_eps_gives_semi_orthogonal_weights(shape: tuple[int, int]) -> None:
    """METHODS §16 claim 2: with ε → 0, WWᵀ = I (or WᵀW = I) on the smaller side."""
    layer = spread_(nn.Linear(shape[1], shape[0]).double())
    normlab.bound_singular_values_(layer, eps=1e-9)
    w = layer.weight.detach()
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w
    torch.testing.assert_close(gram, torch.eye(min(shape), dtype=w.dtype), atol=1e-7, rtol=0)


def test_in_place_keeps_the_parameter_object() -> None:
    layer = spread_(nn.Linear(5, 7))
    param = layer.weight
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    normlab.bound_singular_values_(layer)
    assert layer.weight is param and param.requires_grad
    assert optimizer.param_groups[0]["params"][0] is param


def test_explicit_modules_and_zero_size_weights() -> None:
    a, b = spread_(nn.Linear(6, 4)), spread_(nn.Conv2d(2, 3, 3))
    with warnings.catch_warnings():  # torch warns that initializing a 0-element weight is a no-op
        warnings.simplefilter("ignore")
        empty = nn.Linear(0, 3)
    untouched = spread_(nn.Linear(6, 4), seed=3)
    kept = untouched.weight.detach().clone()
    report = normlab.bound_singular_values_([a, b, empty], eps=0.1)
    assert set(report) == {"modules[0]", "modules[1]"}
    assert torch.equal(untouched.weight, kept)


def test_orthogonal_init_is_already_bounded() -> None:
    layer = nn.Conv2d(4, 8, 3)
    nn.init.orthogonal_(layer.weight)
    s = singular_values(layer)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-5)
    report = normlab.bound_singular_values_(layer, eps=0.01)
    assert math.isclose(report["Conv2d"].largest_after, 1.0, abs_tol=1e-5)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0, 0.0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_invalid_eps(eps: object) -> None:
    layer = spread_(nn.Linear(3, 3))
    before = layer.weight.detach().clone()
    with pytest.raises(ConfigError, match=r"eps must be a positive finite number.*got eps="):
        normlab.bound_singular_values_(layer, eps=eps)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps"):
        NF.bounded_singular_values(layer.weight, eps)  # type: ignore[arg-type]
    assert torch.equal(layer.weight, before)


@pytest.mark.parametrize("bad", [torch.zeros(3, 3), None, "model", 3.0])
def test_not_a_module(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"must be a torch\.nn\.Module"):
        normlab.bound_singular_values_(bad)  # type: ignore[arg-type]


def test_explicit_list_with_a_non_target_layer() -> None:
    with pytest.raises(ConfigError, match=r"modules\[1\] is a BatchNorm1d"):
        normlab.bound_singular_values_([nn.Linear(2, 2), nn.BatchNorm1d(2)])
    with pytest.raises(ConfigError, match=r"modules\[1\].*torch\.nn\.Module"):
        normlab.bound_singular_values_([nn.Linear(2, 2), torch.zeros(2, 2)])  # type: ignore[list-item]


def test_nothing_to_bound() -> None:
    with pytest.raises(ConfigError, match=r"found no nn\.Linear"):
        normlab.bound_singular_values_(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_parametrized_weight_is_refused_and_nothing_changes() -> None:
    model = nn.Sequential(spread_(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4)))
    parametrizations.weight_norm(model[1][0])
    first = model[0].weight.detach().clone()
    with pytest.raises(ConfigError, match=r"layer '1\.0' .* parametrized weight \(_WeightNorm\)"):
        normlab.bound_singular_values_(model)
    assert torch.equal(model[0].weight, first)  # refused before any write


def test_lazy_layer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"lazy.*forward pass first"):
        normlab.bound_singular_values_(nn.Sequential(nn.LazyLinear(3)))


def test_functional_bad_weights() -> None:
    with pytest.raises(InputError, match="at least 2 dimensions"):
        NF.bounded_singular_values(torch.ones(4), 0.1)
    with pytest.raises(InputError, match="floating-point"):
        NF.bounded_singular_values(torch.ones(4, 4, dtype=torch.long), 0.1)
    with pytest.raises(InputError, match="NaN or Inf"):
        NF.bounded_singular_values(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 0.1)
    with pytest.raises(ConfigError, match="groups must be a positive int dividing"):
        NF.bounded_singular_values(torch.ones(6, 4), 0.1, groups=4)
    with pytest.raises(ConfigError, match="dim=2 is out of range"):
        NF.bounded_singular_values(torch.ones(6, 4), 0.1, dim=2)
    with pytest.raises(ConfigError, match="dim=None"):
        NF.bounded_singular_values(torch.ones(6, 4), 0.1, dim=None)  # type: ignore[arg-type]


def test_registry_entry() -> None:
    entry = registry.lookup_weight("svb")
    assert entry.name == "singular_value_bounding" and entry.apply is None
    assert "arXiv:1611.06013" in entry.paper
    assert normlab.bound_singular_values_ in entry.exports
    assert NF.bounded_singular_values in entry.functional
    assert "singular_value_bounding" in normlab.available("weight")
