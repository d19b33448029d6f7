"""Contract tests generated from the catalogue: every registered norm gets every row.

References are float64 oracles (tests/oracles.py); the only normlab-vs-normlab comparisons are
the explicit functional-vs-module, layout-equivalence and copy/serialization tests.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import normlab
from catalogue import (
    CASE_IDS,
    CASES,
    Case,
    assert_state_equal,
    close,
    copy_state,
    make_input,
    param_grads,
    randomize_,
    snapshot,
)

F64 = torch.float64
F32 = torch.float32
LAYOUT_TOL = {F32: 2e-6, F64: 1e-12}

cases = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
modes = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
# (case, training) pairs: eval only where it differs from train
MODE_CASES = [(c, True) for c in CASES] + [(c, False) for c in CASES if c.train_eval_differ]
MODE_IDS = [f"{c.id}-{'train' if t else 'eval'}" for c, t in MODE_CASES]
mode_cases = pytest.mark.parametrize(("case", "training"), MODE_CASES, ids=MODE_IDS)


def _train_steps(m: nn.Module, case: Case, steps: int = 2, dtype: torch.dtype = F32) -> None:
    """A few training forwards so running statistics are non-trivial."""
    m.train()
    for i in range(steps):
        m(make_input(case.shapes[-1], dtype, seed=100 + i))


def _as_function(m: nn.Module) -> tuple[Any, list[Tensor]]:
    """(fn(x, *params), detached parameter leaves) for gradcheck via functional_call."""
    names = [name for name, _ in m.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def fn(x: Tensor, *params: Tensor) -> Tensor:
        return torch.func.functional_call(m, dict(zip(names, params, strict=True)), (x,))

    return fn, leaves


def _forward_backward(
    m: nn.Module, x: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Output, input gradient and parameter gradients for upstream gradient g."""
    m.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()  # clone preserves x's memory format
    y = m(x)
    y.backward(g)
    assert x.grad is not None
    return y.detach(), x.grad, param_grads(m)


# -- coverage -------------------------------------------------------------------------------------


def test_every_registered_name_has_a_case() -> None:
    registered = set(normlab.available())
    covered = {c.name for c in CASES}
    assert not registered - covered, f"no catalogue case for {sorted(registered - covered)}"
    assert not covered - registered, f"catalogue names not registered: {covered - registered}"


def test_case_ids_are_unique() -> None:
    assert len(set(CASE_IDS)) == len(CASE_IDS)


# -- smoke: shape, dtype, finiteness --------------------------------------------------------------


@cases
@modes
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_shape_and_dtype_preserved(case: Case, training: bool, dtype: torch.dtype) -> None:
    m = case.make(dtype=dtype).train(training)
    for i, shape in enumerate(case.shapes):
        y = m(make_input(shape, dtype, seed=i))
        assert y.shape == shape
        assert y.dtype == dtype
        assert torch.isfinite(y).all()


@cases
@modes
def test_bf16_smoke(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=torch.bfloat16)).train(training)
    for i, shape in enumerate(case.shapes):
        x = make_input(shape, torch.bfloat16, seed=i)
        expected = case.reference(m, x)  # float64 oracle on the same (rounded) input
        y = m(x)
        assert y.shape == shape
        assert y.dtype == torch.bfloat16
        assert torch.isfinite(y).all()
        close(y.double(), expected, 3e-2, msg=f"bf16 vs float64 oracle, shape {shape}")


# -- modes ----------------------------------------------------------------------------------------


@cases
def test_train_eval_behaviour(case: Case) -> None:
    m = randomize_(case.make(dtype=F64))
    x = make_input(case.shapes[-1], F64, seed=3)
    before = snapshot(m)
    y_train = m.train()(x)
    if case.has_running_stats:
        after = snapshot(m)
        running = [key for key in before if key in ("running_mean", "running_var")]
        assert "running_var" in running
        for key in running:
            assert not torch.equal(after[key], before[key]), key
    else:
        assert_state_equal(snapshot(m), before)
    y_eval = m.eval()(x)
    if case.train_eval_differ:
        assert not torch.allclose(y_train, y_eval, atol=1e-3), "eval must use running stats"
    else:
        close(y_eval, y_train, 1e-12, msg="train and eval must agree")


@cases
@modes
def test_batch_dependence(case: Case, training: bool) -> None:
    """Per-sample norms ignore other samples; BN in training (or untracked) does not."""
    m = randomize_(case.make(dtype=F64)).train(training)
    x = make_input(case.shapes[-1], F64, seed=4)
    other = x.clone()
    other[1:] = make_input(case.shapes[-1], F64, seed=5)[1:] * 3.0 + 1.0
    y, y_other = m(x)[:1], m(other)[:1]
    independent = case.per_sample or (not training and case.has_running_stats)
    if independent:
        close(y_other, y, 1e-12, msg="sample 0 must not depend on the other samples")
        close(m(x[:1]), y, 1e-12, msg="a batch of one must give the same output")
    else:
        assert not torch.allclose(y_other, y, atol=1e-3), "batch statistics must be used"


# -- float64 reference ----------------------------------------------------------------------------


@cases
@modes
def test_forward_matches_float64_oracle(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=F64)).train(training)
    for i, shape in enumerate(case.shapes):
        x = make_input(shape, F64, seed=i)
        expected = case.reference(m, x)  # before the forward: eval reads the running stats
        close(m(x), expected, 1e-12, msg=f"shape {shape}")


# -- autograd -------------------------------------------------------------------------------------


@mode_cases
def test_gradcheck(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=F64)).train(training)
    fn, params = _as_function(m)
    x = make_input(case.grad_shape, F64, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x, *params))


@mode_cases
def test_gradgradcheck(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=F64)).train(training)
    fn, params = _as_function(m)
    x = make_input(case.grad_shape, F64, seed=7).requires_grad_()
    g = torch.randn(case.grad_shape, dtype=F64, generator=torch.Generator().manual_seed(8))
    assert torch.autograd.gradgradcheck(fn, (x, *params), grad_outputs=(g,))


# -- functional twin ------------------------------------------------------------------------------


@cases
@modes
def test_functional_matches_module(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=F64)).train(training)
    for i, shape in enumerate(case.shapes):
        x = make_input(shape, F64, seed=i)
        y_functional = case.functional(m, x)  # first: the module may update its buffers
        close(m(x), y_functional, 1e-13, msg=f"shape {shape}")


@cases
@modes
def test_functional_never_mutates_arguments(case: Case, training: bool) -> None:
    m = randomize_(case.make(dtype=F64)).train(training)
    x = make_input(case.shapes[-1], F64, seed=9)
    tensors = [x, *m.parameters(), *m.buffers()]
    before = [(t.detach().clone(), t._version) for t in tensors]
    case.functional(m, x)
    for t, (value, version) in zip(tensors, before, strict=True):
        assert t._version == version
        assert torch.equal(t, value)


# -- purity ---------------------------------------------------------------------------------------


@cases
def test_eval_forward_leaves_state_unchanged(case: Case) -> None:
    m = randomize_(case.make()).eval()
    before = snapshot(m)
    versions = {name: t._version for name, t in [*m.named_buffers(), *m.named_parameters()]}
    for i, shape in enumerate(case.shapes):
        x = make_input(shape, F32, seed=i).requires_grad_()
        m(x).sum().backward()
    assert_state_equal(snapshot(m), before)
    after = {name: t._version for name, t in [*m.named_buffers(), *m.named_parameters()]}
    assert after == versions


@cases
@modes
def test_forward_does_not_mutate_input(case: Case, training: bool) -> None:
    m = randomize_(case.make()).train(training)
    for i, shape in enumerate(case.shapes):
        x = make_input(shape, F32, seed=i)
        value, version = x.clone(), x._version
        m(x)
        assert x._version == version
        assert torch.equal(x, value)


# -- layout ---------------------------------------------------------------------------------------


@cases
@modes
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_channels_last_matches_contiguous(case: Case, training: bool, dtype: torch.dtype) -> None:
    tol = LAYOUT_TOL[dtype]
    shapes = case.shapes_of_rank(4, 5)
    assert shapes, "the catalogue must give rank-4/5 shapes"
    for i, shape in enumerate(shapes):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        dense = randomize_(case.make(dtype=dtype)).train(training)
        strided = copy.deepcopy(dense)
        x = make_input(shape, dtype, seed=i)
        g = make_input(shape, dtype, seed=50 + i)
        y0, gx0, gp0 = _forward_backward(dense, x, g)
        x_cl, g_cl = x.to(memory_format=fmt), g.to(memory_format=fmt)
        assert not x_cl.is_contiguous()
        y1, gx1, gp1 = _forward_backward(strided, x_cl, g_cl)
        close(y1, y0, tol, msg=f"output, {shape} {fmt}")
        close(gx1, gx0, tol, msg=f"input grad, {shape} {fmt}")
        assert gp1.keys() == gp0.keys()
        for key in gp0:
            close(gp1[key], gp0[key], tol, msg=f"{key} grad, {shape} {fmt}")
        _assert_state_close(strided, dense, tol)


@cases
@modes
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_channel_dim_last_matches_channel_dim_1(
    case: Case, training: bool, dtype: torch.dtype
) -> None:
    tol = LAYOUT_TOL[dtype]
    for i, shape in enumerate(case.shapes):
        first = randomize_(case.make(dtype=dtype)).train(training)
        last = case.make(dtype=dtype, channel_dim=-1).train(training)
        copy_state(first, last)
        x = make_input(shape, dtype, seed=i)
        g = make_input(shape, dtype, seed=60 + i)
        y0, gx0, gp0 = _forward_backward(first, x, g)
        x_last, g_last = x.movedim(1, -1).contiguous(), g.movedim(1, -1).contiguous()
        y1, gx1, gp1 = _forward_backward(last, x_last, g_last)
        assert y1.shape == x_last.shape
        close(y1.movedim(-1, 1), y0, tol, msg=f"output, {shape}")
        close(gx1.movedim(-1, 1), gx0, tol, msg=f"input grad, {shape}")
        assert gp1.keys() == gp0.keys()
        for key in gp0:
            close(gp1[key], gp0[key], tol, msg=f"{key} grad, {shape}")
        _assert_state_close(last, first, tol)


@cases
@modes
def _batch_sliced(shape: tuple[int, ...], seed: int) -> Tensor:
    return make_input((2 * shape[0], *shape[1:]), F64, seed=seed)[::2]


def _last_two_swapped(shape: tuple[int, ...], seed: int) -> Tensor:
    """A view with the last two dims' strides swapped: no memory format has that order."""
    return make_input((*shape[:-2], shape[-1], shape[-2]), F64, seed=seed).transpose(-1, -2)


@cases
@modes
@pytest.mark.parametrize("strided", [_batch_sliced, _last_two_swapped],
                         ids=["batch_sliced", "last_two_swapped"])
def test_strided_input_matches_contiguous(case: Case, training: bool, strided: Callable) -> None:
    """A strided input and upstream gradient (batch-sliced with stride 2, or the last two dims
    transposed) give the contiguous results: output, input and parameter gradients, state."""
    ran = 0
    for i, shape in enumerate(case.shapes):
        dense = randomize_(case.make(dtype=F64)).train(training)
        copied = copy.deepcopy(dense)
        x, g = strided(shape, i), strided(shape, 80 + i)
        assert x.shape == shape
        if x.is_contiguous():  # a swapped dim of size 1 changes no stride that matters
            continue
        ran += 1
        y0, gx0, gp0 = _forward_backward(dense, x.contiguous(), g.contiguous())
        y1, gx1, gp1 = _forward_backward(copied, x, g)
        close(y1, y0, 1e-12, msg=f"output, {shape}")
        close(gx1, gx0, 1e-12, msg=f"input grad, {shape}")
        for key in gp0:
            close(gp1[key], gp0[key], 1e-12, msg=f"{key} grad, {shape}")
        _assert_state_close(copied, dense, 1e-12)
    assert ran, "no shape of the case gives a strided input of this kind"


@cases
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_dim_last"])
def test_fp32_accuracy_with_large_mean_in_every_layout(case: Case, layout: str) -> None:
    """x = 100 + 0.1·z, so κ = |μ|/σ ≈ 1e3: each layout within 50·u·(1 + κ) of float64 (§7).

    A one-pass E[x²] − E[x]² variance loses everything here; a two-pass one loses ~u·κ.
    """
    shape = case.shapes_of_rank(4)[0]
    gen = torch.Generator().manual_seed(12)
    x = (100.0 + 0.1 * torch.randn(shape, generator=gen, dtype=F64)).to(F32)
    m = case.make(channel_dim=-1 if layout == "channel_dim_last" else 1).train()
    expected = case.reference(m, x.movedim(1, -1) if layout == "channel_dim_last" else x)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "channel_dim_last":
        x = x.movedim(1, -1).contiguous()
    kappa = 1.0 + 100.0 / 0.1
    close(m(x).double(), expected, 50 * 6e-8 * kappa, msg=f"{layout}, shape {shape}")


def _assert_state_close(a: nn.Module, b: nn.Module, tol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if sa[key].is_floating_point():
            close(sa[key], sb[key], tol, msg=key)
        else:
            assert torch.equal(sa[key], sb[key]), key


# -- copies and serialization ---------------------------------------------------------------------


def _restored_copies(m: nn.Module, case: Case) -> dict[str, nn.Module]:
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = case.make()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.train(m.training)
    return {
        "deepcopy": copy.deepcopy(m),
        "pickle": pickle.loads(pickle.dumps(m)),
        "torch.save(state_dict)": fresh,
    }


@cases
@modes
def test_copies_and_checkpoints_are_identical(case: Case, training: bool) -> None:
    original = randomize_(case.make())
    _train_steps(original, case)
    original.train(training)
    x = make_input(case.shapes[-1], F32, seed=11)
    for how, restored in _restored_copies(original, case).items():
        assert type(restored) is type(original), how
        assert restored.training == training, how
        assert_state_equal(snapshot(restored), snapshot(original))
        reference = copy.deepcopy(original)
        assert torch.equal(restored(x), reference(x)), how
        assert_state_equal(snapshot(restored), snapshot(reference))


@cases
def test_state_dict_roundtrip_bitwise(case: Case) -> None:
    m = randomize_(case.make())
    _train_steps(m, case)
    fresh = case.make()
    fresh.load_state_dict(m.state_dict())
    assert_state_equal(snapshot(fresh), snapshot(m))
    expected = set()
    if m.affine:
        expected |= {"weight", "bias"}
    if case.has_running_stats:
        expected |= {"running_mean", "running_var", "num_batches_tracked"}
    if case.state_keys is not None:
        expected = set(case.state_keys)
    assert set(m.state_dict()) == expected


# -- repr and factory kwargs ----------------------------------------------------------------------

def _repr_keys(m: nn.Module, case: Case, overrides: dict[str, Any]) -> set[str]:
    """The hyperparameters the repr must show as ``key=value``: the layer's declared
    ``_repr_keys``, and every constructor keyword the case sets that the layer stores under its
    own name (channel_dim, device and dtype aside: checked separately or not hyperparameters)."""
    keys = set(getattr(type(m), "_repr_keys", ()))
    for key in {**case.kwargs, **overrides}:
        if key not in ("channel_dim", "device", "dtype") and hasattr(m, key):
            keys.add(key)
    return keys


@cases
def test_repr_contains_hyperparameters(case: Case) -> None:
    overrides: dict[str, Any] = {"eps": 0.003, "channel_dim": -1}
    takes_momentum = "momentum" in inspect.signature(case.cls).parameters
    if takes_momentum and case.kwargs.get("momentum", 0.1) is not None:
        overrides["momentum"] = 0.3
    m = case.make(**overrides)
    text = repr(m)
    assert text.startswith(case.cls.__name__ + "(")
    assert str(case.num_features) in text
    assert "eps=0.003" in text
    assert "channel_dim=-1" in text
    keys = _repr_keys(m, case, overrides)
    assert {"eps", "affine"} <= keys
    for key in keys:
        assert f"{key}={getattr(m, key)}" in text, f"{key} missing from {text}"


@cases
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_factory_kwargs_reach_params_and_buffers(case: Case, dtype: torch.dtype) -> None:
    m = case.make(device="cpu", dtype=dtype)
    tensors = dict([*m.named_parameters(), *m.named_buffers()])
    for name, t in tensors.items():
        assert t.device.type == "cpu", name
        if name == "num_batches_tracked":
            assert t.dtype == torch.long and t.item() == 0
        elif not t.is_floating_point():  # an integer count, e.g. VBN's reference_size
            assert t.dtype == torch.long, name
        else:
            assert t.dtype == dtype, name
    initial = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
    for name, value in initial.items():
        if tensors.get(name) is not None:
            assert torch.equal(tensors[name], torch.full_like(tensors[name], value)), name
    assert ("weight" in tensors) == bool(m.affine)
    fixed = "running_var" in (case.state_keys or ())  # e.g. FrozenBN's never-updated statistics
    assert ("running_var" in tensors) == (case.has_running_stats or fixed)


@cases
def test_device_kwarg_meta(case: Case) -> None:
    m = case.make(device="meta")
    for name, t in [*m.named_parameters(), *m.named_buffers()]:
        assert t.device.type == "meta", name
