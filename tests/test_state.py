"""Running statistics and state: exact update laws (RELIABILITY I12), purity (I13), validation of
loaded state, fault tolerance and checkpoint continuation.

Expected values come from the float64 oracles in tests/oracles.py or from closed forms.
"""

from __future__ import annotations

import collections
import copy
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import normlab
import oracles
from catalogue import (
    CASE_IDS,
    CASES,
    RUNNING_CASES,
    RUNNING_IDS,
    Case,
    assert_state_equal,
    close,
    make_input,
    randomize_,
    snapshot,
)
from normlab.errors import NormlabError
from normlab.norms._training import hooks_of
from normlab.surgery.layers import class_stats_kind

F64 = torch.float64
running_cases = pytest.mark.parametrize("case", RUNNING_CASES, ids=RUNNING_IDS)
BN = next(c for c in CASES if c.id == "batch_norm")


def _batches(case: Case, count: int, dtype: torch.dtype = F64) -> list[Tensor]:
    """Batches of varying batch size (so per-step counts n differ)."""
    shape = case.shapes[-2]
    return [make_input((shape[0] + i % 3, *shape[1:]), dtype, seed=30 + i) for i in range(count)]


def _per_instance(case: Case) -> bool:
    """torch.nn InstanceNorm's running-statistics rule (averages of per-sample moments)."""
    return class_stats_kind(case.cls) == "instance"


def _tracked(m: nn.Module) -> int | None:
    counter = getattr(m, "num_batches_tracked", None)
    return None if counter is None else int(counter.item())


# -- exact laws -----------------------------------------------------------------------------------


RUNNING_LAWS = [(c, m) for c in RUNNING_CASES for m in c.momenta]


def _running_buffers(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in m.named_buffers() if v is not None}


@pytest.mark.parametrize(
    ("case", "momentum"), RUNNING_LAWS, ids=[f"{c.id}-{m}" for c, m in RUNNING_LAWS]
)
def test_running_stats_match_oracle(case: Case, momentum: float | None) -> None:
    m = randomize_(case.make(dtype=F64, momentum=momentum)).train()
    m.reset_running_stats()
    start = _running_buffers(m)
    if case.running_step is not None:  # the method's own law, written from its paper
        expected = {k: v.to(F64) if v.is_floating_point() else v for k, v in start.items()}
        for step, x in enumerate(_batches(case, 4)):
            m(x)
            expected = case.running_step(expected, x, momentum)
            for key, value in expected.items():
                actual = getattr(m, key)
                if value.is_floating_point():
                    close(actual, value, 1e-12, msg=f"{key} after step {step + 1}")
                else:
                    assert torch.equal(actual, value), f"{key} after step {step + 1}"
        if momentum == 0.0:
            for key, value in start.items():
                if value.is_floating_point():
                    assert torch.equal(getattr(m, key), value), key
        return
    rm = torch.zeros(case.num_features, dtype=F64)
    rv = torch.ones(case.num_features, dtype=F64)
    tracked = 0
    for step, x in enumerate(_batches(case, 4)):
        m(x)
        rm, rv, tracked = oracles.running_stats_step_ref(
            rm, rv, tracked, x, momentum, per_instance=_per_instance(case)
        )
        close(m.running_mean, rm, 1e-12, msg=f"running_mean after step {step + 1}")
        close(m.running_var, rv, 1e-12, msg=f"running_var after step {step + 1}")
        assert _tracked(m) in (None, tracked)
    if momentum == 0.0:  # nothing may move, not even by one rounding
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m.running_var, torch.ones_like(m.running_var))


TORCH_LAW = [c for c in RUNNING_CASES if c.running_step is None]


@pytest.mark.parametrize("case", TORCH_LAW, ids=[c.id for c in TORCH_LAW])
def test_two_values_per_statistic_store_the_unbiased_variance(case: Case) -> None:
    """n = 2 values per statistic, the smallest set with a variance: the stored variance is
    s² = σ²·2/(2 − 1), as torch.nn stores it (momentum 1: the buffers are the batch's)."""
    c = case.num_features
    per_instance = _per_instance(case)
    x = make_input((3, c, 2) if per_instance else (1, c, 2), F64, seed=5)
    m = randomize_(case.make(dtype=F64, momentum=1.0)).train()
    m(x)
    zeros, ones = torch.zeros(c, dtype=F64), torch.ones(c, dtype=F64)
    mean, var, _ = oracles.running_stats_step_ref(zeros, ones, 0, x, 1.0,
                                                  per_instance=per_instance)
    close(m.running_mean, mean, 1e-12, msg="running_mean")
    close(m.running_var, var, 1e-12, msg="running_var")


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0], ids=str)
def test_one_step_closed_form(momentum: float) -> None:
    """From (0, 1): rm = m·μ_B and rv = (1 − m) + m·σ²_B·n/(n − 1), σ² biased."""
    x = make_input((5, 6, 4), F64, seed=1)
    m = BN.make(dtype=F64, momentum=momentum).train()
    m(x)
    n = 5 * 4
    for c in range(6):
        mu, var = oracles.mean_var(x[:, c].reshape(-1))
        close(m.running_mean[c], momentum * mu, 1e-12)
        close(m.running_var[c], (1 - momentum) + momentum * var * n / (n - 1), 1e-12)
    assert m.num_batches_tracked.item() == 1


@pytest.mark.parametrize("momentum", [0.1, 0.5], ids=str)
def test_constant_batch_closed_form(momentum: float) -> None:
    """The same batch k times: rm_k = (1 − (1 − m)^k)·μ_B, rv_k = (1 − m)^k + (1 − (1 − m)^k)·s²."""
    x = make_input((4, 6, 3), F64, seed=2)
    m = BN.make(dtype=F64, momentum=momentum).train()
    means, uvars, _ = oracles.batch_moments_ref(x)
    for k in range(1, 6):
        m(x)
        kept = (1 - momentum) ** k
        close(m.running_mean, (1 - kept) * means, 1e-12, msg=f"k={k}")
        close(m.running_var, kept + (1 - kept) * uvars, 1e-12, msg=f"k={k}")
        assert m.num_batches_tracked.item() == k


@pytest.mark.parametrize(
    "case", [c for c in RUNNING_CASES if c.name == "batch_norm"], ids=lambda c: c.id
)
def test_cumulative_average_is_mean_of_batch_stats_and_order_free(case: Case) -> None:
    batches = _batches(case, 5)
    forward = case.make(dtype=F64, momentum=None).train()
    backward = case.make(dtype=F64, momentum=None).train()
    for x in batches:
        forward(x)
    for x in reversed(batches):
        backward(x)
    moments = [oracles.batch_moments_ref(x) for x in batches]
    mean_of_means = torch.stack([mu for mu, _, _ in moments]).sum(0) / len(batches)
    mean_of_uvars = torch.stack([s2 for _, s2, _ in moments]).sum(0) / len(batches)
    for m in (forward, backward):
        close(m.running_mean, mean_of_means, 1e-12)
        close(m.running_var, mean_of_uvars, 1e-12)
        assert m.num_batches_tracked.item() == len(batches)
    close(forward.running_mean, backward.running_mean, 1e-12)
    close(forward.running_var, backward.running_var, 1e-12)


@running_cases
def test_reset_running_stats(case: Case) -> None:
    m = randomize_(case.make()).train()
    for x in _batches(case, 2, torch.float32):
        m(x)
    params = {k: v.detach().clone() for k, v in m.named_parameters()}
    m.reset_running_stats()
    if getattr(m, "running_mean", None) is not None:  # EvoNorm-B0 keeps no running mean
        assert torch.equal(m.running_mean, torch.zeros(case.num_features))
    assert torch.equal(m.running_var, torch.ones(case.num_features))
    assert _tracked(m) in (None, 0)
    for key, value in m.named_parameters():
        assert torch.equal(value, params[key]), "reset_running_stats must not touch parameters"


@running_cases
def test_a_fresh_layer_starts_from_torch_s_initial_statistics(case: Case) -> None:
    """Mean 0, variance 1 and a counter at 0 (so momentum=None's first step takes the batch's
    statistics whole), as a fresh nn.BatchNorm2d."""
    m = case.make(dtype=F64)
    if getattr(m, "running_mean", None) is not None:  # EvoNorm-B0 keeps no running mean
        assert torch.equal(m.running_mean, torch.zeros(case.num_features, dtype=F64))
    assert torch.equal(m.running_var, torch.ones(case.num_features, dtype=F64))
    assert _tracked(m) in (None, 0)
    if _tracked(m) is not None:
        assert m.num_batches_tracked.dtype == torch.long


@running_cases
def test_reset_layer_trains_like_a_freshly_built_one(case: Case) -> None:
    """reset_running_stats forgets everything the layer accumulated, in every buffer (a
    method's own counters and accumulators too): afterwards its state, and its next training
    step, are those of a freshly built layer with the same parameters."""
    fresh = case.make(dtype=F64).train()
    m = randomize_(case.make(dtype=F64)).train()
    with torch.no_grad():
        for name, value in m.named_parameters():
            fresh.get_parameter(name).copy_(value)
    for x in _batches(case, 3):
        m(x)
    m.reset_running_stats()
    assert_state_equal(snapshot(m), snapshot(fresh))
    x = _batches(case, 4)[-1]
    assert torch.equal(m(x), fresh(x))
    assert_state_equal(snapshot(m), snapshot(fresh))


# layers built with (or defaulting to) track_running_stats=False
UNTRACKED = [c for c in CASES if getattr(c.make(), "track_running_stats", None) is False]


@pytest.mark.parametrize("case", UNTRACKED, ids=[c.id for c in UNTRACKED])
def test_untracked_layer_has_no_buffers_and_changes_nothing(case: Case) -> None:
    m = randomize_(case.make()).train()
    assert m.track_running_stats is False
    assert getattr(m, "running_mean", None) is None and getattr(m, "running_var", None) is None
    assert not any(key.startswith(("running_", "num_batches")) for key in m.state_dict())
    before = snapshot(m)
    for x in _batches(case, 2, torch.float32):
        m(x)
    m.eval()(x)
    assert_state_equal(snapshot(m), before)


def _running_buffer_names(m: nn.Module) -> set[str]:
    return {k for k in m._buffers if k.startswith(("running_", "num_batches"))}


_TRACKED_NAMES = {type(c.make()): _running_buffer_names(c.make()) for c in RUNNING_CASES}
UNTRACKED_TWINS = [c for c in UNTRACKED if type(c.make()) in _TRACKED_NAMES]


@pytest.mark.parametrize("case", UNTRACKED_TWINS, ids=[c.id for c in UNTRACKED_TWINS])
def test_untracked_layer_keeps_the_buffer_names_as_none(case: Case) -> None:
    """As torch.nn's norms do: without tracking, the running buffers are still attributes
    (None), with the names a tracking layer of the class has, so ``m.num_batches_tracked is
    None`` tells code that the layer does not track."""
    m = case.make()
    expected = _TRACKED_NAMES[type(m)]
    assert _running_buffer_names(m) == expected
    assert all(m._buffers[name] is None for name in expected)
    assert m.num_batches_tracked is None


# -- loaded state is validated --------------------------------------------------------------------


@running_cases
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_load_rejects_invalid_running_var(case: Case, bad: float) -> None:
    m = randomize_(case.make())
    state = m.state_dict()
    state["running_var"] = state["running_var"].clone()
    state["running_var"][2] = bad
    target = randomize_(case.make(), seed=7)
    before = snapshot(target)
    with pytest.raises(NormlabError, match="running_var"):
        target.load_state_dict(state)
    assert_state_equal(snapshot(target), before)


@running_cases
def test_load_refuses_statistics_of_another_length_and_loads_nothing(case: Case) -> None:
    """A checkpoint of a layer with another channel count: a NormlabError naming the buffer and
    the shapes, raised before anything is copied (torch's own size check copies the other
    tensors first and then raises a RuntimeError)."""
    state = randomize_(case.make()).state_dict()
    key = "running_mean" if "running_mean" in state else "running_var"
    state[key] = torch.cat([state[key], state[key][:1]])
    target = randomize_(case.make(), seed=7)
    before = snapshot(target)
    c = case.num_features
    with pytest.raises(NormlabError, match=rf"'{key}': shape \({c + 1},\), expected \({c},\)"):
        target.load_state_dict(state)
    assert_state_equal(snapshot(target), before)


# -- faults ---------------------------------------------------------------------------------------


@running_cases
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_batch_leaves_buffers_unchanged(case: Case, bad: float) -> None:
    m = case.make(dtype=F64).train()
    first, poisoned_source, last = _batches(case, 3)
    m(first)
    before = snapshot(m)
    poisoned = poisoned_source.clone()
    poisoned.view(-1)[5] = bad
    m(poisoned)
    assert_state_equal(snapshot(m), before)
    m(last)  # the next finite batch continues as if the bad one never happened
    if case.running_step is not None:  # the method's own law, from fresh buffers
        expected = _running_buffers(case.make(dtype=F64))
        for x in (first, last):
            expected = case.running_step(expected, x, m.momentum)
        for key, value in expected.items():
            close(getattr(m, key), value, 1e-12, msg=key)
        return
    rm, rv, tracked = oracles.running_stats_ref(
        [first, last], case.kwargs.get("momentum", 0.1), per_instance=_per_instance(case)
    )
    close(m.running_mean, rm, 1e-12)
    close(m.running_var, rv, 1e-12)
    assert _tracked(m) in (None, tracked)


@running_cases
def test_batch_whose_variance_overflows_leaves_buffers_unchanged(case: Case) -> None:
    """Every value finite, yet σ² ≈ 9e38 overflows float32: the guard must see the variance,
    not only the input. The batch's values are ±3e19 (so each mean stays finite)."""
    m = case.make().train()
    first, source = (x.float() for x in _batches(case, 2))
    m(first)
    before = snapshot(m)
    huge = torch.where(source >= 0, 3e19, -3e19).float()
    assert torch.isfinite(huge).all()
    with torch.no_grad():
        m(huge)
    assert_state_equal(snapshot(m), before)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_empty_batch(case: Case, training: bool) -> None:
    m = randomize_(case.make()).train(training)
    before = snapshot(m)
    for shape in case.shapes:
        x = torch.empty((0, *shape[1:]))
        y = m(x)
        assert y.shape == x.shape
        assert y.dtype == x.dtype
    assert_state_equal(snapshot(m), before)


# -- checkpoint continuation ----------------------------------------------------------------------


def _train(m: nn.Module, batches: list[Tensor]) -> None:
    """Plain SGD steps (stateless optimizer) with a random-projection loss."""
    m.train()
    params = list(m.parameters())
    opt = torch.optim.SGD(params, lr=0.1) if params else None
    after_step = hooks_of(type(m)).after_step  # the method's own, e.g. BIN's gate clipping
    if opt is not None and after_step is not None:
        after_step(opt, m)
    for i, x in enumerate(batches):
        y = m(x)
        g = make_input(tuple(y.shape), y.dtype, seed=70 + i)
        loss = (y * g).sum()
        if opt is None:
            continue
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_checkpoint_continuation_is_bitwise(case: Case) -> None:
    batches = _batches(case, 6, torch.float32)
    original = case.make()
    _train(original, batches[:3])
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = case.make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _train(original, batches[3:])
    _train(resumed, batches[3:])
    assert_state_equal(snapshot(resumed), snapshot(original))
    if case.has_running_stats:
        assert _tracked(original) in (None, 6)


_RESUME_IN_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[4]))  # the parent's: a reduction's order depends on it
from catalogue import CASES
from test_state import _train
saved = torch.load(sys.argv[2], weights_only=True)
by_id = {case.id: case for case in CASES}
out = {}
for case_id, state in saved["state"].items():
    m = by_id[case_id].make()
    m.load_state_dict(state)
    _train(m, saved["batches"][case_id])
    out[case_id] = m.state_dict()
torch.save(out, sys.argv[3])
"""


def test_training_resumed_in_a_fresh_process_continues_bitwise(tmp_path: Path) -> None:
    """Every catalogue layer: 3 training steps, a checkpoint on disk, then 3 more steps here
    and, from the checkpoint, in a new Python process with the same number of threads: the
    same state bit for bit."""
    originals, saved = {}, {"state": {}, "batches": {}}
    for case in CASES:
        batches = _batches(case, 6, torch.float32)
        m = case.make()
        _train(m, batches[:3])
        saved["state"][case.id] = copy.deepcopy(m.state_dict())
        saved["batches"][case.id] = batches[3:]
        _train(m, batches[3:])
        originals[case.id] = m.state_dict()
    torch.save(saved, tmp_path / "checkpoint.pt")
    child = subprocess.run(
        [sys.executable, "-c", _RESUME_IN_CHILD, str(Path(__file__).parent),
         str(tmp_path / "checkpoint.pt"), str(tmp_path / "resumed.pt"),
         str(torch.get_num_threads())],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert child.returncode == 0, child.stderr
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert sorted(resumed) == sorted(originals) and len(resumed) == len(CASES)
    for case_id, state in originals.items():
        assert list(resumed[case_id]) == list(state), case_id
        for key, value in state.items():
            assert torch.equal(resumed[case_id][key], value), f"{case_id}: {key}"


# -- checkpoints without a counter (torch.nn's BatchNorm is the oracle) ------------------------


def _state_without_counter(version: int | None) -> dict[str, Tensor]:
    trained = nn.BatchNorm2d(3)
    trained(torch.randn(4, 3, 2, 2))
    state = collections.OrderedDict(
        (k, v) for k, v in trained.state_dict().items() if k != "num_batches_tracked")
    if version is not None:
        state._metadata = collections.OrderedDict({"": {"version": version}})  # type: ignore[attr-defined]
    return state


@pytest.mark.parametrize("version", [None, 1, 2], ids=["no-metadata", "v1", "v2"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_missing_counter_loads_as_torch_batch_norm_loads_it(version: int | None,
                                                            strict: bool) -> None:
    """Before version 2 (torch 0.4.1) checkpoints had no counter: the layer keeps its own;
    a version-2 checkpoint without it is a missing key (an error when strict)."""
    outcomes, state = [], _state_without_counter(version)
    for layer in (nn.BatchNorm2d(3), normlab.BatchNorm(3)):
        layer.num_batches_tracked.fill_(5)
        try:
            result = layer.load_state_dict(state, strict=strict)
            outcomes.append(("loaded", int(layer.num_batches_tracked),
                             list(result.missing_keys), layer.running_mean.clone()))
        except RuntimeError as error:
            outcomes.append(("refused", int(layer.num_batches_tracked),
                             "num_batches_tracked" in str(error), None))
    (t_kind, t_count, t_keys, t_mean), (n_kind, n_count, n_keys, n_mean) = outcomes
    assert (n_kind, n_count, n_keys) == (t_kind, t_count, t_keys)
    if t_mean is not None:
        assert torch.equal(n_mean, t_mean)


def test_negative_counter_is_refused_and_nothing_is_loaded() -> None:
    layer = normlab.BatchNorm(3)
    layer.num_batches_tracked.fill_(5)
    before = snapshot(layer)
    state = nn.BatchNorm2d(3).state_dict()
    state["running_mean"] = torch.ones(3)
    state["num_batches_tracked"] = torch.tensor(-1)
    with pytest.raises(NormlabError, match=r"num_batches_tracked.*negative \(-1\)"):
        layer.load_state_dict(state)
    assert_state_equal(snapshot(layer), before)


_INVALID_FIX = ("The checkpoint is corrupted or belongs to another layer; load a valid state or "
                "call reset_running_stats().")


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("running_mean", torch.zeros(4), "shape (4,), expected (3,)"),
        ("running_var", torch.ones(3, 1), "shape (3, 1), expected (3,)"),
        ("running_mean", torch.tensor([0.0, math.inf, 0.0]), "it holds NaN or Inf values"),
        ("running_var", torch.tensor([1.0, -2.0, -0.5]), "negative variance -2.0"),
        ("num_batches_tracked", torch.tensor(-3), "negative (-3)"),
    ],
    ids=["mean_shape", "var_shape", "mean_inf", "var_negative", "counter_negative"],
)
def test_invalid_state_error_names_layer_key_problem_and_fix(
    key: str, value: Tensor, problem: str
) -> None:
    layer = normlab.BatchNorm(3)
    before = snapshot(layer)
    state = layer.state_dict()
    state[key] = value
    with pytest.raises(NormlabError) as excinfo:
        layer.load_state_dict(state)
    assert str(excinfo.value) == f"BatchNorm(3): cannot load {key!r}: {problem}. {_INVALID_FIX}"
    assert_state_equal(snapshot(layer), before)


def test_counter_must_be_an_integer_scalar_where_the_layer_needs_one() -> None:
    """Virtual BN's reference_size (an integer count): a float or a vector is refused by name."""
    layer = normlab.VirtualBatchNorm(3)
    layer.set_reference(torch.randn(4, 3))
    for bad in (torch.tensor(4.0), torch.tensor([4, 4]), torch.tensor(4 + 0j)):
        state = layer.state_dict()
        state["reference_size"] = bad
        with pytest.raises(NormlabError) as excinfo:
            layer.load_state_dict(state)
        assert str(excinfo.value).startswith(
            f"VirtualBatchNorm(3): cannot load 'reference_size': expected an integer scalar, got "
            f"{bad.dtype} of shape {tuple(bad.shape)}. ")


def test_float_counter_loads_as_torch_batch_norm_loads_it() -> None:
    """A counter a converter wrote as a float loads into the long buffer, as in torch.nn."""
    state = normlab.BatchNorm(3).state_dict()
    state["num_batches_tracked"] = torch.tensor(7.0)
    layer, twin = normlab.BatchNorm(3), nn.BatchNorm1d(3)
    layer.load_state_dict(state)
    twin.load_state_dict(state)
    assert layer.num_batches_tracked.dtype == torch.long
    assert int(layer.num_batches_tracked) == int(twin.num_batches_tracked) == 7


def test_load_reports_unused_keys_and_shape_mismatches_as_torch_does() -> None:
    layer = normlab.BatchNorm(3)
    state = layer.state_dict()
    state["extra"] = torch.zeros(1)
    result = layer.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["extra"] and result.missing_keys == []
    state = normlab.BatchNorm(3).state_dict()
    state["weight"] = torch.ones(4)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: copying a param with "
                                           r"shape torch\.Size\(\[4\]\)"):
        layer.load_state_dict(state)


# -- activation checkpointing ----------------------------------------------------------------


@running_cases
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_checkpoint_recompute_updates_stats_once(case: Case, reentrant: bool) -> None:
    """torch.utils.checkpoint runs the forward again inside backward: the running statistics
    (and the counter) must move once per training step, and the gradients must be those of
    the step as it ran (pytorch#96136)."""
    from torch.utils.checkpoint import checkpoint

    plain, wrapped = case.make(dtype=F64).train(), case.make(dtype=F64).train()
    randomize_(plain, seed=3)
    wrapped.load_state_dict(plain.state_dict())
    for step, x in enumerate(_batches(case, 3)):
        grad = torch.randn_like(x)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        plain(xa).backward(grad)
        checkpoint(wrapped, xb, use_reentrant=reentrant).backward(grad)
        assert_state_equal(snapshot(wrapped), snapshot(plain))
        if plain.training_reads_running_stats:
            continue  # a documented limit: the recompute reads this step's updated statistics
        close(xb.grad, xa.grad, 1e-12, msg=f"input gradient, step {step}")
        for (name, p), q in zip(plain.named_parameters(), wrapped.parameters(), strict=True):
            close(q.grad, p.grad, 1e-12, msg=f"{name}.grad, step {step}")


# -- meta-device construction and partial loads ----------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_meta_construction_then_assign_load_gives_the_trained_layer(case: Case) -> None:
    """The large-model recipe: build on the meta device (no memory), then
    ``load_state_dict(assign=True)`` puts the checkpoint's tensors in place (PR #115285)."""
    trained = case.make()
    _train(trained, _batches(case, 2, torch.float32))
    shell = case.make(device="meta")
    shell.load_state_dict(copy.deepcopy(trained.state_dict()), assign=True)  # its own tensors
    for name, t in snapshot(shell).items():
        assert t.device.type == "cpu", name
    assert_state_equal(snapshot(shell), snapshot(trained))
    x = _batches(case, 3, torch.float32)[2]
    for mode in (False, True):
        close(shell.train(mode)(x), trained.train(mode)(x), 0.0, msg=f"training={mode}")


@running_cases
def test_meta_construction_loads_a_checkpoint_without_its_counter(case: Case) -> None:
    trained = case.make()
    _train(trained, _batches(case, 2, torch.float32))
    state = {k: v for k, v in trained.state_dict().items() if k != "num_batches_tracked"}
    shell = case.make(device="meta")
    shell.load_state_dict(state, assign=True)  # no version metadata: a pre-0.4.1 checkpoint
    counter = getattr(shell, "num_batches_tracked", None)
    if counter is not None:
        assert counter.device.type == "cpu" and int(counter) == 0
        assert counter.dtype == torch.long


@running_cases
def test_partial_lenient_load_never_resets_the_buffers_it_was_not_given(case: Case) -> None:
    layer = case.make()
    _train(layer, _batches(case, 3, torch.float32))
    before = snapshot(layer)
    partial = {k: v for k, v in case.make().state_dict().items() if k in ("weight",)}
    result = layer.load_state_dict(partial, strict=False)
    assert not result.unexpected_keys
    after = snapshot(layer)
    for key, value in before.items():
        if key not in partial:
            assert torch.equal(after[key], value), key
