"""What is unique to Batch-Instance Normalization (METHODS.md section 7, Appendix A.5).

The generic contract, state and memory tests run on the catalogue cases
(cases_batch_instance_norm.py). Here: ρ = 1 is BN and ρ = 0 is IN (float64 oracles and
torch.nn; outputs, gradients and running statistics, train and eval), other gate values including
ones outside [0, 1] against the float64 oracle, the clipping of ρ after real optimizer steps, the
reference's optimizer settings for the gates, loading rules, (N, C) input, and the structure of
the fast path.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normlab
import oracles
import oracles_mixed_stats as ref
from catalogue import close, load_script, make_input, output_and_grads, randomize_, snapshot
from normlab.errors import ConfigError, InputError
from normlab.functional import batch_instance_norm
from normlab.norms.batch_instance_norm import (
    clamp_gates_,
    clamp_gates_after_step,
    gate_param_groups,
    gate_parameters,
)

F64 = torch.float64
F32 = torch.float32


def _with_gate(m: normlab.BatchInstanceNorm, value: float) -> normlab.BatchInstanceNorm:
    with torch.no_grad():
        m.gate.fill_(value)
    return m


def test_defaults_follow_the_reference() -> None:
    m = normlab.BatchInstanceNorm(5)
    assert torch.equal(m.gate.detach(), torch.ones(5))  # starts as pure BN
    assert torch.equal(m.weight.detach(), torch.ones(5))
    assert torch.equal(m.bias.detach(), torch.zeros(5))
    assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (1e-5, 0.1, True, True)
    assert torch.equal(m.running_mean, torch.zeros(5))
    assert torch.equal(m.running_var, torch.ones(5))
    with torch.no_grad():
        m.gate.fill_(0.3)
    m.reset_parameters()
    assert torch.equal(m.gate.detach(), torch.ones(5))


# -- ρ = 1 is BN, ρ = 0 is IN (Appendix A.5) ------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gate_one_is_batch_norm(training: bool) -> None:
    """Against torch.nn.BatchNorm2d in float32 at 1e-6: outputs, gradients, running stats."""
    c = 6
    m = _with_gate(randomize_(normlab.BatchInstanceNorm(c)), 1.0).train(training)
    bn = nn.BatchNorm2d(c).train(training)
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, key).copy_(getattr(m, key))
    for step in range(3):
        x = make_input((4, c, 5, 3), F32, seed=step)
        g = make_input((4, c, 5, 3), F32, seed=10 + step)
        y0, gx0, gp0 = output_and_grads(bn, x, g)
        y1, gx1, gp1 = output_and_grads(m, x, g)
        close(y1, y0, 1e-6, msg="output")
        close(gx1, gx0, 1e-6, msg="input grad")
        close(gp1["weight"], gp0["weight"], 1e-6, msg="weight grad")
        close(gp1["bias"], gp0["bias"], 1e-6, msg="bias grad")
        close(m.running_mean, bn.running_mean, 1e-6)
        close(m.running_var, bn.running_var, 1e-6)
        expected = oracles.batch_norm_ref(
            x, bn.weight, bn.bias, *(() if training else (bn.running_mean, bn.running_var)),
            training=training,
        )
        close(y1.double(), expected, 1e-6, msg="float64 oracle")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gate_zero_is_instance_norm(training: bool) -> None:
    """Against torch.nn.InstanceNorm2d(affine=True) in float32 at 1e-6; x̂_I never uses the
    running statistics, so eval is IN too (the running buffers still update in training)."""
    c = 6
    m = _with_gate(randomize_(normlab.BatchInstanceNorm(c)), 0.0).train(training)
    inorm = nn.InstanceNorm2d(c, affine=True)
    with torch.no_grad():
        inorm.weight.copy_(m.weight)
        inorm.bias.copy_(m.bias)
    for step in range(2):
        x = make_input((4, c, 5, 3), F32, seed=step)
        g = make_input((4, c, 5, 3), F32, seed=10 + step)
        y0, gx0, gp0 = output_and_grads(inorm, x, g)
        y1, gx1, gp1 = output_and_grads(m, x, g)
        close(y1, y0, 1e-6, msg="output")
        close(gx1, gx0, 1e-6, msg="input grad")
        close(gp1["weight"], gp0["weight"], 1e-6, msg="weight grad")
        close(gp1["bias"], gp0["bias"], 1e-6, msg="bias grad")
        close(y1.double(), oracles.instance_norm_ref(x, m.weight, m.bias), 1e-6)


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0, 1.5, -0.5], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 5), (2, 4, 3, 2), (2, 4, 2, 2, 3)], ids=str)
def test_gate_values_match_float64_oracle(
    rho: float, training: bool, shape: tuple[int, ...]
) -> None:
    """Including ρ outside [0, 1]: the forward uses ρ as stored (documented)."""
    m = _with_gate(randomize_(normlab.BatchInstanceNorm(4, dtype=F64)), rho).train(training)
    x = make_input(shape, F64, seed=2)
    expected = ref.batch_instance_norm_ref(
        x, m.gate, m.weight, m.bias, m.running_mean, m.running_var, training=training
    )
    close(m(x), expected, 1e-12)


def test_per_channel_gates() -> None:
    m = randomize_(normlab.BatchInstanceNorm(3, dtype=F64)).train()
    with torch.no_grad():
        m.gate.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x = make_input((4, 3, 6), F64, seed=3)
    y = m(x)
    bn = oracles.batch_norm_ref(x, m.weight, m.bias, training=True)
    inorm = oracles.instance_norm_ref(x, m.weight, m.bias)
    close(y[:, 0], inorm[:, 0], 1e-12)
    close(y[:, 1], (bn[:, 1] + inorm[:, 1]) / 2, 1e-12)
    close(y[:, 2], bn[:, 2], 1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradients_match_float64_oracle(training: bool) -> None:
    """dL/dρ = Σ g·γ·(x̂_B − x̂_I), and every other gradient, against autograd on the oracle."""
    m = randomize_(normlab.BatchInstanceNorm(5, dtype=F64)).train(training)
    x = make_input((3, 5, 4, 2), F64, seed=4).requires_grad_()
    g = make_input((3, 5, 4, 2), F64, seed=5)
    params = [m.gate, m.weight, m.bias]
    got = torch.autograd.grad(m(x), [x, *params], g)
    expected_y = ref.batch_instance_norm_ref(
        x, *params, m.running_mean, m.running_var, training=training
    )
    expected = torch.autograd.grad(expected_y, [x, *params], g)
    for name, a, b in zip(["x", "gate", "weight", "bias"], got, expected, strict=True):
        close(a, b, 1e-10, msg=name)


def test_rank2_input_is_batch_norm_with_weight_gamma_rho() -> None:
    """(N, C): x̂_I = 0 exactly (the reference fails on such input), so y = γρ·x̂_B + β."""
    m = randomize_(normlab.BatchInstanceNorm(4, dtype=F64)).train()
    x = make_input((6, 4), F64, seed=6)
    expected = oracles.batch_norm_ref(x, m.weight * m.gate, m.bias, training=True)
    close(m(x), expected, 1e-12)


# -- keeping ρ in [0, 1] ---------------------------------------------------------------------------


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), normlab.BatchInstanceNorm(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 1), normlab.BatchInstanceNorm(4))


def _step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 6, 6, generator=gen)
    target = torch.randn(4, 4, 4, 4, generator=gen)
    opt.zero_grad()
    ((model(x) - target) ** 2).sum().backward()
    opt.step()


def test_clamp_hook_keeps_gates_in_unit_interval_after_real_optimizer_steps() -> None:
    model = _model()
    opt = torch.optim.SGD(gate_param_groups(model, lr=0.1), lr=0.1, momentum=0.9)
    unclipped = _model()
    opt_unclipped = torch.optim.SGD(gate_param_groups(unclipped, lr=0.1), lr=0.1, momentum=0.9)
    handle = clamp_gates_after_step(opt, model)
    for step in range(4):
        _step(model, opt, step)
        _step(unclipped, opt_unclipped, step)
    gates = torch.cat([p.detach() for p in gate_parameters(model)])
    raw = torch.cat([p.detach() for p in gate_parameters(unclipped)])
    assert ((raw < 0) | (raw > 1)).any(), "the test must push some gate out of [0, 1]"
    assert ((gates >= 0) & (gates <= 1)).all()
    assert (gates == 1).any() or (gates == 0).any(), "clipping was active"
    handle.remove()
    for step in range(4, 8):
        _step(model, opt, step)
    gates = torch.cat([p.detach() for p in gate_parameters(model)])
    assert ((gates < 0) | (gates > 1)).any(), "after handle.remove() nothing clips"


def test_one_clipped_step_equals_the_projected_update() -> None:
    """ρ ← clip(ρ − η·∂L/∂ρ, 0, 1): the paper's projected gradient step, with plain SGD."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    clamp_gates_after_step(opt, model)
    gates = gate_parameters(model)
    before = [p.detach().clone() for p in gates]
    gen = torch.Generator().manual_seed(1)
    x, target = torch.randn(4, 3, 6, 6, generator=gen), torch.randn(4, 4, 4, 4, generator=gen)
    opt.zero_grad()
    ((model(x) - target) ** 2).sum().backward()
    grads = [p.grad.detach().clone() for p in gates]
    opt.step()
    for p, b, g in zip(gates, before, grads, strict=True):
        assert torch.equal(p.detach(), (b - 0.5 * g).clamp(0, 1))


def test_gate_param_groups_follow_the_reference() -> None:
    """Gates: LR × 10 and no weight decay; everything else: the optimizer's defaults."""
    model = _model()
    groups = gate_param_groups(model, lr=0.1)
    gates = gate_parameters(model)
    assert len(gates) == 2
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in gates]
    assert groups[1]["lr"] == pytest.approx(1.0) and groups[1]["weight_decay"] == 0.0
    others = {id(p) for p in groups[0]["params"]}
    assert others == {id(p) for p in model.parameters()} - {id(p) for p in gates}
    assert set(groups[0]) == {"params"}
    opt = torch.optim.SGD(groups, lr=0.1, weight_decay=1e-2)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 6, 6, generator=gen)
    opt.zero_grad()
    (model(x) ** 3).sum().backward()
    opt.step()
    for p in model.parameters():
        old = before[id(p)]
        if any(p is q for q in gates):
            expected = old - 1.0 * p.grad
        else:
            expected = old - 0.1 * (p.grad + 1e-2 * old)
        close(p.detach(), expected, 1e-6)


def test_clamp_helpers() -> None:
    model = _model()
    with torch.no_grad():
        model[1].gate.copy_(torch.tensor([-0.5, 0.5, 1.5, math.inf]))
        model[4].gate.fill_(2.0)
    assert clamp_gates_(model) == 2
    assert torch.equal(model[1].gate.detach(), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert torch.equal(model[4].gate.detach(), torch.ones(4))
    layer = _with_gate(normlab.BatchInstanceNorm(2), -3.0)
    assert layer.clamp_gate_() is layer
    assert torch.equal(layer.gate.detach(), torch.zeros(2))
    assert clamp_gates_(nn.Linear(2, 2)) == 0


# -- loading --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(1.5, "1.5"), (-0.1, "-0.1"), (math.nan, "nan"), (math.inf, "inf")],
    ids=["above", "below", "nan", "inf"],
)
def test_load_rejects_gate_outside_unit_interval(bad: float, shown: str) -> None:
    state = normlab.BatchInstanceNorm(4).state_dict()
    state["gate"] = torch.tensor([0.5, bad, 1.0, 0.0])
    target = randomize_(normlab.BatchInstanceNorm(4))
    before = snapshot(target)
    with pytest.raises(ConfigError, match=r"cannot load 'gate'") as info:
        target.load_state_dict(state)
    message = str(info.value)
    assert shown in message and "[0, 1]" in message
    assert "clamp_(0, 1)" in message and "clamp_gates_after_step" in message
    after = snapshot(target)
    assert all(torch.equal(after[k], before[k]) for k in before), "nothing may be loaded"


def test_load_accepts_the_interval_ends_and_checks_shape() -> None:
    state = normlab.BatchInstanceNorm(4).state_dict()
    state["gate"] = torch.tensor([0.0, 1.0, 0.25, 1.0])
    target = normlab.BatchInstanceNorm(4)
    target.load_state_dict(state)
    assert torch.equal(target.gate.detach(), state["gate"])
    state["gate"] = torch.ones(3)
    with pytest.raises(ConfigError, match=r"'gate': shape \(3,\), expected \(4,\)"):
        target.load_state_dict(state)


def test_loads_batch_norm_checkpoint() -> None:
    """A torch BatchNorm2d checkpoint loads (strict=False: the gate stays 1), giving BN."""
    bn = randomize_(nn.BatchNorm2d(6)).eval()
    m = normlab.BatchInstanceNorm(6)
    result = m.load_state_dict(bn.state_dict(), strict=False)
    assert result.missing_keys == ["gate"] and not result.unexpected_keys
    x = make_input((2, 6, 3, 3), F32, seed=7)
    close(m.eval()(x), bn(x), 1e-6)


# -- functional -----------------------------------------------------------------------------------


def test_functional_checks_its_arguments() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(InputError, match="gate must be a 1-D tensor"):
        batch_instance_norm(x, torch.ones(1, 3))
    with pytest.raises(InputError, match=r"expected input of shape \(N, 5, \*S\)"):
        batch_instance_norm(x, torch.ones(5))
    with pytest.raises(InputError, match="pass both running_mean and running_var"):
        batch_instance_norm(x, torch.ones(3), running_var=torch.ones(3))
    with pytest.raises(InputError, match="1 value per statistic"):
        batch_instance_norm(torch.randn(1, 3), torch.ones(3), training=True)


# -- the fast path ---------------------------------------------------------------------------------


def test_eager_benchmark_baseline_computes_the_same() -> None:
    module = load_script("benchmarks/eager/batch_instance_norm.py")
    m = randomize_(normlab.BatchInstanceNorm(6, dtype=F64)).train()
    x = make_input((3, 6, 4, 2), F64, seed=8)
    expected = ref.batch_instance_norm_ref(x, m.gate, m.weight, m.bias, training=True)
    close(module.eager_batch_instance_norm(m, x), expected, 1e-12)
