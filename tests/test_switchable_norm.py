"""What is unique to Switchable Normalization (METHODS.md section 20, Appendix A.4).

The generic contract, state and memory tests run on the catalogue cases (cases_switchable_norm.py).
Here: one-hot importance weights reproduce BN / IN / LN (float64 oracles and torch.nn, outputs,
gradients and running statistics), the shared-computation identities (statistics merged from the
instance moments equal the ones computed from the raw values), the momentum conversion from the
reference's TF-style convention, branch subsets, (N, C) input, loading rules, and the structure
of the fast path (one statistics pass over the input).
"""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn

import normlab
import oracles
import oracles_mixed_stats as ref
from catalogue import close, load_script, make_input, output_and_grads, randomize_, snapshot
from normlab.errors import ConfigError, InputError
from normlab.functional import switchable_norm
from normlab.norms.switchable_norm import AnalyticCoefficients

F64 = torch.float64
F32 = torch.float32
BRANCHES = ("in", "ln", "bn")
ONE_HOT = 1e4  # softmax((1e4, -1e4, -1e4)) is exactly (1, 0, 0), in float32 too


def _one_hot(m: normlab.SwitchableNorm, mean_branch: str, var_branch: str | None = None) -> None:
    with torch.no_grad():
        for logits, branch in ((m.mean_weight, mean_branch), (m.var_weight, var_branch)):
            logits.copy_(torch.tensor(
                [ONE_HOT if b == (branch or mean_branch) else -ONE_HOT for b in m.branches]
            ))


def _dims(branch: str, ndim: int) -> tuple[int, ...]:
    spatial = tuple(range(2, ndim))
    return {"in": spatial, "ln": (1, *spatial), "bn": (0, *spatial)}[branch]


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_follow_the_paper() -> None:
    m = normlab.SwitchableNorm(5)
    assert m.branches == BRANCHES
    assert torch.equal(m.mean_weight.detach(), torch.ones(3))
    assert torch.equal(m.var_weight.detach(), torch.ones(3))
    close(torch.softmax(m.mean_weight.detach(), 0), torch.full((3,), 1 / 3), 1e-7)
    assert torch.equal(m.weight.detach(), torch.ones(5))
    assert torch.equal(m.bias.detach(), torch.zeros(5))
    assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (1e-5, 0.1, True, True)
    assert torch.equal(m.running_mean, torch.zeros(5))
    assert torch.equal(m.running_var, torch.ones(5))


def test_last_gamma_initializes_gamma_to_zero() -> None:
    m = normlab.SwitchableNorm(4, last_gamma=True)
    assert torch.equal(m.weight.detach(), torch.zeros(4))
    with torch.no_grad():
        m.weight.fill_(3.0)
        m.mean_weight.fill_(2.0)
    m.reset_parameters()
    assert torch.equal(m.weight.detach(), torch.zeros(4))
    assert torch.equal(m.mean_weight.detach(), torch.ones(3))
    assert "last_gamma=True" in repr(m)
    x = make_input((3, 4, 5), F32)
    assert torch.equal(m(x), torch.zeros_like(x))  # γ = 0, β = 0: the block starts as identity


def test_softmax_of_one_hot_logits_is_exact_in_float32() -> None:
    w = torch.softmax(torch.tensor([ONE_HOT, -ONE_HOT, -ONE_HOT]), 0)
    assert torch.equal(w, torch.tensor([1.0, 0.0, 0.0]))


# -- one-hot importance weights reproduce the selected normalizer (Appendix A.4) -----------------


def _torch_twin(branch: str, c: int) -> nn.Module:
    if branch == "bn":
        return nn.BatchNorm2d(c)
    if branch == "in":
        return nn.InstanceNorm2d(c, affine=True)
    return nn.GroupNorm(1, c)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_one_hot_reproduces_torch_norms(branch: str, training: bool) -> None:
    """Outputs, input and affine gradients, and running statistics at 1e-6 in float32."""
    c = 6
    sn = randomize_(normlab.SwitchableNorm(c))
    _one_hot(sn, branch)
    twin = _torch_twin(branch, c)
    with torch.no_grad():
        twin.weight.copy_(sn.weight)
        twin.bias.copy_(sn.bias)
        if branch == "bn":
            twin.running_mean.copy_(sn.running_mean)
            twin.running_var.copy_(sn.running_var)
    sn.train(training)
    twin.train(training)
    for step in range(3):
        x = make_input((4, c, 5, 3), F32, seed=step)
        g = make_input((4, c, 5, 3), F32, seed=10 + step)
        y0, gx0, gp0 = output_and_grads(twin, x, g)
        y1, gx1, gp1 = output_and_grads(sn, x, g)
        close(y1, y0, 1e-6, msg="output")
        close(gx1, gx0, 1e-6, msg="input grad")
        close(gp1["weight"], gp0["weight"], 1e-6, msg="weight grad")
        close(gp1["bias"], gp0["bias"], 1e-6, msg="bias grad")
        if branch == "bn":  # the BN branch's buffers follow torch BatchNorm exactly
            close(sn.running_mean, twin.running_mean, 1e-6)
            close(sn.running_var, twin.running_var, 1e-6)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 6, 5), (3, 6, 4, 3), (2, 6, 3, 2, 3)], ids=str)
def test_one_hot_matches_float64_oracles(
    branch: str, training: bool, shape: tuple[int, ...]
) -> None:
    sn = randomize_(normlab.SwitchableNorm(6)).train(training)
    _one_hot(sn, branch)
    x = make_input(shape, F32, seed=3)
    if branch == "bn":
        expected = oracles.batch_norm_ref(
            x, sn.weight, sn.bias, sn.running_mean, sn.running_var, training=training
        )
    elif branch == "in":
        expected = oracles.instance_norm_ref(x, sn.weight, sn.bias)
    else:
        expected = oracles.layer_norm_ref(x, sn.weight, sn.bias)
    close(sn(x).double(), expected, 1e-6)


# -- shared computation: merged statistics equal the ones of the raw values ------------------------


@pytest.mark.parametrize("mean_branch", BRANCHES)
@pytest.mark.parametrize("var_branch", BRANCHES)
def test_merged_statistics_equal_direct_ones(mean_branch: str, var_branch: str) -> None:
    """With λ selecting one mean and λ' one variance, y = (x − μ_a)/sqrt(σ²_b + ε): the LN and
    BN moments merged from instance moments equal biased moments of the raw values, exactly
    up to rounding (float64, 1e-12)."""
    x = make_input((4, 5, 3, 2), F64, seed=4)
    sn = normlab.SwitchableNorm(5, affine=False, dtype=F64).train()
    _one_hot(sn, mean_branch, var_branch)
    mu = x.mean(_dims(mean_branch, x.dim()), keepdim=True)
    var = x.var(_dims(var_branch, x.dim()), correction=0, keepdim=True)
    close(sn(x), (x - mu) / torch.sqrt(var + sn.eps), 1e-12)


@pytest.mark.parametrize("branch", BRANCHES)
def test_merged_statistics_are_stable_for_large_means(branch: str) -> None:
    """μ/σ = 1e3 in float32: the merges add variances and squared deviations of means (no
    E[x²] − E[x]² cancellation), so the error stays within 50·u·(1 + κ) of float64 — the
    reference's E[x²] − E[x]² form would lose every digit of σ² here."""
    gen = torch.Generator().manual_seed(5)
    x = (1000.0 + torch.randn(4, 6, 8, 8, generator=gen, dtype=F64)).to(F32)
    sn = normlab.SwitchableNorm(6, affine=False).train()
    _one_hot(sn, branch)
    dims = _dims(branch, 4)
    expected = (x.double() - x.double().mean(dims, keepdim=True)) / torch.sqrt(
        x.double().var(dims, correction=0, keepdim=True) + sn.eps
    )
    close(sn(x).double(), expected, 50 * 6e-8 * (1 + 1000.0))


def test_uniform_weights_average_the_three_statistics() -> None:
    """At initialization μ = (μ_IN + μ_LN + μ_BN)/3 and σ² likewise (float64, 1e-12)."""
    x = make_input((3, 4, 5, 2), F64, seed=6)
    sn = normlab.SwitchableNorm(4, dtype=F64).train()
    mu = sum(x.mean(_dims(b, 4), keepdim=True) for b in BRANCHES) / 3
    var = sum(x.var(_dims(b, 4), correction=0, keepdim=True) for b in BRANCHES) / 3
    close(sn(x), (x - mu) / torch.sqrt(var + sn.eps), 1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradients_match_float64_oracle(training: bool) -> None:
    sn = randomize_(normlab.SwitchableNorm(5, dtype=F64)).train(training)
    x = make_input((3, 5, 4, 2), F64, seed=7).requires_grad_()
    g = make_input((3, 5, 4, 2), F64, seed=8)
    params = [sn.mean_weight, sn.var_weight, sn.weight, sn.bias]
    got = torch.autograd.grad(sn(x), [x, *params], g)
    expected_y = ref.switchable_norm_ref(
        x, *params[:2], sn.weight, sn.bias, sn.running_mean, sn.running_var, training=training
    )
    expected = torch.autograd.grad(expected_y, [x, *params], g)
    for name, a, b in zip(["x", "mean_weight", "var_weight", "weight", "bias"], got, expected,
                          strict=True):
        close(a, b, 1e-10, msg=name)


# -- branches ------------------------------------------------------------------------------------


def test_branches_are_kept_in_reference_order() -> None:
    m = normlab.SwitchableNorm(4, branches=["bn", "in"])
    assert m.branches == ("in", "bn")
    assert m.mean_weight.shape == (2,) and m.var_weight.shape == (2,)
    assert "branches=('in', 'bn')" in repr(m)


@pytest.mark.parametrize("bad", [(), ("gn",), ("bn", "bn"), "bn", None, 3], ids=repr)
def test_bad_branches_are_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"branches must be a non-empty tuple.*got") as info:
        normlab.SwitchableNorm(4, branches=bad)  # type: ignore[arg-type]
    assert "('in', 'ln', 'bn')" in str(info.value)


def test_without_bn_branch_there_are_no_buffers() -> None:
    m = normlab.SwitchableNorm(4, branches=("in", "ln"))
    assert m.running_mean is None and m.track_running_stats is False
    assert set(m.state_dict()) == {"weight", "bias", "mean_weight", "var_weight"}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(5, 4), (5, 4, 1)], ids=str)
def test_instance_branch_needs_positions(training: bool, shape: tuple[int, ...]) -> None:
    m = normlab.SwitchableNorm(4).train(training)
    with pytest.raises(InputError, match=r"branches=\('ln', 'bn'\)") as info:
        m(torch.randn(shape))
    assert str(shape) in str(info.value)
    with pytest.raises(InputError, match="IN branch"):
        switchable_norm(torch.randn(shape), torch.ones(3), torch.ones(3), training=True)


def test_rank2_input_is_the_reference_switchnorm1d() -> None:
    """(N, C) with branches LN and BN: the reference's SwitchNorm1d, biased variances."""
    m = randomize_(normlab.SwitchableNorm(6, branches=("ln", "bn"), dtype=F64)).train()
    x = make_input((5, 6), F64, seed=9)
    w_m, w_v = torch.softmax(m.mean_weight, 0), torch.softmax(m.var_weight, 0)
    mu = w_m[0] * x.mean(1, keepdim=True) + w_m[1] * x.mean(0, keepdim=True)
    var = w_v[0] * x.var(1, correction=0, keepdim=True) + w_v[1] * x.var(0, correction=0,
                                                                         keepdim=True)
    expected = (x - mu) / torch.sqrt(var + m.eps) * m.weight + m.bias
    close(m(x), expected.detach(), 1e-12)


def test_training_with_one_value_per_batch_statistic_raises() -> None:
    m = normlab.SwitchableNorm(3, branches=("ln", "bn"))
    with pytest.raises(InputError, match="1 value per statistic"):
        m(torch.randn(1, 3))
    m.eval()(torch.randn(1, 3))  # eval uses the running statistics: fine


# -- running statistics ---------------------------------------------------------------------------


def test_momentum_is_pytorch_convention_of_reference_tf_momentum() -> None:
    """normlab momentum 0.1 == the reference SwitchNorm2d's m = 0.9 on the old value:
    run ← 0.9·run + 0.1·batch (unbiased variance stored, as torch BatchNorm)."""
    m = randomize_(normlab.SwitchableNorm(6, dtype=F64)).train()
    old_mean, old_var = m.running_mean.clone(), m.running_var.clone()
    x = make_input((4, 6, 3, 2), F64, seed=10)
    m(x)
    reference_m = 0.9
    n = 4 * 3 * 2
    batch_mean = x.mean((0, 2, 3))
    batch_var = x.var((0, 2, 3), correction=0) * n / (n - 1)
    close(m.running_mean, reference_m * old_mean + (1 - reference_m) * batch_mean, 1e-12)
    close(m.running_var, reference_m * old_var + (1 - reference_m) * batch_var, 1e-12)
    assert m.num_batches_tracked.item() == 1


def test_eval_uses_running_statistics_for_the_bn_branch_only() -> None:
    m = randomize_(normlab.SwitchableNorm(6)).eval()
    x = make_input((3, 6, 4), F32, seed=11)
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.3, 0.5, -ONE_HOT]))
        m.var_weight.copy_(torch.tensor([-0.2, 0.1, -ONE_HOT]))
    y = m(x)
    with torch.no_grad():
        m.running_mean.add_(5.0)
        m.running_var.mul_(3.0)
    assert torch.equal(m(x), y), "IN and LN never read the running statistics"
    with torch.no_grad():
        m.mean_weight[2] = 0.0
    y_bn = m(x)
    with torch.no_grad():
        m.running_mean.add_(1.0)
    assert not torch.allclose(m(x), y_bn), "the BN branch reads them in eval"


def test_loads_batch_norm_checkpoint_statistics() -> None:
    """torch BatchNorm2d stores the same buffers (unbiased variance): its state loads
    (strict=False: the importance logits are SN's own), and BN-one-hot SN then equals it."""
    bn = randomize_(nn.BatchNorm2d(6)).eval()
    sn = normlab.SwitchableNorm(6)
    result = sn.load_state_dict(bn.state_dict(), strict=False)
    assert set(result.missing_keys) == {"mean_weight", "var_weight"}
    assert not result.unexpected_keys
    _one_hot(sn, "bn")
    x = make_input((2, 6, 3, 3), F32, seed=12)
    close(sn.eval()(x), bn(x), 1e-6)


@pytest.mark.parametrize("key", ["mean_weight", "var_weight"])
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_load_rejects_non_finite_importance_logits(key: str, bad: float) -> None:
    state = normlab.SwitchableNorm(4).state_dict()
    state[key] = torch.tensor([0.0, bad, 1.0])
    target = randomize_(normlab.SwitchableNorm(4))
    before = snapshot(target)
    with pytest.raises(ConfigError, match=rf"'{key}': non-finite importance logits"):
        target.load_state_dict(state)
    after = snapshot(target)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_load_rejects_logits_of_other_branches() -> None:
    state = normlab.SwitchableNorm(4, branches=("ln", "bn")).state_dict()
    with pytest.raises(
        ConfigError, match=r"'mean_weight': shape \(2,\), expected \(3,\) for branches="
    ) as info:
        normlab.SwitchableNorm(4).load_state_dict(state)
    assert "construct the layer with the branches" in str(info.value)


# -- functional -----------------------------------------------------------------------------------


def test_functional_checks_its_arguments() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(InputError, match=r"mean_weight must hold one logit per branch.*\(2,\)"):
        switchable_norm(x, torch.ones(3), torch.ones(2), branches=("ln", "bn"))
    with pytest.raises(InputError, match="pass both running_mean and running_var"):
        switchable_norm(x, torch.ones(3), torch.ones(3), torch.zeros(3))
    with pytest.raises(InputError, match=r"expected input of shape \(N, 5, \*S\)"):
        switchable_norm(x, torch.ones(3), torch.ones(3), weight=torch.ones(5))


def test_functional_without_running_stats_uses_batch_statistics() -> None:
    x = make_input((3, 4, 5), F64, seed=13)
    w = torch.tensor([0.2, -0.4, 0.9], dtype=F64)
    y = switchable_norm(x, w, w, training=False)
    expected = ref.switchable_norm_ref(x, w, w, training=True)
    close(y, expected, 1e-12)


# -- the fast path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("branches", [BRANCHES, ("ln", "bn")], ids=str)
def test_eager_benchmark_baseline_computes_the_same(branches: tuple[str, ...]) -> None:
    m = randomize_(normlab.SwitchableNorm(6, branches=branches, dtype=F64)).train()
    x = make_input((3, 6, 4, 2), F64, seed=14)
    expected = ref.switchable_norm_ref(
        x, m.mean_weight, m.var_weight, m.weight, m.bias, branches=branches, training=True
    )
    eager = load_script("benchmarks/eager/switchable_norm.py")
    close(eager.eager_switchable_norm(m, x), expected, 1e-12)


@pytest.mark.parametrize("cls", [normlab.SwitchableNorm, normlab.BatchInstanceNorm])
def test_backward_leaves_no_reference_cycle(cls: type) -> None:
    """The coefficient function of each step is freed with its graph (a cycle through a custom
    autograd Function's ctx would keep every step's graph alive)."""

    def alive() -> int:
        return sum(type(o) is AnalyticCoefficients for o in gc.get_objects())

    m = cls(4)
    x = torch.randn(3, 4, 5, requires_grad=True)
    m(x).sum().backward()
    before = alive()
    for _ in range(3):
        m(x).sum().backward()
        torch.autograd.grad(m(x).sum(), x, create_graph=True)[0].sum().backward()
    assert alive() == before


# dynamo's tracing of _InstanceAffine (shared code, not this method's: its autograd.grad call
# breaks the graph) raises these torch-internal warnings in torch 2.13
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("cls", [normlab.SwitchableNorm, normlab.BatchInstanceNorm])
def test_torch_compile_gives_the_eager_results(cls: type) -> None:
    """Dynamo traces the layer (the coefficient cache and the batch-moment hand-off are
    compile-safe); outputs, gradients and running statistics equal the eager ones."""
    eager = randomize_(cls(4))
    compiled_module = randomize_(cls(4))
    compiled = torch.compile(compiled_module, backend="eager", fullgraph=False)
    for step in range(2):
        x = make_input((3, 4, 5), F32, seed=20 + step)
        g = make_input((3, 4, 5), F32, seed=30 + step)
        y0, gx0, *_ = output_and_grads(eager, x, g)
        y1, gx1, *_ = output_and_grads(compiled, x, g)
        close(y1, y0, 1e-6)
        close(gx1, gx0, 1e-6)
    for key, value in eager.state_dict().items():
        close(compiled_module.state_dict()[key].float(), value.float(), 1e-6, msg=key)
