"""normlab.core.update_running_stats_: the only writer of running buffers.

Closed forms (RELIABILITY.md I12, PyTorch convention, momentum = weight on the new batch):
from (rm, rv) = (0, 1), k steps of a constant batch give rm_k = (1 - (1 - m)^k) mu and
rv_k = (1 - m)^k + (1 - (1 - m)^k) s2_unbiased; momentum=None is the cumulative average
(mean of batch means, mean of unbiased batch variances).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from normlab.core import Moments, running, update_running_stats_
from normlab.core.running import all_finite, update_running_

try:  # registers and loads the "ci" Hypothesis profile
    import _hypothesis_profiles
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import _hypothesis_profiles  # noqa: F401

C = 4


@pytest.fixture(autouse=True, params=["eager_cpu", "branch_free"])
def writer_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both guards: the CPU-eager branch and the branch-free ``where``
    update used on accelerators and under torch.compile."""
    if request.param == "branch_free":
        monkeypatch.setattr(running, "_eager_cpu", lambda t: False)
    return str(request.param)


def fresh_buffers(dtype=torch.float64):
    return (
        torch.zeros(C, dtype=dtype),
        torch.ones(C, dtype=dtype),
        torch.tensor(0, dtype=torch.long),
    )


def batch(seed: int, n: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, generator=g, dtype=torch.float64) * (1 + seed % 3) + seed - 2
    x = x.to(dtype)
    xd = x.double()
    mean = xd.mean(0)
    unbiased = ((xd - mean) ** 2).sum(0) / (n - 1)
    return x, mean, unbiased


def close(a, b, rtol=1e-12, atol=1e-12):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_constant_batch_closed_form(momentum, k):
    x, mu, s2 = batch(0)
    rm, rv, nbt = fresh_buffers()
    moments = Moments.from_tensor(x, (0,))
    for _ in range(k):
        update_running_stats_(rm, rv, nbt, moments, momentum)
    keep = (1 - momentum) ** k
    close(rm, (1 - keep) * mu)
    close(rv, keep * torch.ones(C, dtype=torch.float64) + (1 - keep) * s2)
    assert int(nbt) == k


def test_single_step_values_written_out():
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)  # mean 3, s2 = 14/3
    rm = torch.zeros(1, dtype=torch.float64)
    rv = torch.ones(1, dtype=torch.float64)
    nbt = torch.tensor(0, dtype=torch.long)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x, (0,)), 0.1)
    close(rm, torch.tensor([0.3], dtype=torch.float64))
    close(rv, torch.tensor([0.9 + 0.1 * 14.0 / 3.0], dtype=torch.float64))
    assert int(nbt) == 1


def test_update_is_in_place():
    x, _, _ = batch(1)
    rm, rv, nbt = fresh_buffers()
    ptrs = (rm.data_ptr(), rv.data_ptr(), nbt.data_ptr())
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x, (0,)), 0.5)
    assert (rm.data_ptr(), rv.data_ptr(), nbt.data_ptr()) == ptrs
    assert not torch.equal(rm, torch.zeros(C, dtype=torch.float64))
    assert int(nbt) == 1


@given(
    momentum=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
    n=st.integers(2, 9),
    start_seed=st.integers(0, 1000),
)
def test_one_step_is_the_ema_from_any_state(momentum, seed, n, start_seed):
    g = torch.Generator().manual_seed(start_seed)
    rm0 = torch.randn(C, generator=g, dtype=torch.float64)
    rv0 = torch.rand(C, generator=g, dtype=torch.float64) + 0.1
    rm, rv = rm0.clone(), rv0.clone()
    nbt = torch.tensor(5, dtype=torch.long)
    x, mu, s2 = batch(seed, n=n)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x, (0,)), momentum)
    close(rm, (1 - momentum) * rm0 + momentum * mu, rtol=1e-11, atol=1e-11)
    close(rv, (1 - momentum) * rv0 + momentum * s2, rtol=1e-11, atol=1e-11)
    assert int(nbt) == 6


def test_momentum_none_is_cumulative_average():
    rm, rv, nbt = fresh_buffers()
    means, variances = [], []
    for i, n in enumerate([2, 5, 3, 8, 4]):
        x, mu, s2 = batch(10 + i, n=n)
        means.append(mu)
        variances.append(s2)
        update_running_stats_(rm, rv, nbt, Moments.from_tensor(x, (0,)), None)
        close(rm, torch.stack(means).mean(0))
        close(rv, torch.stack(variances).mean(0))
        assert int(nbt) == i + 1


def test_momentum_none_is_order_independent_and_not_population_variance():
    xs = [batch(20 + i, n=n)[0] for i, n in enumerate([2, 7, 3])]
    results = []
    for order in ([0, 1, 2], [2, 0, 1]):
        rm, rv, nbt = fresh_buffers()
        for i in order:
            update_running_stats_(rm, rv, nbt, Moments.from_tensor(xs[i], (0,)), None)
        results.append((rm, rv))
    close(results[0][0], results[1][0])
    close(results[0][1], results[1][1])
    union = torch.cat(xs).double()
    population = ((union - union.mean(0)) ** 2).sum(0) / (union.shape[0] - 1)
    assert not torch.allclose(results[0][1], population, rtol=1e-6, atol=0)


def test_float32_buffers_keep_dtype():
    x, mu, s2 = batch(3, dtype=torch.float32)
    rm, rv, nbt = fresh_buffers(torch.float32)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x, (0,)), 0.25)
    assert rm.dtype == torch.float32
    assert rv.dtype == torch.float32
    torch.testing.assert_close(rm, (0.25 * mu).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rv, (0.75 + 0.25 * s2).float(), rtol=1e-6, atol=1e-6)


def _poisoned_batches():
    x, _, _ = batch(4)
    nan_all = x.clone()
    nan_all[0, :] = float("nan")
    nan_one = x.clone()
    nan_one[2, 1] = float("nan")
    inf_one = x.clone()
    inf_one[1, 3] = float("inf")
    ninf = x.clone()
    ninf[0, 0] = float("-inf")
    # every value finite, the means finite, the variance of channel 2 overflows float32
    overflow = x.float().clone()
    overflow[:, 2] = torch.tensor([3e19, -3e19]).repeat(3)
    return {"nan_all": nan_all, "nan_one_channel": nan_one, "inf": inf_one, "-inf": ninf,
            "variance_overflow": overflow}


@pytest.mark.parametrize("momentum", [0.1, 1.0, None])
@pytest.mark.parametrize("which", sorted(_poisoned_batches()))
def test_non_finite_batch_leaves_buffers_unchanged(which, momentum):
    x = _poisoned_batches()[which]
    # start from a non-trivial state
    rm, rv, nbt = fresh_buffers(x.dtype)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(batch(5)[0].to(x.dtype), (0,)), 0.5)
    before = (rm.clone(), rv.clone(), nbt.clone())
    moments = Moments.from_tensor(x, (0,))
    assert not (torch.isfinite(moments.mean).all() and torch.isfinite(moments.var).all())
    update_running_stats_(rm, rv, nbt, moments, momentum)
    assert torch.equal(rm, before[0])
    assert torch.equal(rv, before[1])
    assert torch.equal(nbt, before[2])


def test_cumulative_average_skips_non_finite_batch():
    rm, rv, nbt = fresh_buffers()
    x1, mu1, s21 = batch(30, n=4)
    x2, mu2, s22 = batch(31, n=6)
    bad = x1.clone()
    bad[0, 0] = float("nan")
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x1, (0,)), None)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(bad, (0,)), None)
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x2, (0,)), None)
    assert int(nbt) == 2
    close(rm, (mu1 + mu2) / 2)
    close(rv, (s21 + s22) / 2)


def test_targets_with_autograd_history_do_not_attach_buffers_to_a_graph():
    x = torch.randn(6, C, dtype=torch.float64, requires_grad=True)
    rm, rv, nbt = fresh_buffers()
    update_running_stats_(rm, rv, nbt, Moments.from_tensor(x * 2, (0,)), 0.1)
    assert not rm.requires_grad and not rv.requires_grad
    assert rm.grad_fn is None and rv.grad_fn is None


def test_custom_law_gets_the_factor_and_shares_the_guard_and_counter():
    """update_running_: the method supplies only the law; guard, counter and 1/t are shared."""
    buf = torch.ones(C, dtype=torch.float64)
    nbt = torch.tensor(0, dtype=torch.long)
    seen = []

    def law(factor):
        seen.append(float(factor))
        return (buf + 10 * factor,)

    good = torch.ones(C, dtype=torch.float64)
    update_running_((buf,), nbt, None, law, watch=(good,))
    update_running_((buf,), nbt, None, law, watch=(good,))
    assert seen == [1.0, 0.5] and int(nbt) == 2
    close(buf, torch.full((C,), 16.0, dtype=torch.float64))
    bad = good.clone()
    bad[1] = float("inf")
    update_running_((buf,), nbt, 0.3, law, watch=(good, bad))
    assert int(nbt) == 2
    close(buf, torch.full((C,), 16.0, dtype=torch.float64))


def test_ema_watch_decides_for_the_batch() -> None:
    """update_running_ema_(watch=w): w alone decides whether the batch is folded in, whatever
    the targets hold (the caller passes the tensor the targets were read from)."""
    rm, rv, nbt = fresh_buffers()
    mean, var = (torch.full((C,), v, dtype=torch.float64) for v in (2.0, 3.0))
    poisoned = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    running.update_running_ema_((rm, rv), (mean, var), nbt, 0.5, watch=poisoned)
    assert int(nbt) == 0 and torch.equal(rm, torch.zeros(C, dtype=torch.float64))
    mean[0] = float("inf")
    running.update_running_ema_((rm, rv), (mean, var), nbt, 0.5, watch=torch.ones(2))
    assert int(nbt) == 1 and not torch.isfinite(rm[0]) and rv[0] == 2.0


@pytest.mark.parametrize("values", [[1.0, float("nan")], [float("inf"), 0.0], [-3e38, 3e38]])
def test_all_finite(values):
    t = torch.tensor(values, dtype=torch.float32)
    assert bool(all_finite(t)) == bool(torch.isfinite(t).all())
    assert bool(all_finite(torch.zeros(2), t)) == bool(torch.isfinite(t).all())


@pytest.mark.parametrize("size", [3, 256, 257, 4096], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_finite_check_on_both_sides_of_the_python_sum(size: int, dtype: torch.dtype) -> None:
    """The guard's read-back (a Python sum up to PYTHON_SUM_MAX values, else one reduction)
    finds every non-finite value, +inf and -inf together included, and passes finite values
    whose sum overflows the dtype."""
    assert running.PYTHON_SUM_MAX in (256,)  # the sizes above straddle it
    finite = torch.full((size,), torch.finfo(dtype).max / 2, dtype=dtype)
    assert running._finite_now((finite,))
    assert running._finite_now((finite.view(1, -1), finite[: size // 2 + 1]))
    for bad in ([math.nan], [math.inf], [-math.inf], [math.inf, -math.inf]):
        t = torch.ones(size, dtype=dtype)
        t[: len(bad)] = torch.tensor(bad, dtype=dtype)
        assert not running._finite_now((t,)), bad
        assert not running._finite_now((t.view(1, -1),)), bad


def test_huge_but_finite_statistics_are_folded_in():
    """Per-channel variances near float32's limit are finite, though their sum overflows: the
    guard must tell the two apart (it checks exactly when the cheap sum is not finite)."""
    rm, rv, nbt = fresh_buffers(torch.float32)
    huge = Moments(torch.full((C,), 1e30), torch.full((C,), 1e38), 2)  # unbiased: 2e38 each
    update_running_stats_(rm, rv, nbt, huge, 1.0)
    assert int(nbt) == 1
    torch.testing.assert_close(rv, torch.full((C,), 2e38), rtol=1e-6, atol=0)
    torch.testing.assert_close(rm, torch.full((C,), 1e30), rtol=1e-6, atol=0)


def test_cumulative_average_without_a_counter_is_refused_by_name() -> None:
    """momentum=None weighs the t-th batch 1/t: without num_batches_tracked there is no t."""
    rm, rv = torch.zeros(3), torch.ones(3)
    batch = Moments(torch.ones(3), torch.ones(3), 4)
    with pytest.raises(
        ValueError, match=r"^momentum=None \(cumulative average\) needs num_batches_tracked\.$"
    ):
        update_running_stats_(rm, rv, None, batch, None)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
