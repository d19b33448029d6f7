"""Frozen Batch Normalization: what is unique to it (RELIABILITY rows 13, 14, 77, 102, 103).

`test_frozen_equals_bn_eval` is bitwise against torch.nn.BatchNorm*d.eval() on CPU; the other
expected values come from the float64 oracle in oracles_batch_family_bn.py. The generic
contract tests run on the catalogue cases in cases_frozen_batch_norm.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normlab
import normlab.functional as NF
from catalogue import close, make_input, output_and_grads, randomize_
from normlab.cli import main as cli_main
from normlab.errors import ConfigError, InputError, NormlabError
from oracles_batch_family_bn import frozen_batch_norm_ref

F32, F64 = torch.float32, torch.float64
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
SHAPES = [(5, 6), (4, 6, 7), (4, 6, 5, 3), (2, 6, 3, 2, 4)]


def _trained_bn(shape: tuple[int, ...], dtype: torch.dtype = F32, **kw: object) -> nn.Module:
    """A torch BN with non-trivial statistics and affine, in eval mode."""
    bn = TORCH_BN[len(shape)](shape[1], **kw).to(dtype)
    with torch.no_grad():
        for step in range(3):
            bn(make_input(shape, dtype, seed=step) * 2 + 1)
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
    return bn.eval()


@pytest.fixture(params=["small", "large"])
def frozen_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both backward compositions: one broadcast multiply (up to `_SMALL` elements) and the
    BN-inference kernel pass."""
    import normlab.norms.frozen_batch_norm as fbn

    monkeypatch.setattr(fbn, "_SMALL", 1 << 40 if request.param == "small" else -1)
    return str(request.param)


# -- bitwise equality with BatchNorm eval (pytorch/vision#2169, #43614) ----------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("how", ["from_batch_norm", "load_state_dict"])
def test_frozen_equals_bn_eval(
    shape: tuple[int, ...], affine: bool, how: str, frozen_path: str
) -> None:
    bn = _trained_bn(shape, eps=1e-3, affine=affine)
    bn.requires_grad_(False)
    if how == "from_batch_norm":
        frozen = normlab.FrozenBatchNorm.from_batch_norm(bn)
    else:
        frozen = normlab.FrozenBatchNorm(shape[1], eps=1e-3, affine=affine)
        frozen.load_state_dict(bn.state_dict())
    frozen.train()  # training mode changes nothing
    for seed in range(3):
        x, up = make_input(shape, F32, seed=10 + seed), make_input(shape, F32, seed=20 + seed)
        y0, gx0, _ = output_and_grads(frozen, x, up)
        y1, gx1, _ = output_and_grads(bn, x, up)
        assert torch.equal(y0, y1), "output differs from BatchNorm.eval()"
        # dy·(γ/σ) here, (dy/σ)·γ in ATen's eval backward: the same product up to an ulp or two
        torch.testing.assert_close(gx0, gx1, rtol=3e-7, atol=0)
        close(y0.double(), frozen_batch_norm_ref(x, frozen.weight, frozen.bias,
                                                 frozen.running_mean, frozen.running_var,
                                                 eps=1e-3), 1e-6)


def test_frozen_equals_bn_eval_channels_last_and_trainable_affine() -> None:
    shape = (4, 6, 5, 3)
    bn = _trained_bn(shape)
    frozen = normlab.FrozenBatchNorm.from_batch_norm(bn, trainable_affine=True).train()
    x = make_input(shape, F32, seed=1).to(memory_format=torch.channels_last)
    up = make_input(shape, F32, seed=2).to(memory_format=torch.channels_last)
    y0, gx0, gp0 = output_and_grads(frozen, x, up)
    y1, gx1, gp1 = output_and_grads(bn, x, up)
    assert torch.equal(y0, y1)
    assert torch.equal(gx0, gx1)
    assert gp0.keys() == gp1.keys() == {"weight", "bias"}
    for key in gp0:
        assert torch.equal(gp0[key], gp1[key])


def test_channel_dim_last_matches_bn_eval_on_nhwc_data() -> None:
    bn = _trained_bn((4, 6, 5, 3))
    frozen = normlab.FrozenBatchNorm.from_batch_norm(bn)
    frozen_last = normlab.FrozenBatchNorm(6, channel_dim=-1)
    frozen_last.load_state_dict(frozen.state_dict())
    x = make_input((4, 6, 5, 3), F32, seed=3)
    assert torch.equal(frozen_last(x.movedim(1, -1)).movedim(-1, 1), bn(x))


# -- frozen: .train() changes nothing -------------------------------------------------------------


@pytest.mark.parametrize("trainable_affine", [False, True], ids=["frozen_affine", "trainable"])
def test_training_steps_leave_statistics_unchanged(trainable_affine: bool) -> None:
    m = randomize_(normlab.FrozenBatchNorm(6, trainable_affine=trainable_affine)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    params = list(m.parameters())
    assert len(params) == (2 if trainable_affine else 0)
    assert all(not b.requires_grad for b in m.buffers())
    if trainable_affine:
        opt = torch.optim.SGD(params, lr=0.1)
    for seed in range(3):
        x = make_input((4, 6, 3, 2), F32, seed=seed).requires_grad_()
        m(x).square().sum().backward()
        if trainable_affine:
            opt.step()
            opt.zero_grad()
    after = m.state_dict()
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(after[key], before[key]), key
    for key in ("weight", "bias"):
        assert torch.equal(after[key], before[key]) != trainable_affine, key


def test_trainable_affine_grads_match_float64() -> None:
    """dγ = Σ dy·x̂ and dβ = Σ dy over (N, *S), x̂ with the frozen statistics."""
    m = randomize_(normlab.FrozenBatchNorm(6, trainable_affine=True, dtype=F64))
    assert isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
    x, up = make_input((4, 6, 5), F64, seed=4), make_input((4, 6, 5), F64, seed=5)
    m(x).backward(up)
    xhat = (x - m.running_mean.view(1, -1, 1)) / torch.sqrt(m.running_var.view(1, -1, 1) + m.eps)
    close(m.weight.grad, (up * xhat).sum((0, 2)), 1e-12)
    close(m.bias.grad, up.sum((0, 2)), 1e-12)


_LARGE = (4, 8, 96, 96)  # more elements than the small-map switch (2**18): the Function path


def test_large_input_double_backward_is_the_scale_times_the_direction() -> None:
    """y = a·x + b with a = γ/sqrt(σ̂² + ε) is linear: ∂L/∂x = a·dy, and differentiating that
    (create_graph=True) along h w.r.t. dy gives a·h, on the layer's one-pass Function path."""
    m = randomize_(normlab.FrozenBatchNorm(8, dtype=F64))
    x = make_input(_LARGE, F64, seed=1).requires_grad_(True)
    dy = make_input(_LARGE, F64, seed=2).requires_grad_(True)
    h = make_input(_LARGE, F64, seed=3)
    (gx,) = torch.autograd.grad(m(x), x, dy, create_graph=True)
    a = (m.weight / torch.sqrt(m.running_var + m.eps)).view(1, -1, 1, 1)
    close(gx, a * dy, 1e-12)
    (gdy,) = torch.autograd.grad(gx, dy, h)
    close(gdy, a * h, 1e-12)


def test_large_input_gradient_is_the_scale_times_dy() -> None:
    """First order on the one-pass Function path (no graph): ∂L/∂x = a·dy per channel."""
    m = randomize_(normlab.FrozenBatchNorm(8, dtype=F64))
    x = make_input(_LARGE, F64, seed=1).requires_grad_(True)
    dy = make_input(_LARGE, F64, seed=2)
    m(x).backward(dy)
    a = (m.weight / torch.sqrt(m.running_var + m.eps)).view(1, -1, 1, 1)
    close(x.grad, a * dy, 1e-12)


def test_large_input_trainable_affine_gets_its_gradients() -> None:
    """A trainable γ, β on a large input (where a constant affine takes the one-pass Function):
    dγ = Σ dy·x̂, dβ = Σ dy."""
    m = randomize_(normlab.FrozenBatchNorm(8, trainable_affine=True, dtype=F64))
    x, up = make_input(_LARGE, F64, seed=4), make_input(_LARGE, F64, seed=5)
    m(x).backward(up)
    view = (1, -1, 1, 1)
    xhat = (x - m.running_mean.view(view)) / torch.sqrt(m.running_var.view(view) + m.eps)
    close(m.weight.grad, (up * xhat).sum((0, 2, 3)), 1e-10)
    close(m.bias.grad, up.sum((0, 2, 3)), 1e-10)


# -- freezing an existing layer ----------------------------------------------------------------


def _sources() -> dict[str, nn.Module]:
    bn2 = _trained_bn((4, 6, 3, 2))
    nl = randomize_(normlab.BatchNorm(6, eps=1e-4, channel_dim=-1))
    nl.num_batches_tracked.fill_(7)
    ghost = randomize_(normlab.GhostBatchNorm(6, ghost_batch_size=2, eps=3e-5))
    half = _trained_bn((4, 6, 3), dtype=F64).half()
    sync = nn.SyncBatchNorm(6)
    sync.load_state_dict(bn2.state_dict())
    return {
        "BatchNorm2d": bn2,
        "BatchNorm1d_no_affine": _trained_bn((5, 6), affine=False),
        "BatchNorm3d_double": _trained_bn((2, 6, 2, 2, 2), dtype=F64),
        "BatchNorm1d_half": half,
        "SyncBatchNorm": sync.eval(),
        "normlab.BatchNorm_channel_dim_last": nl.eval(),
        "normlab.GhostBatchNorm": ghost.train(),
        "normlab.BatchRenorm": randomize_(normlab.BatchRenorm(6)).eval(),
        "normlab.FrozenBatchNorm": randomize_(normlab.FrozenBatchNorm(6, eps=2e-5)),
    }


@pytest.mark.parametrize("name", list(_sources()))
def test_from_batch_norm_copies_everything_bitwise(name: str) -> None:
    source = _sources()[name]
    state = {k: v.clone() for k, v in source.state_dict().items()}
    frozen = normlab.FrozenBatchNorm.from_batch_norm(source)
    assert frozen.eps == source.eps
    assert frozen.training == source.training
    assert frozen.channel_dim == getattr(source, "channel_dim", 1)
    assert frozen.affine == (source.weight is not None)
    assert list(frozen.parameters()) == []
    copied = frozen.state_dict()
    for key, value in state.items():
        assert copied[key].dtype == value.dtype, key
        assert torch.equal(copied[key], value), key
        assert copied[key].data_ptr() != value.data_ptr(), f"{key} must be a copy"
    for key, value in source.state_dict().items():  # the source is not modified
        assert torch.equal(value, state[key]), key
    if name in ("BatchNorm1d_half", "SyncBatchNorm"):
        return  # no CPU fp16 BN / no SyncBN forward to compare with here
    x = make_input((3, 6, 4, 2) if "3d" not in name else (3, 6, 2, 2, 2),
                   source.running_mean.dtype, seed=6)
    if name.startswith("BatchNorm1d"):
        x = x.flatten(2) if "affine" not in name else x[:, :, 0, 0]
    if getattr(source, "channel_dim", 1) == -1:
        x = x.movedim(1, -1)
    frozen.train()
    assert torch.equal(frozen(x), source.eval()(x)), "must equal the source's eval output"


def test_from_batch_norm_can_keep_the_affine_trainable() -> None:
    bn = _trained_bn((4, 6, 3))
    frozen = normlab.FrozenBatchNorm.from_batch_norm(bn, trainable_affine=True)
    names = [n for n, p in frozen.named_parameters() if p.requires_grad]
    assert names == ["weight", "bias"]
    assert torch.equal(frozen.weight, bn.weight) and frozen.weight is not bn.weight


_UNTRACKED = "it keeps no running statistics (track_running_stats=False)"
_NOT_BN = "it is not a BatchNorm layer whose inference function is BN's"
# the fix every "nothing to freeze" error ends with
_FREEZE_FIX = (
    "Pass a BatchNorm with running statistics (track_running_stats=True), e.g. "
    "torch.nn.BatchNorm2d or normlab.BatchNorm, or build FrozenBatchNorm(num_features) and load "
    "a state_dict."
)
_EPS_FIX = (
    "its eps is 0.0, and a frozen BN needs eps > 0 (with eps=0 a running_var that is 0, e.g. "
    "underflowed in fp16, gives inf/NaN). Set a positive eps on the source first (e.g. bn.eps "
    "= 1e-5, which changes its output slightly) or build FrozenBatchNorm(num_features, eps=...) "
    "and load its state_dict."
)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (nn.BatchNorm2d(4, track_running_stats=False), f"{_UNTRACKED}. {_FREEZE_FIX}"),
        (normlab.BatchNorm(4, track_running_stats=False), f"{_UNTRACKED}. {_FREEZE_FIX}"),
        (nn.Linear(4, 4), f"{_NOT_BN}. {_FREEZE_FIX}"),
        (normlab.LayerNorm(4), f"{_NOT_BN}. {_FREEZE_FIX}"),
        (normlab.SwitchableNorm(4), f"{_NOT_BN}. {_FREEZE_FIX}"),
        (nn.LazyBatchNorm2d(), f"it is a lazy layer that has not seen input. {_FREEZE_FIX}"),
        (nn.BatchNorm2d(4, eps=0.0), _EPS_FIX),
    ],
    ids=["torch_untracked", "normlab_untracked", "linear", "layer_norm", "switchable", "lazy",
         "eps_zero"],
)
def test_from_batch_norm_rejects_what_cannot_be_frozen(source: nn.Module, reason: str) -> None:
    """The error names the source, what is wrong with it and the way out, word for word."""
    with pytest.raises(ConfigError) as excinfo:
        normlab.FrozenBatchNorm.from_batch_norm(source)
    expected = f"FrozenBatchNorm.from_batch_norm: cannot freeze {type(source).__name__}: {reason}"
    assert str(excinfo.value) == expected


def test_from_batch_norm_keeps_the_trainable_choice_in_the_layer() -> None:
    frozen = normlab.FrozenBatchNorm.from_batch_norm(_trained_bn((4, 6, 3)), trainable_affine=True)
    assert frozen.trainable_affine is True and "trainable_affine=True" in repr(frozen)


def test_layer_attributes_mirror_a_tracked_torch_batch_norm() -> None:
    """What tools read off a BN (surgery, torch's update_bn-style loops): no momentum, tracked
    statistics, a long counter at 0, every buffer on the requested device."""
    frozen = normlab.FrozenBatchNorm(6)
    assert list(frozen.parameters()) == [], "frozen affine by default"
    assert frozen.momentum is None and frozen.track_running_stats is True
    assert frozen.num_batches_tracked.dtype == torch.long
    assert int(frozen.num_batches_tracked) == 0
    meta = normlab.FrozenBatchNorm(6, device="meta", dtype=F64)
    for name, t in meta.named_buffers():
        assert t.device.type == "meta", name
    assert meta.running_var.dtype == F64 and meta.num_batches_tracked.dtype == torch.long


def test_affine_false_has_no_weight_and_bias_even_when_trainable() -> None:
    for trainable in (False, True):
        frozen = normlab.FrozenBatchNorm(6, affine=False, trainable_affine=trainable)
        assert frozen.weight is None and frozen.bias is None
        assert list(frozen.parameters()) == []
        # the None entries come last: torch.export (2.13, non-strict) numbers the root's
        # buffers counting the None ones and runs off its list when one comes first
        assert list(frozen._buffers)[:3] == ["running_mean", "running_var", "num_batches_tracked"]
        assert all(frozen._buffers[k] is not None for k in list(frozen._buffers)[:3])


def test_fp16_gradient_with_large_scale_stays_finite() -> None:
    """a = γ/sqrt(σ̂² + ε) is formed in float32 for fp16 input: γ = 1000 over σ̂² = 0 gives
    a ≈ 3.2e5, beyond fp16's 65504, while dy·a is well inside it."""
    frozen = normlab.FrozenBatchNorm(2, dtype=torch.float16)
    with torch.no_grad():
        frozen.running_var.zero_()
        frozen.weight.fill_(1000.0)
    x = torch.full((3, 2, 4), 1e-3, dtype=torch.float16, requires_grad=True)
    up = torch.full((3, 2, 4), 1e-3, dtype=torch.float16)
    frozen(x).backward(up)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    expected = 1e-3 * 1000.0 / math.sqrt(1e-5)
    torch.testing.assert_close(x.grad.float(), torch.full((3, 2, 4), expected), rtol=2e-3, atol=0)


# -- state dicts (interchangeable with torch.nn BN; value-preserving) ------------------------------


def test_state_dicts_are_interchangeable_with_torch_batch_norm() -> None:
    bn = _trained_bn((4, 6, 3, 2))
    frozen = normlab.FrozenBatchNorm(6)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked present: accepted
    assert int(frozen.num_batches_tracked) == 3
    back = nn.BatchNorm2d(6)
    back.load_state_dict(frozen.state_dict())  # strict, both ways
    for key, value in bn.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    nl = normlab.BatchNorm(6)
    nl.load_state_dict(frozen.state_dict())
    frozen.load_state_dict(nl.state_dict())


def test_checkpoint_without_counter_loads() -> None:
    """torchvision / detectron2 FrozenBatchNorm2d state dicts have no num_batches_tracked."""
    bn = _trained_bn((4, 6, 3, 2))
    state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    frozen = normlab.FrozenBatchNorm(6)
    frozen.num_batches_tracked.fill_(7)
    frozen.load_state_dict(state)  # strict
    x = make_input((2, 6, 3, 2), F32, seed=7)
    assert torch.equal(frozen(x), bn(x))
    assert int(frozen.num_batches_tracked) == 7  # kept, not reset (torch.nn BN does the same)


@pytest.mark.parametrize("dtype", [F32, torch.float16], ids=["fp32", "fp16"])
def test_loading_preserves_tiny_variances(dtype: torch.dtype) -> None:
    """No ε-subtracting migration (facebookresearch/detectron2 PR #3160): values load as is."""
    tiny = torch.tensor([0.0, 1e-30, 1e-8, 6e-8, 1e-3, 1.0], dtype=F32).to(dtype)
    state = normlab.FrozenBatchNorm(6, dtype=dtype).state_dict()
    state["running_var"] = tiny.clone()
    frozen = normlab.FrozenBatchNorm(6, dtype=dtype)
    frozen.load_state_dict(state)
    assert torch.equal(frozen.running_var, tiny)
    y = frozen(torch.randn(3, 6, 4).to(dtype))
    assert torch.isfinite(y).all(), "running_var = 0 must give finite output (eps > 0)"


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_load_rejects_invalid_statistics(bad: float) -> None:
    state = normlab.FrozenBatchNorm(6).state_dict()
    state["running_var"] = state["running_var"].clone()
    state["running_var"][2] = bad
    frozen = normlab.FrozenBatchNorm(6)
    with pytest.raises(NormlabError, match="running_var"):
        frozen.load_state_dict(state)
    assert torch.equal(frozen.running_var, torch.ones(6))


# -- eps (pytorch/vision#2599, PR #2933) -----------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -1e-5, math.nan, math.inf, None], ids=repr)
def test_eps_must_be_positive(eps: object) -> None:
    with pytest.raises(ConfigError, match=rf"eps must be a positive finite float; got {eps!r}"):
        normlab.FrozenBatchNorm(6, eps=eps)
    with pytest.raises(ConfigError, match="eps must be a positive finite float"):
        NF.frozen_batch_norm(torch.randn(2, 6), torch.zeros(6), torch.ones(6), eps=eps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_zero_variance_in_low_precision_is_finite(dtype: torch.dtype) -> None:
    m = normlab.FrozenBatchNorm(4, dtype=dtype)
    with torch.no_grad():
        m.running_var.zero_()
    x = torch.randn(3, 4, 5).to(dtype).requires_grad_()
    y = m(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# -- low-precision backward (NVIDIA/apex#122) ------------------------------------------------------


@pytest.mark.parametrize("trainable_affine", [False, True], ids=["frozen_affine", "trainable"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_frozen_bn_backward_low_precision(dtype: torch.dtype, trainable_affine: bool) -> None:
    ref = randomize_(normlab.FrozenBatchNorm(6, trainable_affine=trainable_affine))
    low = normlab.FrozenBatchNorm(6, trainable_affine=trainable_affine, dtype=dtype)
    low.load_state_dict(ref.state_dict())
    x = make_input((4, 6, 5, 3), F32, seed=8).to(dtype)
    up = make_input((4, 6, 5, 3), F32, seed=9).to(dtype)
    y0, gx0, gp0 = output_and_grads(low, x, up)
    y1, gx1, gp1 = output_and_grads(ref, x.float(), up.float())
    assert y0.dtype == gx0.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    close(y0.float(), y1, tol, msg="output")
    close(gx0.float(), gx1, tol, msg="input grad")
    assert gp0.keys() == gp1.keys()
    for a, b in ((gp0[key], gp1[key]) for key in gp0):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol * float(b.abs().max()))
    # fp32 layer on low-precision input (autocast-style mixed precision)
    y2, gx2, _ = output_and_grads(ref, x, up)
    assert y2.dtype == gx2.dtype == dtype
    close(gx2.float(), gx1, tol)


# -- functional, registry, CLI ---------------------------------------------------------------------


def test_functional_is_bn_eval_and_takes_no_statistic_gradients() -> None:
    bn = _trained_bn((4, 6, 3))
    mean = bn.running_mean.clone().requires_grad_()
    x = make_input((4, 6, 3), F32, seed=10)
    y = NF.frozen_batch_norm(x, mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
    assert torch.equal(y, bn(x))
    y.sum().backward()
    assert mean.grad is None, "the statistics are constants"
    for name, args in (("running_mean", ([0.0] * 6, bn.running_var)),
                       ("running_var", (bn.running_mean, None))):
        with pytest.raises(InputError) as excinfo:
            NF.frozen_batch_norm(x, *args)  # type: ignore[arg-type]
        got = "list" if name == "running_mean" else "NoneType"
        assert str(excinfo.value) == (
            f"frozen_batch_norm: {name} must be a tensor of per-channel statistics; got "
            f"{got}. Pass the running statistics of a trained BatchNorm.")
    with pytest.raises(InputError, match=r"^frozen_batch_norm expected .*\(N, 5, \*S\)"):
        NF.frozen_batch_norm(x, torch.zeros(5), torch.ones(5))


def test_functional_default_eps_is_torch_batch_norm_default() -> None:
    bn = _trained_bn((4, 6, 3))
    x = make_input((4, 6, 3), F32, seed=11)
    args = (bn.running_mean, bn.running_var, bn.weight, bn.bias)
    assert torch.equal(NF.frozen_batch_norm(x, *args), nn.functional.batch_norm(x, *args))


def test_registry_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    m = normlab.create("frozen_bn", 8, trainable_affine=True)
    assert isinstance(m, normlab.FrozenBatchNorm) and m.trainable_affine
    assert "trainable_affine=True" in repr(m)
    assert cli_main(["describe", "fbn"]) == 0
    out = capsys.readouterr().out
    assert "y = γ · (x − μ̂) / √(σ̂² + ε) + β" in out  # the equation, as plain text
    assert "trainable_affine=False" in out
