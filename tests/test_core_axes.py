"""normlab.core.Axes: which elements of an (N, C, *S) tensor share one statistic.

Expected values are derived here from the role definitions (BN = over (N, *S), LN = over
(C, *S), IN = over (*S), GN = over (C/G, *S), per-position LN = over (C)), never from normlab.
"""

from __future__ import annotations

import math

import pytest
import torch

import normlab
from normlab.core import Axes

RANKS = (2, 3, 4, 5)
CHANNEL_DIMS = (1, -1)

# kind -> (roles, groups)
KINDS = {
    "bn": (("batch", "spatial"), 1),
    "ln": (("channel", "spatial"), 1),
    "in": (("spatial",), 1),
    "gn": (("channel", "spatial"), 4),
    "ln_pp": (("channel",), 1),
}


def _axes(kind: str) -> Axes:
    roles, groups = KINDS[kind]
    if groups == 1:
        return Axes(reduce=roles)
    return Axes(reduce=roles, groups=groups)


def _role_dims(ndim: int, channel_dim: int) -> dict[str, list[int]]:
    cdim = 1 if channel_dim == 1 else ndim - 1
    spatial = [d for d in range(1, ndim) if d != cdim]
    return {"batch": [0], "channel": [cdim], "spatial": spatial}


def _expected_dims(kind: str, ndim: int, channel_dim: int) -> list[int]:
    roles, _ = KINDS[kind]
    by_role = _role_dims(ndim, channel_dim)
    return sorted(d for r in roles for d in by_role[r])


def _shape(ndim: int, channel_dim: int, n: int = 3, c: int = 8) -> tuple[int, ...]:
    spatial = (5, 2, 7)[: ndim - 2]
    if channel_dim == 1:
        return (n, c, *spatial)
    return (n, *spatial, c)


def _expected_set_size(kind: str, shape: tuple[int, ...], channel_dim: int) -> int:
    roles, groups = KINDS[kind]
    dims = _expected_dims(kind, len(shape), channel_dim)
    size = math.prod(shape[d] for d in dims)
    if "channel" in roles:
        size //= groups
    return size


def _normalize_dims(dims, ndim: int) -> list[int]:
    dims = list(dims)
    assert all(isinstance(d, int) and not isinstance(d, bool) for d in dims), dims
    norm = [d % ndim for d in dims]
    assert len(set(norm)) == len(norm), f"duplicate dims in {dims}"
    return sorted(norm)


@pytest.mark.parametrize("channel_dim", CHANNEL_DIMS)
@pytest.mark.parametrize("ndim", RANKS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reduced_dims(kind, ndim, channel_dim):
    dims = _axes(kind).reduced_dims(ndim, channel_dim=channel_dim)
    assert isinstance(dims, tuple)
    assert _normalize_dims(dims, ndim) == _expected_dims(kind, ndim, channel_dim)


@pytest.mark.parametrize("ndim", RANKS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reduced_dims_default_channel_dim_is_1(kind, ndim):
    dims = _axes(kind).reduced_dims(ndim)
    assert _normalize_dims(dims, ndim) == _expected_dims(kind, ndim, 1)


def test_reduced_dims_concrete_values():
    # A few literal cases, written out by hand, so the derivation above is itself checked.
    bn, ln, inn, pp = _axes("bn"), _axes("ln"), _axes("in"), _axes("ln_pp")
    assert _normalize_dims(bn.reduced_dims(4), 4) == [0, 2, 3]
    assert _normalize_dims(bn.reduced_dims(4, channel_dim=-1), 4) == [0, 1, 2]
    assert _normalize_dims(bn.reduced_dims(2), 2) == [0]
    assert _normalize_dims(ln.reduced_dims(3), 3) == [1, 2]
    assert _normalize_dims(ln.reduced_dims(3, channel_dim=-1), 3) == [1, 2]
    assert _normalize_dims(inn.reduced_dims(5), 5) == [2, 3, 4]
    assert _normalize_dims(inn.reduced_dims(5, channel_dim=-1), 5) == [1, 2, 3]
    assert _normalize_dims(inn.reduced_dims(2), 2) == []
    assert _normalize_dims(pp.reduced_dims(3), 3) == [1]
    assert _normalize_dims(pp.reduced_dims(3, channel_dim=-1), 3) == [2]


@pytest.mark.parametrize("channel_dim", CHANNEL_DIMS)
@pytest.mark.parametrize("ndim", RANKS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_set_size(kind, ndim, channel_dim):
    shape = _shape(ndim, channel_dim)
    got = _axes(kind).set_size(shape, channel_dim=channel_dim)
    assert int(got) == _expected_set_size(kind, shape, channel_dim)
    assert type(got) is int  # a number of values (it appears in set-size errors)


def test_set_size_concrete_values():
    shape = (3, 8, 5, 2)  # N, C, H, W
    assert _axes("bn").set_size(shape) == 3 * 5 * 2
    assert _axes("ln").set_size(shape) == 8 * 5 * 2
    assert _axes("in").set_size(shape) == 5 * 2
    assert _axes("gn").set_size(shape) == (8 // 4) * 5 * 2
    assert _axes("ln_pp").set_size(shape) == 8
    nhwc = (3, 5, 2, 8)
    assert _axes("bn").set_size(nhwc, channel_dim=-1) == 3 * 5 * 2
    assert _axes("in").set_size(nhwc, channel_dim=-1) == 5 * 2
    assert _axes("ln_pp").set_size(nhwc, channel_dim=-1) == 8
    assert Axes(reduce=("channel", "spatial"), groups=8).set_size(shape) == 5 * 2


def test_set_size_accepts_torch_size():
    x = torch.zeros(3, 8, 5)
    assert _axes("bn").set_size(x.shape) == 15
    assert _axes("gn").set_size(x.shape) == 10


def test_describe():
    descriptions = {kind: _axes(kind).describe() for kind in KINDS}
    for kind, text in descriptions.items():
        assert isinstance(text, str)
        assert text.strip(), kind
    # Different reduction sets must not be described identically.
    assert len(set(descriptions.values())) == len(descriptions), descriptions
    # BN: "over (N, *S): one statistic per channel".
    assert "N" in descriptions["bn"]
    assert "S" in descriptions["bn"]
    assert "channel" in descriptions["bn"].lower()
    assert "S" in descriptions["in"]
    assert "C" in descriptions["ln"]


def test_axes_groups_default_is_one():
    ax = Axes(reduce=("channel", "spatial"))
    assert ax.groups == 1
    assert ax.set_size((2, 6, 3)) == 18


# --------------------------------------------------------------------------- module axes

MODULES = {
    "bn": lambda c, cd: normlab.BatchNorm(c, channel_dim=cd),
    "ln": lambda c, cd: normlab.LayerNorm(c, channel_dim=cd),
    "in": lambda c, cd: normlab.InstanceNorm(c, channel_dim=cd),
    "gn": lambda c, cd: normlab.GroupNorm(c, num_groups=4, channel_dim=cd),
    "ln_pp": lambda c, cd: normlab.LayerNorm(c, per_position=True, channel_dim=cd),
}


@pytest.mark.parametrize("channel_dim", CHANNEL_DIMS)
@pytest.mark.parametrize("ndim", (3, 4))
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_module_axes_match_the_method(kind, ndim, channel_dim):
    m = MODULES[kind](8, channel_dim)
    assert isinstance(m.axes, Axes)
    assert m.channel_dim == channel_dim
    shape = _shape(ndim, channel_dim)
    dims = m.axes.reduced_dims(ndim, channel_dim=m.channel_dim)
    assert _normalize_dims(dims, ndim) == _expected_dims(kind, ndim, channel_dim)
    got = m.axes.set_size(shape, channel_dim=m.channel_dim)
    assert got == _expected_set_size(kind, shape, channel_dim)


def test_rms_norm_axes_are_per_position():
    m = normlab.RMSNorm(8)
    assert isinstance(m.axes, Axes)
    assert m.axes.set_size((3, 8, 5)) == 8
    assert _normalize_dims(m.axes.reduced_dims(3), 3) == [1]


def test_group_norm_group_size_sets_num_groups_and_axes():
    m = normlab.GroupNorm(12, group_size=3)
    assert m.num_groups == 4
    assert m.axes.set_size((2, 12, 5)) == 3 * 5
    default = normlab.GroupNorm(64)
    assert default.num_groups == 32
    assert default.axes.set_size((2, 64, 5)) == 2 * 5


@pytest.mark.parametrize(("axes", "text"), [
    (Axes(("batch", "spatial")), "over (N, *S): one statistic per channel"),
    (Axes(("spatial", "batch")), "over (N, *S): one statistic per channel"),
    (Axes(("batch", "spatial"), ghost_batch_size=16),
     "over (ghost batches of 16, *S): one statistic per (ghost batch, channel)"),
    (Axes(("channel", "spatial")), "over (C, *S): one statistic per sample"),
    (Axes(("channel", "spatial"), groups=4),
     "over (C/4, *S): one statistic per (sample, group of channels)"),
    (Axes(("channel", "spatial"), groups=2),
     "over (C/2, *S): one statistic per (sample, group of channels)"),
    (Axes(("spatial",)), "over (*S): one statistic per (sample, channel)"),
    (Axes(("channel",)), "over (C): one statistic per (sample, position)"),
], ids=["bn", "bn-roles-in-any-order", "ghost", "ln", "gn", "gn2", "in", "ln-per-position"])
def test_describe_names_the_set_and_what_owns_each_statistic(axes: Axes, text: str) -> None:
    """The sentence users read in set-size errors and `normlab describe`, written out."""
    assert axes.describe() == text


def test_ghost_batches_hold_at_most_their_size() -> None:
    """A ghost batch holds min(N, size) samples: the set size and the number of statistics."""
    ghost = Axes(("batch", "spatial"), ghost_batch_size=4)
    assert ghost.set_size((10, 3, 5)) == 4 * 5
    assert ghost.set_size((2, 3, 5)) == 2 * 5
    assert ghost.set_size((10, 5, 3), channel_dim=-1) == 4 * 5
    assert Axes(("spatial",), ghost_batch_size=4).set_size((10, 3, 5)) == 5


def test_unknown_roles_are_refused_and_roles_are_kept_in_canonical_order() -> None:
    with pytest.raises(ValueError, match="sample"):
        Axes(("sample",))  # type: ignore[arg-type]
    assert Axes(("spatial", "channel", "batch")).reduce == ("batch", "channel", "spatial")


@pytest.mark.parametrize("channel_dim", CHANNEL_DIMS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_count_is_the_number_of_statistics(kind: str, channel_dim: int) -> None:
    """One statistic per set: BN one per channel, LN one per sample, IN one per (sample,
    channel), GN one per (sample, group), per-position LN one per (sample, position)."""
    shape = _shape(4, channel_dim)  # N=3, C=8, S=(5, 2)
    n, c, positions = 3, 8, 5 * 2
    expected = {"bn": c, "ln": n, "in": n * c, "gn": n * 4, "ln_pp": n * positions}[kind]
    count = _axes(kind).count(shape, channel_dim=channel_dim)
    assert count == expected and type(count) is int
    if channel_dim == 1:  # the default
        assert _axes(kind).count(shape) == expected


def test_count_with_one_value_per_set_is_the_number_of_values() -> None:
    """InstanceNorm on (N, C): each statistic holds a single value, so N·C statistics."""
    assert Axes(("spatial",)).count((3, 8)) == 24
    assert Axes(("channel",)).count((3, 1, 5), channel_dim=1) == 15
