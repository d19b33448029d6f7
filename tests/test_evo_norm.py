"""EvoNorm-B0 / S0: the paper's testable claims, the reference code's choices and the fast path.

Expected values come from the float64 references in tests/oracles_evo_norm.py (written from the
paper and the official TF code) or from closed forms computed here; the generic contract, state
and memory tests run on the cases of tests/cases_evo_norm.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import normlab
import normlab.functional as NF
import oracles_evo_norm as ref
from catalogue import close, load_script, make_input, saved_storages
from normlab.errors import ConfigError, InputError, NormlabError

F64 = torch.float64
F32 = torch.float32


def _randomize(m: torch.nn.Module, seed: int = 0, v_scale: float = 1.0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            values = torch.randn(p.shape, generator=g, dtype=F64)
            if name == "weight":
                values = values.abs() + 0.5
            if name == "v":
                values = values * v_scale
            p.copy_(values.to(p.dtype))
    return m


def _channel(t: Tensor, ndim: int) -> Tensor:
    return t.reshape(1, -1, *([1] * (ndim - 2)))


def _b0_ref(m: torch.nn.Module, x: Tensor) -> Tensor:
    return ref.evo_norm_b0_ref(x, m.v, m.weight, m.bias, m.running_var, training=m.training,
                               eps=m.eps, channel_dim=m.channel_dim)


def _s0_ref(m: torch.nn.Module, x: Tensor, requested: int) -> Tensor:
    return ref.evo_norm_s0_ref(x, m.v, m.weight, m.bias, num_groups=requested, eps=m.eps,
                               channel_dim=m.channel_dim)


def _grads(y: Tensor, inputs: list[Tensor], g: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad(y, inputs, g.to(y.dtype)))


# -- claim 3: v = 0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_b0_with_v_zero_is_x_over_max_of_sigmas(dtype: torch.dtype, training: bool) -> None:
    """Claim 3: v = 0 gives y = x / max(σ_batch, σ_inst)·γ + β (σ with ε inside the root)."""
    m = _randomize(normlab.EvoNormB0(5, dtype=dtype))
    with torch.no_grad():
        m.v.zero_()
        m.running_var.copy_(torch.tensor([0.3, 1.0, 2.5, 0.01, 9.0], dtype=dtype))
    m.train(training)
    x = make_input((6, 5, 4, 3), dtype, seed=1)
    xd = x.double()
    inst = xd.var(dim=(2, 3), correction=0, keepdim=True)
    batch = xd.var(dim=(0, 2, 3), correction=0, keepdim=True) if training \
        else _channel(m.running_var.double(), 4)
    sigma = torch.maximum((batch + m.eps).sqrt(), (inst + m.eps).sqrt())
    expected = xd / sigma * _channel(m.weight.double(), 4) + _channel(m.bias.double(), 4)
    assert (inst < batch).any() and (inst > batch).any(), "both sides of the max must occur"
    close(m(x).detach().double(), expected, 1e-12 if dtype == F64 else 1e-6)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["fp64", "fp32"])
def test_s0_with_v_zero_is_half_x_over_group_sigma(dtype: torch.dtype) -> None:
    """Claim 3: v = 0 gives y = (x/2)/σ_group·γ + β, exactly to rounding (no 0/0 anywhere)."""
    m = _randomize(normlab.EvoNormS0(6, num_groups=2, dtype=dtype))
    with torch.no_grad():
        m.v.zero_()
    x = make_input((3, 6, 5, 4), dtype, seed=2) * 1e3  # large |x|: sigmoid(0·x) must stay 1/2
    xd = x.double()
    sigma = (xd.reshape(3, 2, -1).var(dim=-1, correction=0, keepdim=True) + m.eps).sqrt()
    expected = (xd / 2).reshape(3, 2, -1) / sigma
    expected = expected.reshape(x.shape) * _channel(m.weight.double(), 4) \
        + _channel(m.bias.double(), 4)
    y = m(x)
    close(y.detach().double(), expected, 1e-12 if dtype == F64 else 1e-6)
    # the gradients at v = 0 are finite and exact too (∂v = Σ γ r dy x²/4)
    g = make_input(x.shape, dtype, seed=3)
    xr = x.detach().clone().requires_grad_()
    got = _grads(m(xr), [xr, m.v, m.weight, m.bias], g)
    x64 = xd.clone().requires_grad_()
    want = _grads(_s0_ref(m, x64, 2), [x64, m.v, m.weight, m.bias], g.double())
    for a, b, name in zip(got, want, ("x", "v", "weight", "bias"), strict=True):
        assert torch.isfinite(a).all(), name
        close(a.double(), b.double(), 1e-10 if dtype == F64 else 2e-5, msg=name)


# -- claims 1 and 2: batch (in)dependence ---------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_s0_sample_ignores_its_batch_mates(training: bool) -> None:
    """Claim 1: S0's output for a sample does not depend on the rest of the batch."""
    m = _randomize(normlab.EvoNormS0(8, num_groups=4)).train(training)
    x = make_input((5, 8, 6, 6), F32, seed=4)
    other = x.clone()
    other[1:] = make_input((4, 8, 6, 6), F32, seed=5) * 100 - 30
    y = m(x)
    assert torch.equal(m(other)[0], y[0])
    assert torch.equal(m(x[:1])[0], y[0])
    assert torch.equal(m(x[[3, 0, 1]])[1], y[0])


def test_b0_eval_is_deterministic_per_sample() -> None:
    """Claim 2: in eval, B0's output for a sample depends on that sample alone."""
    m = _randomize(normlab.EvoNormB0(8))
    for seed in range(3):  # non-trivial moving variances
        m(make_input((6, 8, 5, 5), F32, seed=10 + seed))
    m.eval()
    x = make_input((5, 8, 5, 5), F32, seed=6)
    other = x.clone()
    other[1:] = make_input((4, 8, 5, 5), F32, seed=7) * 50 + 3
    y = m(x)
    assert torch.equal(m(x), y)
    close(m(other)[0], y[0], 1e-6)
    close(m(x[:1])[0], y[0], 1e-6)
    close(m(x[[4, 2, 0]])[2], y[0], 1e-6)


def test_b0_training_uses_the_batch() -> None:
    m = _randomize(normlab.EvoNormB0(4), v_scale=0.1).train()
    x = make_input((4, 4, 5, 5), F32, seed=8)
    other = x.clone()
    other[1:] *= 10
    assert not torch.allclose(m(other)[0], m(x)[0], atol=1e-3)


# -- the reference's choices ----------------------------------------------------------------------


def test_b0_both_branches_and_gradients_match_float64_reference() -> None:
    """fp32 fast backward against the float64 reference's autograd, both max branches active."""
    for training in (True, False):
        m = _randomize(normlab.EvoNormB0(6), seed=3)
        m(make_input((5, 6, 4, 4), F32, seed=20))
        m.train(training)
        x = make_input((5, 6, 4, 4), F32, seed=21)
        xd = x.double()
        batch = ref.batch_var_ref(xd) if training else m.running_var.double()
        inst = xd.var(dim=(2, 3), correction=0, keepdim=True)
        right = _channel(m.v.detach().double(), 4) * xd + (inst + m.eps).sqrt()
        wins = right > _channel((batch + m.eps).sqrt(), 4)
        assert 0.1 < wins.double().mean() < 0.9, "the test data must exercise both branches"
        g = make_input(x.shape, F32, seed=22)
        xr = x.clone().requires_grad_()
        params = [m.v, m.weight, m.bias]
        y = m(xr)
        x64 = xd.clone().requires_grad_()
        expected = _b0_ref(m, x64)
        close(y.detach().double(), expected.detach(), 1e-6)
        for a, b, name in zip(_grads(y, [xr, *params], g), _grads(expected, [x64, *params], g),
                              ("x", "v", "weight", "bias"), strict=True):
            close(a.double(), b.double(), 2e-5, msg=f"{name}, training={training}")


def test_b0_ties_send_the_gradient_to_the_batch_side() -> None:
    """Batch of one, v = 0: σ_batch = σ_inst exactly, a tie at every element; like the
    reference's tf.maximum, the gradient goes to the batch side, so ∂v = 0 exactly."""
    m = normlab.EvoNormB0(3).train()
    with torch.no_grad():
        m.v.zero_()
    x = make_input((1, 3, 4, 4), F32, seed=9).requires_grad_()
    m(x).sum().backward()
    assert torch.equal(m.v.grad, torch.zeros(3))
    # whereas a v just above 0 hands the max (and a gradient) to the instance side
    with torch.no_grad():
        m.v.fill_(1e-3)
    m.v.grad = None
    m(make_input((1, 3, 4, 4), F32, seed=9).abs() + 1).sum().backward()
    assert (m.v.grad.abs() > 0).all()


def test_b0_running_var_stores_the_biased_batch_variance_with_decay_0_9() -> None:
    """One step from 1 with the default momentum 0.1 (the reference's decay 0.9)."""
    m = normlab.EvoNormB0(4, dtype=F64).train()
    assert m.momentum == 0.1
    x = make_input((3, 4, 5), F64, seed=11)
    m(x)
    n = 3 * 5
    for c in range(4):
        values = x[:, c].reshape(-1)
        biased = ((values - values.mean()) ** 2).sum() / n
        close(m.running_var[c], 1 - (1 - biased) * (1 - 0.9), 1e-14)
    assert m.num_batches_tracked.item() == 1
    assert not hasattr(m, "running_mean") or m.running_mean is None
    assert "running_mean" not in m.state_dict()


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_b0_running_var_closed_form_for_a_repeated_batch(momentum: float) -> None:
    x = make_input((4, 3, 6), F64, seed=12)
    var = ref.batch_var_ref(x)
    m = normlab.EvoNormB0(3, momentum=momentum, dtype=F64).train()
    for k in range(1, 6):
        m(x)
        kept = (1 - momentum) ** k
        close(m.running_var, kept + (1 - kept) * var, 1e-13, msg=f"k={k}")


def test_b0_cumulative_average_is_order_free() -> None:
    batches = [make_input((2 + i, 3, 4), F64, seed=40 + i) for i in range(4)]
    forward = normlab.EvoNormB0(3, momentum=None, dtype=F64).train()
    backward = normlab.EvoNormB0(3, momentum=None, dtype=F64).train()
    for x in batches:
        forward(x)
    for x in reversed(batches):
        backward(x)
    mean = torch.stack([ref.batch_var_ref(x) for x in batches]).mean(0)
    close(forward.running_var, mean, 1e-13)
    close(backward.running_var, mean, 1e-13)
    assert forward.num_batches_tracked.item() == 4


def test_b0_nonfinite_batch_is_skipped_but_output_follows_the_math() -> None:
    m = normlab.EvoNormB0(3).train()
    m(make_input((2, 3, 4), F32, seed=1))
    before = m.running_var.clone()
    x = make_input((2, 3, 4), F32, seed=2)
    x[0, 1, 2] = math.inf
    y = m(x)
    assert torch.equal(m.running_var, before)
    assert m.num_batches_tracked.item() == 1
    assert not torch.isfinite(y[:, 1]).all()


@pytest.mark.parametrize("cls", [normlab.EvoNormB0, normlab.EvoNormS0], ids=["b0", "s0"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nonlinearity_false_is_the_affine_map(cls: type, training: bool) -> None:
    m = _randomize(cls(4, nonlinearity=False)).train(training)
    assert m.v is None
    assert getattr(m, "running_var", None) is None
    assert set(m.state_dict()) == {"weight", "bias"}
    x = make_input((3, 4, 5), F32, seed=3)
    expected = x * _channel(m.weight.detach(), 3) + _channel(m.bias.detach(), 3)
    assert torch.equal(m(x).detach(), expected)
    plain = cls(4, nonlinearity=False, affine=False)
    y = plain(x)
    assert torch.equal(y, x)
    assert y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    ("channels", "requested", "expected"),
    [(6, None, 6), (40, None, 20), (64, None, 32), (7, None, 7), (9, 4, 3), (24, 16, 12),
     (5, 1, 1), (96, 32, 32)],
)
def test_s0_decrements_num_groups_until_it_divides_c(
    channels: int, requested: int | None, expected: int
) -> None:
    m = normlab.EvoNormS0(channels, num_groups=requested)
    assert m.num_groups == expected == ref.reference_groups(channels, requested or 32)
    assert f"num_groups={expected}" in repr(m)
    x = make_input((2, channels, 3, 2), F64, seed=4)
    _randomize(m.double())
    close(m(x), _s0_ref(m, x, requested or 32), 1e-12)
    close(NF.evo_norm_s0(x, requested or 32, m.weight, m.bias, m.v), m(x), 1e-14)


def test_s0_group_size_and_spec() -> None:
    assert normlab.EvoNormS0(8, group_size=4).num_groups == 2
    assert normlab.create("evo_norm_s0:16", 64).num_groups == 16
    assert normlab.create("s0:16", 48).num_groups == 16
    assert normlab.create("s0", 48).num_groups == 24  # 32 → 24, the reference's rule
    assert isinstance(normlab.create("b0", 8), normlab.EvoNormB0)


# -- precision ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["b0", "s0"])
def test_low_precision_statistics_are_float32(dtype: torch.dtype, name: str) -> None:
    """x up to 300: x² overflows fp16; statistics in float32 keep output and gradients exact."""
    m = normlab.EvoNormB0(4) if name == "b0" else normlab.EvoNormS0(4, num_groups=2)
    _randomize(m, v_scale=0.05)
    x = (make_input((3, 4, 6, 5), F32, seed=5) * 100).to(dtype)
    x[0, 0, 0, 0] = 300
    xr = x.clone().requires_grad_()
    y = m(xr)
    assert y.dtype == dtype
    x64 = x.double().requires_grad_()
    expected = _b0_ref(m, x64) if name == "b0" else _s0_ref(m, x64, 2)
    u = torch.finfo(dtype).eps
    close(y.detach().double(), expected.detach(), 2 * u)
    g = make_input(x.shape, F32, seed=6)
    (dx,) = torch.autograd.grad(y, xr, g.to(dtype))
    (dx64,) = torch.autograd.grad(expected, x64, g.double())
    assert torch.isfinite(dx).all()
    close(dx.double(), dx64, 4 * u)


@pytest.mark.parametrize("v", [50.0, -50.0, 1e-30, -1e-30])
def test_s0_extreme_v(v: float) -> None:
    m = _randomize(normlab.EvoNormS0(4, num_groups=2, dtype=F64))
    with torch.no_grad():
        m.v.fill_(v)
    x = make_input((2, 4, 5, 3), F64, seed=7).requires_grad_()
    y = m(x)
    x64 = x.detach().clone().requires_grad_()
    expected = _s0_ref(m, x64, 2)
    close(y, expected, 1e-12)
    g = make_input(x.shape, F64, seed=8)
    got = _grads(y, [x, m.v], g)
    want = _grads(expected, [x64, m.v], g)
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        close(a, b, 1e-10)


# -- fast path ------------------------------------------------------------------------------------


def _saved_bytes(m: torch.nn.Module, x: Tensor) -> int:
    return sum(saved_storages(lambda: m(x)).values())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", ["b0", "s0"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_saves_only_x_and_small_statistics(name: str, training: bool, layout: str) -> None:
    m = (normlab.EvoNormB0(64) if name == "b0" else normlab.EvoNormS0(64)).train(training)
    x = make_input((8, 64, 16, 16), F32, seed=9)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    used = _saved_bytes(m, x.requires_grad_())
    assert used <= 1.05 * x.numel() * x.element_size(), used / (x.numel() * 4)


@pytest.mark.parametrize("name", ["b0", "s0"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fast_backward_equals_double_backward_path(name: str, training: bool) -> None:
    """The analytic first-order backward and the differentiable recomputation used under
    create_graph=True give the same gradients (fp32, larger than gradcheck's shapes)."""
    m = _randomize(normlab.EvoNormB0(16) if name == "b0" else normlab.EvoNormS0(16, num_groups=4))
    m(make_input((6, 16, 7, 7), F32, seed=30))
    m.train(training)
    x = make_input((6, 16, 7, 7), F32, seed=31).requires_grad_()
    g = make_input(x.shape, F32, seed=32)
    params = [x, m.v, m.weight, m.bias]
    fast = torch.autograd.grad(m(x), params, g)
    slow = torch.autograd.grad(m(x), params, g, create_graph=True)
    for a, b in zip(fast, slow, strict=True):
        close(a, b.detach(), 1e-5)


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_eager_baselines_compute_the_same_layer(channel_dim: int) -> None:
    eager = load_script("benchmarks/eager/evo_norm.py")
    x = make_input((4, 8, 5, 3), F64, seed=12)
    if channel_dim == -1:
        x = x.movedim(1, -1).contiguous()
    b0 = _randomize(normlab.EvoNormB0(8, dtype=F64, channel_dim=channel_dim)).train()
    s0 = _randomize(normlab.EvoNormS0(8, num_groups=4, dtype=F64, channel_dim=channel_dim))
    close(eager.eager_evo_norm_b0(b0, x), b0(x), 1e-12)  # type: ignore[attr-defined]
    close(eager.eager_evo_norm_s0(s0, x), s0(x), 1e-12)  # type: ignore[attr-defined]


# -- functional -----------------------------------------------------------------------------------


def test_functional_v_none_is_v_one() -> None:
    x = make_input((3, 4, 5), F64, seed=13)
    ones = torch.ones(4, dtype=F64)
    close(NF.evo_norm_b0(x, training=True), NF.evo_norm_b0(x, v=ones, training=True), 0)
    close(NF.evo_norm_s0(x, 2), NF.evo_norm_s0(x, 2, v=ones), 0)
    # running_var is used only outside training
    rv = torch.full((4,), 3.0, dtype=F64)
    close(NF.evo_norm_b0(x, rv, training=True), NF.evo_norm_b0(x, training=True), 0)
    assert not torch.allclose(NF.evo_norm_b0(x, rv), NF.evo_norm_b0(x))


# -- errors ---------------------------------------------------------------------------------------


def _message(excinfo: pytest.ExceptionInfo, cls: type) -> str:
    assert isinstance(excinfo.value, cls)
    assert isinstance(excinfo.value, NormlabError)
    assert isinstance(excinfo.value, ValueError)
    return str(excinfo.value)


@pytest.mark.parametrize("cls", [normlab.EvoNormB0, normlab.EvoNormS0], ids=["b0", "s0"])
@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan, None])
def test_eps_must_be_positive(cls: type, eps: float | None) -> None:
    with pytest.raises(ConfigError, match="eps must be a positive finite float") as excinfo:
        cls(4, eps=eps)
    _message(excinfo, ConfigError)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, math.nan])
def test_b0_momentum_must_be_in_unit_interval(momentum: float) -> None:
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\]"):
        normlab.EvoNormB0(4, momentum=momentum)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_groups": 0}, "num_groups must be a positive int; got 0"),
        ({"num_groups": 2.0}, "num_groups must be a positive int; got 2.0"),
        ({"group_size": 5}, r"num_features \(8\) must be divisible by group_size \(5\)"),
        ({"num_groups": 2, "group_size": 4}, "pass one of num_groups, group_size and max_groups"),
    ],
)
def test_s0_group_arguments(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        normlab.EvoNormS0(8, **kwargs)


@pytest.mark.parametrize("cls", [normlab.EvoNormB0, normlab.EvoNormS0], ids=["b0", "s0"])
def test_wrong_channel_count(cls: type) -> None:
    with pytest.raises(InputError, match=r"expected input of shape \(N, 8, \*S\)") as excinfo:
        cls(8)(torch.randn(2, 4, 3, 3))
    assert "got (2, 4, 3, 3)" in _message(excinfo, InputError)
    with pytest.raises(InputError, match="pass channel_dim=-1"):
        cls(8)(torch.randn(2, 3, 3, 8))


def test_functional_parameter_shapes_are_checked() -> None:
    x = torch.randn(2, 4, 3)
    with pytest.raises(InputError, match=r"v must have shape \(4,\).*got \(3,\)"):
        NF.evo_norm_s0(x, 2, torch.ones(4), None, torch.ones(3))
    with pytest.raises(InputError, match=r"running_var must have shape \(4,\)"):
        NF.evo_norm_b0(x, torch.ones(5), torch.ones(4))
    with pytest.raises(InputError, match="nonlinearity=False"):
        NF.evo_norm_b0(x, v=torch.ones(4), nonlinearity=False)
    with pytest.raises(InputError, match="nonlinearity=False"):
        NF.evo_norm_s0(x, 2, v=torch.ones(4), nonlinearity=False)


def test_load_rejects_a_bad_running_var() -> None:
    m = normlab.EvoNormB0(4)
    state = m.state_dict()
    state["running_var"] = torch.tensor([1.0, -2.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match=r"running_var.*negative variance"):
        m.load_state_dict(state)
    state["running_var"] = torch.ones(5)
    with pytest.raises(ConfigError, match=r"shape \(5,\), expected \(4,\)"):
        m.load_state_dict(state)


@pytest.mark.parametrize("dtype", [F64, torch.bfloat16], ids=["fp64", "bf16"])
@pytest.mark.parametrize("name", ["b0", "s0"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_chunked_passes_match_one_chunk(
    monkeypatch: pytest.MonkeyPatch, name: str, training: bool, dtype: torch.dtype
) -> None:
    """On CPU the elementwise passes run a few samples at a time: any chunk size gives the
    result of one whole-tensor chunk (forward, input and parameter gradients)."""
    from normlab.norms import _chunked

    x = make_input((7, 6, 5, 4), dtype, seed=14)
    g = make_input(x.shape, dtype, seed=15)
    results = []
    for elements in (1 << 30, 6 * 20, 2 * 6 * 20, 3 * 6 * 20 + 1):
        monkeypatch.setattr(_chunked, "CHUNK_ELEMENTS", elements)
        m = normlab.EvoNormB0(6, dtype=dtype) if name == "b0" \
            else normlab.EvoNormS0(6, num_groups=3, dtype=dtype)
        _randomize(m, seed=5)
        m(make_input(x.shape, dtype, seed=16))  # moving variance for eval
        m.train(training)
        xr = x.clone().requires_grad_()
        y = m(xr)
        results.append((y.detach(), *_grads(y, [xr, m.v, m.weight, m.bias], g)))
    tol = 1e-12 if dtype == F64 else 1e-2
    for other in results[1:]:
        for a, b in zip(other, results[0], strict=True):
            close(a.double(), b.double(), tol)
