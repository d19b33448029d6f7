"""normlab.core.Moments: two-pass moments, exact merging (Chan et al.), reduce, precision.

References are float64 two-pass moments written here (mean, then mean of squared deviations).
"""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from normlab.core import Moments

try:  # registers and loads the "ci" Hypothesis profile
    import _hypothesis_profiles
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import _hypothesis_profiles  # noqa: F401

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"


# ----------------------------------------------------------------------------- helpers


def ref_moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """float64 two-pass (mean, biased var, count) over ``dims`` (keepdim=False)."""
    x = x.double()
    count = math.prod(x.shape[d] for d in dims)
    mean = x.sum(dim=dims, keepdim=True) / count
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / count
    return mean.squeeze(dims), var.squeeze(dims), count


def count_of(m: Moments) -> int:
    c = torch.as_tensor(m.count)
    flat = c.flatten()
    assert flat.numel() >= 1
    assert torch.all(flat == flat[0]), f"count not uniform: {c}"
    value = float(flat[0])
    assert value == int(value)
    return int(value)


def close(actual, expected, rtol=1e-12, atol=1e-12):
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- from_tensor


@pytest.mark.parametrize(
    ("shape", "dims"),
    [
        ((7, 3), (0,)),
        ((7, 3), (1,)),
        ((4, 3, 5), (0, 2)),
        ((4, 3, 5), (2,)),
        ((4, 3, 5), (1, 2)),
        ((2, 3, 4, 5), (0, 2, 3)),
        ((2, 3, 4, 5), (1, 2, 3)),
        ((2, 3, 4, 5), (0, 1, 2, 3)),
        ((2, 4, 3, 2, 3), (2, 3, 4)),
    ],
)
def test_from_tensor_matches_float64_two_pass(shape, dims):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3.0 + 5.0
    m = Moments.from_tensor(x, dims)
    mean, var, count = ref_moments(x, dims)
    assert m.mean.shape == mean.shape
    assert m.var.shape == var.shape
    close(m.mean, mean)
    close(m.var, var)
    assert count_of(m) == count
    close(m.unbiased_var, var * count / (count - 1))


def test_from_tensor_does_not_mutate_input():
    x = torch.randn(5, 4, dtype=torch.float64)
    before = x.clone()
    Moments.from_tensor(x, (0,))
    assert torch.equal(x, before)


def test_var_is_biased_and_unbiased_var_applies_bessel():
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)
    m = Moments.from_tensor(x, (0,))
    # mean 3, squared deviations 4 + 1 + 0 + 9 = 14
    close(m.mean, torch.tensor([3.0], dtype=torch.float64))
    close(m.var, torch.tensor([14.0 / 4], dtype=torch.float64))
    close(m.unbiased_var, torch.tensor([14.0 / 3], dtype=torch.float64))


def test_fp32_large_mean_small_std_variance_is_accurate():
    # float32 data with mean 1e4 and std 0.1 (kappa ~ 1e5): a one-pass E[x^2] - E[x]^2
    # gives garbage (even negative values), a two-pass / shifted algorithm stays within 1e-3.
    g = torch.Generator().manual_seed(1)
    x = (1e4 + 0.1 * torch.randn(4096, 3, generator=g, dtype=torch.float64)).float()
    m = Moments.from_tensor(x, (0,))
    _, ref_var, _ = ref_moments(x, (0,))  # float64 on the same (already rounded) data
    assert torch.all(m.var >= 0)
    rel = (m.var.double() - ref_var).abs() / ref_var
    assert torch.all(rel < 1e-3), rel
    # The check has teeth: the naive one-pass formula in float32 misses by far more.
    one_pass = (x * x).mean(0) - x.mean(0) ** 2
    assert torch.all((one_pass.double() - ref_var).abs() / ref_var > 1e-3)


def test_fp32_large_mean_small_std_multi_dim():
    g = torch.Generator().manual_seed(2)
    x = (1e4 + 0.1 * torch.randn(8, 4, 16, 16, generator=g, dtype=torch.float64)).float()
    m = Moments.from_tensor(x, (0, 2, 3))
    mean, var, _ = ref_moments(x, (0, 2, 3))
    assert torch.all(((m.var.double() - var).abs() / var) < 1e-3)
    assert torch.all((m.mean.double() - mean).abs() < 1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_gives_float32_moments(dtype):
    g = torch.Generator().manual_seed(3)
    # |x| up to ~300: x^2 overflows float16, so float16 accumulation would give inf.
    x = (torch.randn(6, 4, 10, generator=g) * 100 + 50).clamp(-300, 300).to(dtype)
    m = Moments.from_tensor(x, (0, 2))
    assert m.mean.dtype == torch.float32
    assert m.var.dtype == torch.float32
    assert torch.isfinite(m.var).all()
    mean, var, _ = ref_moments(x, (0, 2))
    torch.testing.assert_close(m.mean.double(), mean, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(m.var.double(), var, rtol=1e-5, atol=1e-4)


def test_float64_input_keeps_float64():
    m = Moments.from_tensor(torch.randn(4, 3, dtype=torch.float64), (0,))
    assert m.mean.dtype == torch.float64
    assert m.var.dtype == torch.float64


# ----------------------------------------------------------------------------- merge


def _merge_all(parts: list[torch.Tensor]) -> Moments:
    acc = Moments.from_tensor(parts[0], (0,))
    for p in parts[1:]:
        acc = acc.merge(Moments.from_tensor(p, (0,)))
    return acc


@st.composite
def split_data(draw):
    n = draw(st.integers(2, 40))
    channels = draw(st.integers(1, 4))
    cuts = draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=min(6, n - 1)))
    bounds = [0, *sorted(cuts), n]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    seed = draw(st.integers(0, 2**31 - 1))
    offset = draw(st.floats(-10, 10))
    scale = draw(st.floats(0.1, 10))
    g = torch.Generator().manual_seed(seed)
    x = offset + scale * torch.randn(n, channels, generator=g, dtype=torch.float64)
    return x, sizes


@given(split_data())
def test_merge_of_random_splits_equals_moments_of_concatenation(data):
    x, sizes = data
    parts = list(torch.split(x, sizes, dim=0))
    merged = _merge_all(parts)
    mean, var, count = ref_moments(x, (0,))
    close(merged.mean, mean)
    close(merged.var, var)
    assert count_of(merged) == count


def test_merge_with_uneven_sizes_including_a_single_element():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(23, 5, generator=g, dtype=torch.float64) * 2 - 7
    for sizes in ([1, 22], [22, 1], [1, 1, 21], [3, 1, 12, 1, 6], [10, 13]):
        merged = _merge_all(list(torch.split(x, sizes, dim=0)))
        mean, var, count = ref_moments(x, (0,))
        close(merged.mean, mean)
        close(merged.var, var)
        assert count_of(merged) == count


def test_merge_is_symmetric_and_pure():
    g = torch.Generator().manual_seed(5)
    a = Moments.from_tensor(torch.randn(3, 4, generator=g, dtype=torch.float64), (0,))
    b = Moments.from_tensor(5 + torch.randn(9, 4, generator=g, dtype=torch.float64), (0,))
    a_mean, a_var = a.mean.clone(), a.var.clone()
    ab, ba = a.merge(b), b.merge(a)
    close(ab.mean, ba.mean)
    close(ab.var, ba.var)
    assert count_of(ab) == 12
    assert torch.equal(a.mean, a_mean)
    assert torch.equal(a.var, a_var)


def test_merge_of_statistics_from_different_sets_is_not_averaging():
    # Two halves with different means: the merged variance includes the between-group term.
    a = Moments.from_tensor(torch.zeros(2, 1, dtype=torch.float64), (0,))
    b = Moments.from_tensor(torch.full((2, 1), 2.0, dtype=torch.float64), (0,))
    ab = a.merge(b)
    close(ab.mean, torch.tensor([1.0], dtype=torch.float64))
    close(ab.var, torch.tensor([1.0], dtype=torch.float64))


# ----------------------------------------------------------------------------- reduce


def test_reduce_instance_moments_to_batch_and_layer_moments():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64) * 2 + torch.arange(
        3, dtype=torch.float64
    ).view(1, 3, 1, 1)
    inst = Moments.from_tensor(x, (2, 3))  # per (n, c)
    assert inst.mean.shape == (5, 3)
    assert count_of(inst) == 24

    per_channel = inst.reduce(0)  # == BN moments over (N, *S)
    mean, var, count = ref_moments(x, (0, 2, 3))
    assert per_channel.mean.shape == (3,)
    close(per_channel.mean, mean)
    close(per_channel.var, var)
    assert count_of(per_channel) == count

    per_sample = inst.reduce(1)  # == LN moments over (C, *S)
    mean, var, count = ref_moments(x, (1, 2, 3))
    assert per_sample.mean.shape == (5,)
    close(per_sample.mean, mean)
    close(per_sample.var, var)
    assert count_of(per_sample) == count

    everything = per_channel.reduce(0)
    mean, var, count = ref_moments(x, (0, 1, 2, 3))
    close(everything.mean, mean)
    close(everything.var, var)
    assert count_of(everything) == count


def test_reduce_negative_dim():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    inst = Moments.from_tensor(x, (2,))
    red = inst.reduce(-1)
    mean, var, _ = ref_moments(x, (1, 2))
    close(red.mean, mean)
    close(red.var, var)


# ----------------------------------------------------------------------------- static check

_REDUCTIONS = {"mean", "sum", "nanmean", "nansum"}


def _square_base(node: ast.AST) -> ast.AST | None:
    """If ``node`` squares an expression, return that expression."""
    if isinstance(node, ast.BinOp):
        if (
            isinstance(node.op, ast.Pow)
            and isinstance(node.right, ast.Constant)
            and node.right.value == 2
        ):
            return node.left
        if isinstance(node.op, ast.Mult) and ast.dump(node.left) == ast.dump(node.right):
            return node.left
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        attr, owner, args = node.func.attr, node.func.value, node.args
        is_torch = isinstance(owner, ast.Name) and owner.id in {"torch", "th"}
        two = [a for a in args if isinstance(a, ast.Constant) and a.value == 2]
        if attr in {"pow", "float_power", "pow_"}:
            if is_torch and len(args) == 2 and two:
                return args[0]
            if not is_torch and len(args) == 1 and two:
                return owner
        if attr in {"square", "square_"}:
            if is_torch and len(args) == 1:
                return args[0]
            if not is_torch and not args:
                return owner
        same = len(args) == 1 and ast.dump(args[0]) == ast.dump(owner)
        if attr in {"mul", "mul_"} and not is_torch and same:
            return owner
        pair = len(args) == 2 and ast.dump(args[0]) == ast.dump(args[1])
        if attr == "mul" and is_torch and pair:
            return args[0]
    return None


def _reduction_base(node: ast.AST) -> ast.AST | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _REDUCTIONS
    ):
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in {"torch", "th"} and node.args:
            return node.args[0]
        return owner
    return None


def _is_raw_second_moment(node: ast.AST, tainted: set[str]) -> bool:
    """mean/sum of x**2 with x not itself a deviation (x - shift)."""
    if isinstance(node, ast.Name) and node.id in tainted:
        return True
    sq = _square_base(node)  # ||x||^2 is a sum of squares too
    if (
        isinstance(sq, ast.Call)
        and isinstance(sq.func, ast.Attribute)
        and sq.func.attr in {"vector_norm", "norm"}
    ):
        return True
    base = _reduction_base(node)
    if base is None:
        return False
    sq = _square_base(base)
    if sq is None:
        return False
    return not (isinstance(sq, ast.BinOp) and isinstance(sq.op, ast.Sub))


def _contains(node: ast.AST, pred) -> bool:
    return any(pred(n) for n in ast.walk(node))


def find_one_pass_variance(source: str) -> list[int]:
    """Line numbers where E[x^2] - (something)^2 is computed."""
    tree = ast.parse(source)
    tainted: set[str] = set()
    changed = True
    while changed:  # names assigned from raw second moments (ex2 = (x * x).mean(0); ...)
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if _contains(node.value, lambda n: _is_raw_second_moment(n, tainted)):
                    for t in targets:
                        if isinstance(t, ast.Name) and t.id not in tainted:
                            tainted.add(t.id)
                            changed = True
    hits = []
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
            pairs.append((node.left, node.right))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"sub", "subtract", "sub_"}
        ):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in {"torch", "th"}:
                if len(node.args) >= 2:
                    pairs.append((node.args[0], node.args[1]))
            elif node.args:
                pairs.append((owner, node.args[0]))
        for left, right in pairs:
            left_ok = _contains(left, lambda n: _is_raw_second_moment(n, tainted))
            right_ok = _contains(right, lambda n: _square_base(n) is not None)
            if left_ok and right_ok:
                hits.append(node.lineno)
    return hits


BAD_SNIPPETS = [
    "v = (x * x).mean() - x.mean() ** 2",
    "v = x.pow(2).mean(dim=(0, 2)) - mean.pow(2)",
    "ex2 = torch.mean(x ** 2, dim=0)\nv = ex2 - m * m",
    "s2 = (x * x).sum(0)\ns1 = x.sum(0)\nv = s2 / n - (s1 / n) ** 2",
    "v = torch.square(x).mean(1) - torch.square(x.mean(1))",
    "v = x.square().mean() - mu.square()",
    "v = torch.sub(x.pow(2).mean(), m.pow(2))",
    "ex2 = (x * x).mean(0)\nvar = (ex2 - mean**2).clamp_min(0)",
    "def f(x):\n    sq = x.mul(x).mean(-1)\n    return (sq - x.mean(-1).pow(2)).clamp(min=0)",
    "v = x.pow(2).mean() - torch.pow(x.mean(), 2)",
    "ss = torch.linalg.vector_norm(x, dim=1).square() / n\nv = ss - m**2",
]
GOOD_SNIPPETS = [
    "v = ((x - m) ** 2).mean()",
    "v, m = torch.var_mean(x, dim=0, unbiased=False)",
    "ms = x.pow(2).mean(-1, keepdim=True)\ny = x * torch.rsqrt(ms + eps)",
    "m2 = m2a + m2b + delta**2 * na * nb / n",
    "y = (x - mean) / torch.sqrt(var + eps)",
    "v = ((x - k) ** 2).mean() - (m - k) ** 2",  # shifted algorithm, allowed
    "d = mb - ma\nvar = (na * va + nb * vb) / n + d * d * na * nb / (n * n)",
    "r = (torch.linalg.vector_norm(x, dim=d).square() / n + eps).rsqrt()",
]


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_one_pass_detector_flags_naive_variance(snippet):
    assert find_one_pass_variance(snippet), snippet


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_one_pass_detector_accepts_stable_variance(snippet):
    assert not find_one_pass_variance(snippet), snippet


def test_no_one_pass_variance_in_sources():
    files = sorted(SRC.rglob("*.py"))
    names = {p.relative_to(SRC).as_posix() for p in files}
    assert "core/moments.py" in names, f"no sources found under {SRC}"
    offenders = []
    for path in files:
        for line in find_one_pass_variance(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(SRC)}:{line}")
    assert not offenders, "one-pass E[x^2] - E[x]^2 variance at: " + ", ".join(offenders)


@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_merge_equal_counts_equals_moments_of_the_union(dim: int, keepdim: bool) -> None:
    """Per-(n, c) moments of x (n, c, k, L) merged along ``dim`` equal the float64 two-pass
    moments of the union of the merged slices; the deviations are μ_i − μ."""
    from normlab.core.moments import merge_equal_counts

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, 7, generator=g, dtype=torch.float64) * 3 + 1e3
    mean, var, _ = ref_moments(x, (3,))  # (3, 4, 5): one set of 7 values per entry
    mu, sigma2, dev = merge_equal_counts(mean, var, dim, keepdim=keepdim)
    union_mean, union_var, _ = ref_moments(x, (dim, 3))
    if keepdim:
        union_mean, union_var = union_mean.unsqueeze(dim), union_var.unsqueeze(dim)
    torch.testing.assert_close(mu, union_mean, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(sigma2, union_var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dev, mean - ref_moments(x, (dim, 3))[0].unsqueeze(dim),
                               rtol=1e-12, atol=1e-10)
    assert not torch.allclose(sigma2, var.mean(dim, keepdim=keepdim))  # not averaging


# -- counts that differ from set to set (cross-replica merges carry them as tensors) -----------


def _ragged_sets(sizes: list[int], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [3.0 + 2.0 * torch.randn(n, dtype=torch.float64, generator=gen) for n in sizes]


def _stacked(sets: list[torch.Tensor]) -> Moments:
    """Moments of each set, with the per-set counts as a tensor (the oracle's own two-pass)."""
    means = torch.stack([s.mean() if len(s) else s.new_zeros(()) for s in sets])
    vars_ = torch.stack([((s - s.mean()) ** 2).mean() if len(s) else s.new_zeros(())
                         for s in sets])
    return Moments(means, vars_, torch.tensor([len(s) for s in sets]))


def test_unbiased_var_with_per_set_counts_applies_each_sets_bessel_factor() -> None:
    sets = _ragged_sets([1, 2, 5, 9], seed=0)
    got = _stacked(sets).unbiased_var
    for i, s in enumerate(sets):
        want = s.var(correction=1) if len(s) > 1 else torch.zeros((), dtype=torch.float64)
        close(got[i], want)


def test_merge_with_per_set_counts_equals_moments_of_each_union() -> None:
    left, right = _ragged_sets([1, 4, 0, 7], seed=1), _ragged_sets([3, 0, 2, 1], seed=2)
    merged = _stacked(left).merge(_stacked(right))
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        mean, var, count = ref_moments(torch.cat([a, b]), (0,))
        close(merged.mean[i], mean)
        close(merged.var[i], var)
        assert int(torch.as_tensor(merged.count)[i]) == count
    close(merged.unbiased_var[1], right[1].var(correction=1) if len(right[1]) > 1
          else torch.cat([left[1], right[1]]).var(correction=1))


def test_reduce_with_per_set_counts_weights_each_set_by_its_count() -> None:
    sizes = [[1, 6, 0], [4, 2, 3]]  # a (2, 3) grid of sets; reduce along the rows
    sets = [_ragged_sets(row, seed=10 + r) for r, row in enumerate(sizes)]
    grid = [_stacked(row) for row in sets]
    moments = Moments(torch.stack([m.mean for m in grid]), torch.stack([m.var for m in grid]),
                      torch.stack([torch.as_tensor(m.count) for m in grid]))
    reduced = moments.reduce(0)
    for col in range(3):
        union = torch.cat([sets[0][col], sets[1][col]])
        mean, var, count = ref_moments(union, (0,))
        close(reduced.mean[col], mean)
        close(reduced.var[col], var)
        close(reduced.unbiased_var[col], union.var(correction=1))
        assert int(reduced.count[col]) == count


def test_sets_with_zero_or_one_value_merge_and_reduce_exactly() -> None:
    """An empty set (a replica or group with no samples) adds nothing, and two empty sets merge
    into zero moments with count 0 (finite: no 0/0); a set of one value keeps that value."""
    left, right = _ragged_sets([0, 1, 0, 3], seed=4), _ragged_sets([0, 0, 1, 0], seed=5)
    merged = _stacked(left).merge(_stacked(right))
    assert torch.isfinite(merged.mean).all() and torch.isfinite(merged.var).all()
    close(merged.mean[0], 0.0)
    close(merged.var[0], 0.0)
    for i in (1, 2, 3):
        mean, var, count = ref_moments(torch.cat([left[i], right[i]]), (0,))
        close(merged.mean[i], mean)
        close(merged.var[i], var)
        assert int(merged.count[i]) == count
    grid = Moments(torch.stack([merged.mean, _stacked(left).mean]),
                   torch.stack([merged.var, _stacked(left).var]),
                   torch.stack([merged.count, torch.tensor([0, 1, 0, 3])]))
    reduced = grid.reduce(0)  # column 0: no values at all; column 2: the one value of right[2]
    close(reduced.mean[0], 0.0)
    close(reduced.var[0], 0.0)
    assert int(reduced.count[0]) == 0
    close(reduced.mean[2], right[2][0])
    close(reduced.var[2], 0.0)
    assert int(reduced.count[2]) == 1


def test_merge_of_a_common_count_with_per_set_counts() -> None:
    """A set size shared by every set (an int) merges with sizes that differ per set."""
    gen = torch.Generator().manual_seed(6)
    common = 3.0 + torch.randn(2, 4, dtype=torch.float64, generator=gen)  # 2 sets of 4 values
    ragged = _ragged_sets([2, 0], seed=7)
    for merged in (Moments.from_tensor(common, (1,)).merge(_stacked(ragged)),
                   _stacked(ragged).merge(Moments.from_tensor(common, (1,)))):
        for i in range(2):
            mean, var, count = ref_moments(torch.cat([common[i], ragged[i]]), (0,))
            close(merged.mean[i], mean)
            close(merged.var[i], var)
            assert int(torch.as_tensor(merged.count)[i]) == count


@pytest.mark.parametrize(("shape", "dims", "stat_shape"), [
    ((0, 3, 4), (0, 2), (3,)),
    ((2, 0, 5), (-2,), (2, 5)),
    ((2, 3, 0), (0, -1), (3,)),
])
def test_moments_of_an_empty_set_are_zero_with_count_zero(shape, dims, stat_shape) -> None:
    """No values: mean and variance 0 (not NaN) with the statistics' shape, count 0, and the
    empty set adds nothing when merged with another set, on either side."""
    x = torch.randn(shape, dtype=torch.float64)
    for m in (Moments.from_tensor(x, dims), Moments.of_batch(x, dims)):
        assert m.mean.shape == stat_shape and m.var.shape == stat_shape
        assert torch.equal(m.mean, torch.zeros(stat_shape, dtype=torch.float64))
        assert torch.equal(m.var, torch.zeros(stat_shape, dtype=torch.float64))
        assert int(m.count) == 0
        assert torch.equal(m.unbiased_var, m.var)
    full = torch.randn(tuple(s or 2 for s in shape), dtype=torch.float64)
    other = Moments.from_tensor(full, dims)
    mean, var, count = ref_moments(full, tuple(d % full.dim() for d in dims))
    for merged in (Moments.from_tensor(x, dims).merge(other),
                   other.merge(Moments.from_tensor(x, dims))):
        close(merged.mean, mean)
        close(merged.var, var)
        assert int(merged.count) == count


def test_of_batch_keeps_an_empty_batch_in_the_graph() -> None:
    """A replica with no samples still reaches backward (zero gradient, not None), so the
    merge's backward collective runs on it too; fp16 input gives float32 statistics."""
    for dtype, stat_dtype in ((torch.float64, torch.float64), (torch.float16, torch.float32)):
        x = torch.randn(0, 3, 4, dtype=dtype, requires_grad=True)
        m = Moments.of_batch(x, (0, 2))
        assert m.mean.dtype == m.var.dtype == stat_dtype
        (m.mean.sum() + m.var.sum()).backward()
        assert x.grad is not None and x.grad.shape == x.shape


def test_of_batch_of_a_non_empty_batch_equals_two_pass_moments() -> None:
    x = torch.randn(5, 3, 4, dtype=torch.float64) * 2 + 7
    m = Moments.of_batch(x, (0, 2))
    mean, var, count = ref_moments(x, (0, 2))
    close(m.mean, mean)
    close(m.var, var)
    assert int(m.count) == count


def test_merge_equal_counts_keeps_the_merged_dim_by_default() -> None:
    """The layers broadcast the merged moments back over the sets (keepdim defaults to True)."""
    from normlab.core.moments import merge_equal_counts

    mean, var = torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    mu, sigma2, dev = merge_equal_counts(mean, var, 1)
    assert mu.shape == sigma2.shape == (3, 1) and dev.shape == (3, 4)
    close(mu, mean.mean(1, keepdim=True))


@pytest.mark.parametrize(("mean", "var", "finite"), [
    (1.0, 2.0, True),
    (float("nan"), 2.0, False),
    (1.0, float("inf"), False),  # values of ±3e19: each mean finite, the variance overflows
    (float("-inf"), 2.0, False),
])
def test_is_finite_needs_every_mean_and_variance_finite(mean, var, finite) -> None:
    m = Moments(torch.tensor([0.0, mean]), torch.tensor([1.0, var]), 4)
    assert bool(m.is_finite()) is finite
    assert bool(Moments.from_tensor(torch.tensor([[3e19, -3e19]]), (1,)).is_finite()) is False
