"""Parity with torch.nn wherever a built-in equivalent exists.

Outputs, input gradients, parameter gradients and running buffers after several training steps,
then the eval forward; fp32 with a relative tolerance of 1e-6 scale and fp64 at 1e-12. Also
checks the oracles themselves against torch.nn.functional, so the float64 references used by
the other files are known to be right.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
import oracles
from catalogue import (
    CASES,
    Case,
    TorchTwin,
    close,
    make_input,
    param_grads,
    randomize_,
)

F32, F64 = torch.float32, torch.float64
TOL = {F32: 2e-6, F64: 1e-12}
GRAD_TOL = {F32: 5e-6, F64: 1e-12}  # gradients: sums over the set amplify rounding

TORCH_CASES = [c for c in CASES if c.torch_equivalent is not None]
TORCH_IDS = [c.id for c in TORCH_CASES]
dtypes = pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])


def _step(m: nn.Module, x: Tensor, g: Tensor, adapt: TorchTwin | None = None) -> tuple[Tensor, ...]:
    """One forward/backward; returns (y, dL/dx) in (N, C, *S) layout."""
    m.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_()
    if adapt is None:
        y = m(leaf)
        y.backward(g)
    else:
        y = adapt.from_torch(m(adapt.to_torch(leaf)))
        y.backward(g)
    assert leaf.grad is not None
    return y.detach(), leaf.grad


def _compare_training(
    case: Case, shape: tuple[int, ...], dtype: torch.dtype, steps: int = 3, **kw: object
) -> None:
    """Several training steps then an eval forward; everything compared with torch.nn."""
    assert case.torch_equivalent is not None
    ours = randomize_(case.make(dtype=dtype, **kw)).train()
    twin = case.torch_equivalent(ours, len(shape))
    theirs = twin.module
    tol, grad_tol = TOL[dtype], GRAD_TOL[dtype]
    for step in range(steps + 1):
        training = step < steps
        ours.train(training)
        theirs.train(training)
        batch = (shape[0] + step % 2, *shape[1:])  # batch size varies between steps
        x = make_input(batch, dtype, seed=step)
        g = make_input(batch, dtype, seed=20 + step)
        y0, gx0 = _step(ours, x, g)
        y1, gx1 = _step(theirs, x, g, twin)
        where = f"{'train step ' + str(step) if training else 'eval'}, shape {batch}"
        close(y0, y1, tol, msg=f"output, {where}")
        close(gx0, gx1, grad_tol, msg=f"input grad, {where}")
        ours_grads, theirs_grads = param_grads(ours), param_grads(theirs)
        assert ours_grads.keys() == theirs_grads.keys()
        for key, value in ours_grads.items():
            close(value, theirs_grads[key], grad_tol, msg=f"{key} grad, {where}")
        _compare_buffers(ours, theirs, tol, where)


def _compare_buffers(ours: nn.Module, theirs: nn.Module, tol: float, where: str) -> None:
    theirs_buffers = dict(theirs.named_buffers())
    for key, value in ours.named_buffers():
        if key == "num_batches_tracked" and isinstance(
            theirs, nn.modules.instancenorm._InstanceNorm
        ):
            continue  # torch's InstanceNorm never advances its counter
        assert key in theirs_buffers, key
        if value.is_floating_point():
            close(value, theirs_buffers[key], tol, msg=f"{key}, {where}")
        else:
            assert torch.equal(value, theirs_buffers[key]), f"{key}, {where}"


@pytest.mark.parametrize("case", TORCH_CASES, ids=TORCH_IDS)
@dtypes
def test_parity_with_torch_nn(case: Case, dtype: torch.dtype) -> None:
    for shape in case.shapes:
        _compare_training(case, shape, dtype)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, None], ids=str)
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@dtypes
def test_batch_norm_running_buffers_parity(
    momentum: float | None, rank: int, dtype: torch.dtype
) -> None:
    case = next(c for c in CASES if c.id == "batch_norm")
    shape = next(s for s in case.shapes if len(s) == rank)
    _compare_training(case, shape, dtype, steps=4, momentum=momentum)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0], ids=str)
@pytest.mark.parametrize("rank", [3, 4, 5])
@dtypes
def test_instance_norm_running_buffers_parity(
    momentum: float, rank: int, dtype: torch.dtype
) -> None:
    case = next(c for c in CASES if c.id == "instance_norm-tracked")
    shape = next(s for s in case.shapes if len(s) == rank)
    _compare_training(case, shape, dtype, steps=4, momentum=momentum)


# -- loading torch.nn.BatchNorm{1,2,3}d checkpoints -----------------------------------------------

TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@dtypes
def test_load_torch_batch_norm_state_dict(rank: int, dtype: torch.dtype) -> None:
    shape = {2: (5, 6), 3: (4, 6, 5), 4: (3, 6, 4, 3), 5: (2, 6, 3, 2, 3)}[rank]
    theirs = randomize_(TORCH_BN[rank](6, momentum=0.3).to(dtype))
    for step in range(3):
        theirs(make_input(shape, dtype, seed=step))
    ours = normlab.BatchNorm(6, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ours.eval()
    theirs.eval()
    x = make_input(shape, dtype, seed=9)
    close(ours(x), theirs(x), TOL[dtype], msg="eval output after loading a torch checkpoint")


# -- the oracles themselves agree with torch.nn.functional ----------------------------------------


@pytest.mark.parametrize("shape", [(4, 6), (3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3)], ids=str)
def test_oracles_agree_with_torch_functional(shape: tuple[int, ...]) -> None:
    x = make_input(shape, F64, seed=1)
    gen = torch.Generator().manual_seed(2)
    w = torch.rand(6, generator=gen, dtype=F64) + 0.5
    b = torch.randn(6, generator=gen, dtype=F64)
    rm = torch.randn(6, generator=gen, dtype=F64)
    rv = torch.rand(6, generator=gen, dtype=F64) + 0.5
    tol = 1e-12
    close(
        oracles.batch_norm_ref(x, w, b, training=True), F.batch_norm(x, None, None, w, b, True), tol
    )
    close(
        oracles.batch_norm_ref(x, w, b, rm, rv, training=False),
        F.batch_norm(x, rm, rv, w, b, False),
        tol,
    )
    close(oracles.layer_norm_ref(x, w, b), F.group_norm(x, 1, w, b), tol)
    x_last = x.movedim(1, -1)
    close(
        oracles.layer_norm_ref(x, w, b, per_position=True),
        F.layer_norm(x_last, (6,), w, b).movedim(-1, 1),
        tol,
    )
    close(
        oracles.layer_norm_ref(x_last, w, b, per_position=True, channel_dim=-1),
        F.layer_norm(x_last, (6,), w, b),
        tol,
    )
    close(oracles.group_norm_ref(x, 3, w, b), F.group_norm(x, 3, w, b), tol)
    close(oracles.rms_norm_ref(x, w), F.rms_norm(x_last, (6,), w).movedim(-1, 1), tol)
    if len(shape) > 2:
        close(oracles.instance_norm_ref(x, w, b), F.instance_norm(x, weight=w, bias=b), tol)
        close(
            oracles.instance_norm_ref(x, w, b, rm, rv, use_input_stats=False),
            F.instance_norm(x, rm, rv, w, b, use_input_stats=False),
            tol,
        )


# torch's InstanceNorm maps momentum=None to 0.0, so that pair has no torch counterpart
@pytest.mark.parametrize(
    ("per_instance", "momentum"),
    [(False, 0.1), (False, 1.0), (False, None), (True, 0.1), (True, 1.0)],
    ids=["bn-0.1", "bn-1.0", "bn-None", "in-0.1", "in-1.0"],
)
def test_running_stats_oracle_agrees_with_torch(per_instance: bool, momentum: float | None) -> None:
    batches = [make_input((3 + i, 6, 4, 3), F64, seed=i) for i in range(3)]
    if per_instance:
        torch_layer: nn.Module = nn.InstanceNorm2d(6, momentum=momentum, track_running_stats=True)
    else:
        torch_layer = nn.BatchNorm2d(6, momentum=momentum)
    torch_layer = torch_layer.to(F64).train()
    for x in batches:
        torch_layer(x)
    rm, rv, tracked = oracles.running_stats_ref(batches, momentum, per_instance=per_instance)
    close(rm, torch_layer.running_mean, 1e-12)
    close(rv, torch_layer.running_var, 1e-12)
    if not per_instance:
        assert tracked == torch_layer.num_batches_tracked.item()


# -- CPU autocast ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TORCH_CASES, ids=TORCH_IDS)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cpu_autocast_parity_with_torch_nn(case: Case, low: torch.dtype) -> None:
    """Under ``torch.autocast("cpu")`` with low-precision activations (what a conv before the
    norm hands it), output dtype, values, input gradient and running buffers match torch.nn's."""
    shape = case.shapes_of_rank(4)[0]
    ours = randomize_(case.make()).train()
    twin = case.torch_equivalent(ours, len(shape))  # type: ignore[misc]
    x, g = make_input(shape, F32, seed=3).to(low), make_input(shape, F32, seed=4).to(low)
    outputs = []
    for module, adapt in ((ours, None), (twin.module, twin)):
        with torch.autocast("cpu", dtype=low), warnings.catch_warnings():
            if adapt is not None:  # torch's RMSNorm warns that it leaves its fused kernel
                warnings.filterwarnings("ignore", "Mismatch dtype between input and weight")
            outputs.append(_step(module, x, g, adapt))
    (y0, gx0), (y1, gx1) = outputs
    assert y0.dtype == y1.dtype, (y0.dtype, y1.dtype)
    assert gx0.dtype == gx1.dtype
    close(y0.float(), y1.float(), 2e-2, msg="output")
    close(gx0.float(), gx1.float(), 5e-2, msg="input grad")
    _compare_buffers(ours, twin.module, 1e-2, "after one autocast step")
