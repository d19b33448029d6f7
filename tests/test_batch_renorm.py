"""Batch Renormalization (Ioffe 2017): what the generic catalogue tests cannot see.

References: the float64 oracle in oracles_batch_renorm.py (written from the paper's Alg. 1) and
torch.nn.BatchNorm for the r_max = 1, d_max = 0 equivalence (METHODS §6, claims 1 and 2).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

import normlab
import normlab.functional as NF
import oracles_batch_renorm as ref
from catalogue import CASES, close, make_input, output_and_grads, randomize_, saved_storages
from normlab.errors import ConfigError, InputError

F32, F64 = torch.float32, torch.float64
TOL = {F32: 2e-6, F64: 1e-12}
GRAD_TOL = {F32: 1e-5, F64: 1e-10}
# the catalogue's clipped case (cases_batch_renorm.py): schedule off, limits every channel of the
# contract tests' data saturates
CLIPPED = next(c for c in CASES if c.id == "batch_renorm-clipped").kwargs
NO_SCHEDULE = {k: CLIPPED[k] for k in ("warmup_steps", "rmax_ramp_end", "dmax_ramp_end")}
SATURATED = {k: CLIPPED[k] for k in ("rmax", "dmax", "momentum")}
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
SHAPES = ((16, 6), (4, 6, 5), (3, 6, 4, 3), (2, 6, 3, 2, 3))


def _set_running(m: nn.Module, mean: Tensor, std: Tensor) -> None:
    """Moving mean μ and moving std σ (stored as running_var = σ² − ε)."""
    with torch.no_grad():
        m.running_mean.copy_(mean)
        m.running_var.copy_(std.double().square() - m.eps)


def _oracle_grads(
    x: Tensor, g: Tensor, m: nn.Module, rmax: float, dmax: float, *, stop_grad: bool = True,
    training: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Float64 output and gradients of the oracle, from the module's parameters and buffers."""
    leaf = x.detach().double().requires_grad_()
    params = {k: p.detach().double().requires_grad_() for k, p in m.named_parameters()}
    y = ref.batch_renorm_ref(
        leaf, params.get("weight"), params.get("bias"), m.running_mean, m.running_var,
        training=training, rmax=rmax, dmax=dmax, eps=m.eps, channel_dim=m.channel_dim,
        stop_grad=stop_grad,
    )
    grads = torch.autograd.grad(y, [leaf, *params.values()], g.double())
    return y.detach(), grads[0], dict(zip(params, grads[1:], strict=True))


def _channel_data(dtype: torch.dtype = F64, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(x, moving μ, moving σ) for 6 channels whose r, d fall on chosen sides of the clips
    r_max = 2, d_max = 1: r high / r low / d high / d low / both inside / both inside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 6, 5, generator=g, dtype=F64)
    x = (x - x.mean((0, 2), keepdim=True)) / x.std((0, 2), correction=0, keepdim=True)
    std_b = torch.tensor([6.0, 0.2, 1.0, 1.0, 1.3, 0.8], dtype=F64)
    mean_b = torch.tensor([0.0, 0.0, 3.0, -4.0, 0.5, -0.3], dtype=F64)
    x = x * std_b.view(1, -1, 1) + mean_b.view(1, -1, 1)
    mu = torch.zeros(6, dtype=F64)
    sigma = torch.ones(6, dtype=F64)
    return x.to(dtype), mu, sigma


# -- claim 1: r_max = 1, d_max = 0 (and the warm-up) is BN ---------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize(
    "kwargs",
    [{"rmax": 1.0, "dmax": 0.0, **NO_SCHEDULE}, {}],
    ids=["rmax1_dmax0", "warmup"],
)
def test_bn_equivalence(kwargs: dict, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Outputs, input and parameter gradients and the running mean equal torch.nn.BatchNorm's."""
    ours = randomize_(normlab.BatchRenorm(6, momentum=0.1, dtype=dtype, **kwargs))
    theirs = TORCH_BN[len(shape)](6, momentum=0.1).to(dtype)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
        theirs.running_mean.copy_(ours.running_mean)
    for step in range(3):
        x = make_input(shape, dtype, seed=step)
        g = make_input(shape, dtype, seed=10 + step)
        y0, gx0, gp0 = output_and_grads(ours, x, g)
        y1, gx1, gp1 = output_and_grads(theirs, x, g)
        close(y0, y1, TOL[dtype], msg=f"output, step {step}")
        close(gx0, gx1, GRAD_TOL[dtype], msg=f"input grad, step {step}")
        for key in ("weight", "bias"):
            close(gp0[key], gp1[key], GRAD_TOL[dtype], msg=f"{key} grad, step {step}")
        close(ours.running_mean, theirs.running_mean, TOL[dtype], msg=f"running_mean {step}")
    assert int(ours.num_batches_tracked) == 3


def test_bn_equivalence_running_var_is_the_biased_batch_variance() -> None:
    """The comparable part of the variance buffers: with α = 1 both hold the batch variance,
    BN's unbiased (n/(n−1)), BRN's σ_B² − ε = Var_b (the paper's moving std tracks σ_B)."""
    x = make_input((4, 6, 5), F64, seed=3)
    ours = normlab.BatchRenorm(6, momentum=1.0, dtype=F64)
    theirs = nn.BatchNorm1d(6, momentum=1.0).double()
    ours(x)
    theirs(x)
    n = 4 * 5
    close(ours.running_var, theirs.running_var * (n - 1) / n, 1e-12)


# -- claim 2: unclipped training output = eval output with the pre-update statistics --------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_unclipped_train_output_equals_eval_with_pre_update_stats(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    m = randomize_(normlab.BatchRenorm(6, rmax=1e6, dmax=1e6, dtype=dtype, **NO_SCHEDULE))
    for step in range(3):
        x = make_input(shape, dtype, seed=20 + step)
        before = copy.deepcopy(m).eval()
        y_eval = before(x)
        y_train = m.train()(x)
        close(y_train, y_eval, TOL[dtype], msg=f"step {step}")
        assert not torch.equal(m.running_mean, before.running_mean)  # the update did happen


def test_bn_train_output_differs_from_eval() -> None:
    """The claim above is not vacuous: in the warm-up (BN) train and eval differ."""
    m = randomize_(normlab.BatchRenorm(6, dtype=F64))
    x = make_input((4, 6, 5), F64, seed=1)
    y_eval = copy.deepcopy(m).eval()(x)
    assert (m.train()(x) - y_eval).abs().max() > 0.1


@pytest.fixture(params=["small", "large"])
def renorm_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both compositions of the training forward: BN's kernel with weight γr and bias γd + β
    (inputs up to `_SMALL` elements) and the moments + affine pass with its own backward."""
    import normlab.norms.batch_renorm as brn

    monkeypatch.setattr(brn, "_SMALL", 1 << 40 if request.param == "small" else -1)
    return str(request.param)


# -- clipping active ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_dim_last"])
def test_clipping_saturates_and_matches_oracle(
    dtype: torch.dtype, layout: str, renorm_path: str
) -> None:
    x3, mu, sigma = _channel_data(dtype)
    x = x3.reshape(8, 6, 5, 1)
    r_raw = x.double().std((0, 2, 3), correction=0) / sigma
    d_raw = (x.double().mean((0, 2, 3)) - mu) / sigma
    # the chosen channels really clip: r above 2, r below 1/2, d above 1, d below -1; the last
    # two stay inside both ranges
    assert r_raw[0] > 2 and r_raw[1] < 0.5 and d_raw[2] > 1 and d_raw[3] < -1
    assert torch.all((r_raw[4:] > 0.5) & (r_raw[4:] < 2) & (d_raw[4:].abs() < 1))
    m = normlab.BatchRenorm(6, rmax=2.0, dmax=1.0, dtype=dtype, **NO_SCHEDULE,
                            channel_dim=-1 if layout == "channel_dim_last" else 1)
    randomize_(m)
    _set_running(m, mu, sigma)
    expected = ref.batch_renorm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, training=True, rmax=2.0, dmax=1.0,
        eps=m.eps,
    )
    unclipped = ref.batch_renorm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, training=True, rmax=1e9, dmax=1e9,
        eps=m.eps,
    )
    if layout == "channels_last":
        y = m(x.contiguous(memory_format=torch.channels_last))
    elif layout == "channel_dim_last":
        y = m(x.movedim(1, -1).contiguous()).movedim(-1, 1)
    else:
        y = m(x)
    close(y.double(), expected, TOL[dtype])
    # clipping changed channels 0-3 and left 4-5 alone (the keras-contrib #127 failure mode:
    # limits silently fixed at 1 / 0)
    differs = (y.double() - unclipped).abs().amax((0, 2, 3))
    assert torch.all(differs[:4] > 0.1), differs
    assert torch.all(differs[4:] < 1e-5), differs


@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_dim_last"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_gradients_treat_r_and_d_as_constants(
    dtype: torch.dtype, layout: str, affine: bool, renorm_path: str
) -> None:
    """Input and parameter gradients equal the oracle's with r, d detached (channels clipped and
    unclipped), and differ from the gradients through r and d, so the test can fail."""
    x3, mu, sigma = _channel_data(dtype, seed=1)
    x = x3.reshape(8, 6, 5, 1)
    g = make_input(tuple(x.shape), dtype, seed=5)
    last = layout == "channel_dim_last"
    m = normlab.BatchRenorm(6, rmax=2.0, dmax=1.0, affine=affine, dtype=dtype, **NO_SCHEDULE,
                            channel_dim=-1 if last else 1)
    randomize_(m)
    _set_running(m, mu, sigma)
    expected = _oracle_grads(x.movedim(1, -1) if last else x,
                             g.movedim(1, -1) if last else g, m, 2.0, 1.0)
    through_rd = _oracle_grads(x.movedim(1, -1) if last else x,
                               g.movedim(1, -1) if last else g, m, 2.0, 1.0, stop_grad=False)
    if layout == "channels_last":
        fmt = torch.channels_last
        y, gx, gp = output_and_grads(
            m, x.contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)
        )
    elif last:
        y, gx, gp = output_and_grads(
            m, x.movedim(1, -1).contiguous(), g.movedim(1, -1).contiguous()
        )
    else:
        y, gx, gp = output_and_grads(m, x, g)
    close(y.double(), expected[0], TOL[dtype], msg="output")
    close(gx.double(), expected[1], GRAD_TOL[dtype], msg="input grad")
    assert (expected[1] - through_rd[1]).abs().max() > 1e-2
    assert gp.keys() == expected[2].keys()
    for key in gp:
        close(gp[key].double(), expected[2][key], GRAD_TOL[dtype], msg=f"{key} grad")


def test_double_backward_matches_oracle(renorm_path: str) -> None:
    """create_graph=True with r, d inside their ranges (so not locally constant): the second
    derivatives equal the oracle's, r and d held constant."""
    x3, mu, sigma = _channel_data(F64, seed=2)
    m = normlab.BatchRenorm(6, rmax=2.0, dmax=1.0, dtype=F64, **NO_SCHEDULE)
    randomize_(m)
    _set_running(m, mu, sigma)
    g = make_input(tuple(x3.shape), F64, seed=6)
    v = make_input(tuple(x3.shape), F64, seed=7)

    def second(fn: object, params: dict[str, Tensor]) -> list[Tensor]:
        leaf = x3.clone().requires_grad_()
        y = fn(leaf, params)  # type: ignore[operator]
        (gx,) = torch.autograd.grad(y, leaf, g, create_graph=True)
        return list(torch.autograd.grad(  # dx does not depend on β: its entry is zeros
            (gx * v).sum(), [leaf, *params.values()], materialize_grads=True
        ))

    def ours(leaf: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(m, params, (leaf,))

    def oracle(leaf: Tensor, params: dict[str, Tensor]) -> Tensor:
        return ref.batch_renorm_ref(
            leaf, params["weight"], params["bias"], mu, sigma.square() - m.eps, training=True,
            rmax=2.0, dmax=1.0, eps=m.eps,
        )

    def fresh() -> dict[str, Tensor]:
        return {k: p.detach().clone().requires_grad_() for k, p in m.named_parameters()}

    got = second(ours, fresh())
    want = second(oracle, fresh())
    for a, b in zip(got, want, strict=True):
        close(a, b, 1e-10)


def test_catalogue_clipped_cases_saturate_on_contract_test_data() -> None:
    """The contract tests gradcheck the 'clipped' cases in training mode; that only holds where
    r and d are locally constant, i.e. every channel saturates. Checked on the exact data
    (make_input seeds 6 and 7, randomize_ seed 1) with a margin for the running statistics'
    drift over gradgradcheck's forwards (momentum 1e-4)."""
    for eps in (1e-5, 1e-3):
        m = randomize_(normlab.BatchRenorm(6, dtype=F64, eps=eps, **NO_SCHEDULE, **SATURATED))
        sigma = torch.sqrt(m.running_var + eps)
        for seed in (6, 7):
            x = make_input((3, 6, 4), F64, seed=seed)
            r = torch.sqrt(x.var((0, 2), correction=0) + eps) / sigma
            d = (x.mean((0, 2)) - m.running_mean) / sigma
            assert torch.all(r.log().abs() > 2 * math.log(SATURATED["rmax"])), r
            assert torch.all(d.abs() > 2 * SATURATED["dmax"]), d


# -- schedule -------------------------------------------------------------------------------------

STEPS = (0, 1, 4999, 5000, 5001, 12500, 24999, 25000, 30000, 39999, 40000, 40001, 10**7)


def test_default_schedule_is_the_papers() -> None:
    m = normlab.BatchRenorm(4)
    assert (m.rmax, m.dmax, m.warmup_steps, m.rmax_ramp_end, m.dmax_ramp_end) == (
        3.0, 5.0, 5000, 40000, 25000
    )
    assert m.momentum == 0.01 and m.eps == 1e-5
    for step in STEPS:
        m.num_batches_tracked.fill_(step)
        rmax, dmax = m.clip_limits()
        want_r, want_d = ref.schedule_ref(step, 3.0, 5.0, 5000, 40000, 25000)
        assert float(rmax) == pytest.approx(want_r, abs=1e-12), step
        assert float(dmax) == pytest.approx(want_d, abs=1e-12), step
    m.num_batches_tracked.fill_(4999)
    assert tuple(map(float, m.clip_limits())) == (1.0, 0.0)  # exactly BN in the warm-up


@pytest.mark.parametrize(
    "schedule", [(0, 0, 0), (3, 3, 3), (2, 6, 4), (0, 5, 0), (0, 0, 5), (2, 2, 6), (2, 6, 2)],
    ids=lambda s: "-".join(map(str, s)),  # also each limit ramped while the other is a step
)
def test_schedule_drives_the_forward(schedule: tuple[int, int, int]) -> None:
    """Each training step t clips with the schedule's limits at t (steps already taken)."""
    warmup, rmax_end, dmax_end = schedule
    m = normlab.BatchRenorm(6, rmax=1.5, dmax=0.5, momentum=0.2, dtype=F64, warmup_steps=warmup,
                            rmax_ramp_end=rmax_end, dmax_ramp_end=dmax_end)
    randomize_(m)
    for step in range(8):
        x = make_input((4, 6, 3), F64, seed=40 + step)
        limits = ref.schedule_ref(step, 1.5, 0.5, warmup, rmax_end, dmax_end)
        assert tuple(map(float, m.clip_limits())) == pytest.approx(limits, abs=1e-12)
        expected = ref.batch_renorm_ref(
            x, m.weight, m.bias, m.running_mean, m.running_var, training=True, rmax=limits[0],
            dmax=limits[1], eps=m.eps,
        )
        close(m(x), expected, 1e-12, msg=f"step {step}")
    assert int(m.num_batches_tracked) == 8


def test_eval_and_empty_batches_do_not_advance_the_schedule() -> None:
    m = normlab.BatchRenorm(6, warmup_steps=2, rmax_ramp_end=4, dmax_ramp_end=4)
    m.eval()(make_input((4, 6), F32))
    m.train()(torch.empty(0, 6))
    assert int(m.num_batches_tracked) == 0


# -- the moving statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.01, 0.3, None], ids=str)
def test_moving_std_follows_the_paper(momentum: float | None) -> None:
    """σ = sqrt(running_var + ε) obeys σ ← σ + α(σ_B − σ) (the std, not the variance), μ ← μ +
    α(μ_B − μ), from the initial buffers (μ = 0, running_var = 1: σ = sqrt(1 + ε))."""
    m = normlab.BatchRenorm(6, momentum=momentum, dtype=F64, **NO_SCHEDULE)
    mean = torch.zeros(6, dtype=F64)
    std = torch.sqrt(torch.ones(6, dtype=F64) + m.eps)
    tracked = 0
    for step in range(6):
        x = make_input((3 + step % 2, 6, 4), F64, seed=60 + step)
        m(x)
        mean, std, tracked = ref.moving_std_step_ref(mean, std, tracked, x, momentum, m.eps)
        close(m.running_mean, mean, 1e-12)
        close(torch.sqrt(m.running_var + m.eps), std, 1e-12)
    if momentum is None:  # the equal-weight average of the batch σ_B
        stds = [torch.sqrt(ref.batch_stats_ref(make_input((3 + s % 2, 6, 4), F64, seed=60 + s))[1]
                           + m.eps) for s in range(6)]
        close(torch.sqrt(m.running_var + m.eps), torch.stack(stds).mean(0), 1e-12)


def test_moving_std_of_tiny_variances_is_exact_and_nonnegative() -> None:
    """Variances far below ε: the stored σ² − ε stays >= 0 and σ matches the paper's law, both
    in float64 and float32 (no eps subtraction cancels, RELIABILITY rows 77 and 107)."""
    for dtype, tol in ((F64, 1e-12), (F32, 1e-6)):
        m = normlab.BatchRenorm(3, momentum=0.1, dtype=dtype, **NO_SCHEDULE)
        m.running_var.zero_()
        std = torch.full((3,), math.sqrt(m.eps), dtype=F64)
        mean = torch.zeros(3, dtype=F64)
        for step in range(20):
            g = torch.Generator().manual_seed(step)
            x = 1.0 + torch.randn(16, 3, generator=g, dtype=F64) * torch.tensor([1e-9, 1e-6, 1e-4])
            x = x.to(dtype)
            m(x)
            mean, std, _ = ref.moving_std_step_ref(mean, std, step, x, 0.1, m.eps)
            assert torch.all(m.running_var >= 0)
            close(torch.sqrt(m.running_var.double() + m.eps), std, tol, msg=f"{dtype} {step}")


def test_float32_moving_std_does_not_drift() -> None:
    """500 float32 steps stay within float32 rounding of the float64 law (keras-contrib #287)."""
    m = normlab.BatchRenorm(6, momentum=0.01, **NO_SCHEDULE)
    mean = torch.zeros(6, dtype=F64)
    std = torch.sqrt(torch.ones(6, dtype=F64) + m.eps)
    for step in range(500):
        x = make_input((4, 6, 3), F32, seed=step)
        m(x)
        mean, std, _ = ref.moving_std_step_ref(mean, std, step, x, 0.01, m.eps)
    close(torch.sqrt(m.running_var.double() + m.eps), std, 2e-6)
    close(m.running_mean.double(), mean, 2e-6)


# -- state ----------------------------------------------------------------------------------------


def test_loads_a_torch_batchnorm2d_state_dict_value_preserving() -> None:
    """The buffers keep BN's names and meaning: every value loads bit for bit (tiny variances
    included, no ε subtracted or added) and eval equals torch's BN eval."""
    bn = nn.BatchNorm2d(6)
    for step in range(3):
        bn(make_input((4, 6, 3, 3), F32, seed=step) * 3)
    with torch.no_grad():
        bn.running_var[:3] = torch.tensor([0.0, 1e-30, 1e-12])
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    brn = normlab.BatchRenorm(6)
    brn.load_state_dict(bn.state_dict())
    for key, value in bn.state_dict().items():
        assert torch.equal(brn.state_dict()[key], value), key
    x = make_input((4, 6, 3, 3), F32, seed=9)
    close(brn.eval()(x), bn.eval()(x), 1e-6)
    assert int(brn.num_batches_tracked) == 3
    brn.train()(x)  # and training continues from there
    assert int(brn.num_batches_tracked) == 4


@pytest.mark.parametrize("bad", [-1e-3, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_load_rejects_invalid_moving_std(bad: float) -> None:
    state = normlab.BatchRenorm(6).state_dict()
    state["running_var"][1] = bad
    with pytest.raises(ConfigError, match=r"BatchRenorm\(6\): cannot load 'running_var'"):
        normlab.BatchRenorm(6).load_state_dict(state)


def test_saved_bytes_at_benchmark_size() -> None:
    """(32, 64, 32, 32) fp32: x plus per-channel statistics (<= 1.5x x), every layout."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        m = normlab.BatchRenorm(64, **NO_SCHEDULE)
        x = torch.randn(32, 64, 32, 32).contiguous(memory_format=fmt).requires_grad_()
        saved = saved_storages(lambda m=m, x=x: m(x))
        assert sum(saved.values()) <= 1.01 * x.numel() * 4, fmt


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_input_with_float32_module(dtype: torch.dtype) -> None:
    """fp16/bf16 activations, fp32 parameters and buffers (autocast style): statistics in
    float32, output in the input's dtype, close to the float64 oracle."""
    x3, mu, sigma = _channel_data(F64, seed=3)
    x = x3.to(dtype)
    m = randomize_(normlab.BatchRenorm(6, rmax=2.0, dmax=1.0, **NO_SCHEDULE))
    _set_running(m, mu, sigma)
    expected = ref.batch_renorm_ref(
        x, m.weight, m.bias, m.running_mean, m.running_var, training=True, rmax=2.0, dmax=1.0,
        eps=m.eps,
    )
    y = m(x.requires_grad_())
    assert y.dtype == dtype
    close(y.double(), expected, 1e-2 if dtype == torch.float16 else 3e-2)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert m.running_var.dtype == F32 and torch.isfinite(m.running_var).all()


# -- functional -----------------------------------------------------------------------------------


def test_functional_is_pure_and_takes_tensor_limits() -> None:
    x3, mu, sigma = _channel_data(F64, seed=4)
    rv = sigma.square() - 1e-5
    w, b = torch.rand(6, dtype=F64) + 0.5, torch.randn(6, dtype=F64)
    args = [x3, mu, rv, w, b]
    before = [(t.clone(), t._version) for t in args]
    y_float = NF.batch_renorm(*args, training=True, rmax=2.0, dmax=1.0)
    y_tensor = NF.batch_renorm(
        *args, training=True, rmax=torch.tensor(2.0, dtype=F64), dmax=torch.tensor(1.0)
    )
    for t, (value, version) in zip(args, before, strict=True):
        assert torch.equal(t, value) and t._version == version
    expected = ref.batch_renorm_ref(x3, w, b, mu, rv, training=True, rmax=2.0, dmax=1.0, eps=1e-5)
    close(y_float, expected, 1e-12)
    close(y_tensor, expected, 1e-12)
    y_eval = NF.batch_renorm(*args, training=False, rmax=2.0, dmax=1.0)
    close(y_eval, ref.batch_renorm_ref(x3, w, b, mu, rv, training=False, rmax=2.0, dmax=1.0,
                                       eps=1e-5), 1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rmax": 0.5}, r"rmax must be a finite float >= 1; got 0\.5"),
        ({"rmax": math.nan}, r"rmax must be a finite float >= 1; got nan"),
        ({"dmax": -0.1}, r"dmax must be a finite float >= 0; got -0\.1"),
        ({"dmax": math.inf}, r"dmax must be a finite float >= 0; got inf"),
    ],
)
def test_functional_rejects_bad_limits(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NF.batch_renorm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True, **kwargs)


def test_functional_needs_both_moving_statistics() -> None:
    with pytest.raises(InputError, match=r"running_var must be a 1-D tensor .* got None"):
        NF.batch_renorm(torch.randn(4, 3), torch.zeros(3), None, training=True)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"expected input of shape \(N, 3, \*S\)"):
        NF.batch_renorm(torch.randn(4, 5), torch.zeros(3), torch.ones(3), training=True)


# -- constructor errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rmax": 0.99}, r"rmax must be a finite float >= 1; got 0\.99\. .*rmax=1 turns"),
        ({"rmax": "3"}, r"rmax must be a finite float >= 1; got '3'"),
        ({"rmax": True}, r"rmax must be a finite float >= 1; got True"),
        ({"dmax": -1}, r"dmax must be a finite float >= 0; got -1\. .*dmax=0 turns"),
        ({"dmax": math.nan}, r"dmax must be a finite float >= 0; got nan"),
        ({"warmup_steps": -1}, r"warmup_steps must be an int >= 0 .*; got -1"),
        ({"rmax_ramp_end": 2.5}, r"rmax_ramp_end must be an int >= 0 .*; got 2\.5"),
        ({"dmax_ramp_end": None}, r"dmax_ramp_end must be an int >= 0 .*; got None"),
        ({"warmup_steps": 10, "rmax_ramp_end": 5, "dmax_ramp_end": 20},
         r"rmax_ramp_end \(5\) must be >= warmup_steps \(10\).*not be monotone"),
        ({"warmup_steps": 10, "rmax_ramp_end": 20, "dmax_ramp_end": 5},
         r"dmax_ramp_end \(5\) must be >= warmup_steps \(10\)"),
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\] or None; got 1\.5"),
        ({"eps": None}, r"eps must be a positive finite float; got None"),
        ({"eps": 0.0}, r"eps must be a positive finite float; got 0\.0"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        normlab.BatchRenorm(8, **kwargs)
    assert isinstance(info.value, ValueError)


def test_registry_and_repr() -> None:
    m = normlab.create("brn", 8, rmax=2.0, **NO_SCHEDULE)
    assert isinstance(m, normlab.BatchRenorm)
    text = repr(m)
    for part in ("rmax=2.0", "dmax=5.0", "warmup_steps=0", "rmax_ramp_end=0", "dmax_ramp_end=0",
                 "momentum=0.01"):
        assert part in text, text


@pytest.mark.parametrize("schedule", [(5000, 40000, 25000), (3, 3, 3), (2, 6, 4), (0, 5, 0),
                                      (0, 0, 5), (2, 2, 6)])
def test_schedule_from_an_int_step_equals_the_tensor_one(schedule: tuple[int, int, int]) -> None:
    """clip_limits reads the step count on the CPU (Python floats); accelerators and
    torch.compile keep the 0-dim tensor path: both give the same float64 limits, bit for bit."""
    from normlab.norms.batch_renorm import clip_schedule

    for step in (*STEPS, 2, 3, 4, 6):
        from_int = clip_schedule(step, 3.0, 5.0, *schedule)
        from_tensor = clip_schedule(torch.tensor(step), 3.0, 5.0, *schedule)
        assert all(isinstance(v, float) for v in from_int)
        assert from_int == tuple(float(v) for v in from_tensor), (step, schedule)
        assert from_int == pytest.approx(ref.schedule_ref(step, 3.0, 5.0, *schedule), abs=1e-12)
