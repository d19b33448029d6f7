"""normlab.sync around torch's SyncBatchNorm, sub-groups, low precision, eval, deepcopy and
layers without a cross-replica mode (real gloo processes where collectives run).

References are one process on the concatenated batch (`distributed_cases.reference` /
`_train`, torch.nn.BatchNorm2d or a float32 layer), never the synced code itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

import normlab
from distributed_cases import _train, batches, compare, make, reference
from distributed_harness import run_ranks
from normlab.errors import ConfigError

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "barrier")


@contextmanager
def recording(calls: list[tuple[str, torch.dtype | None]]) -> Iterator[None]:
    """Record every collective (name, dtype of its tensor) while forwarding it."""
    saved = {name: getattr(dist, name) for name in COLLECTIVES}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            tensor = args[1] if name.startswith("all_gather") else (args or [None])[0]
            calls.append((name, tensor.dtype if isinstance(tensor, Tensor) else None))
            return fn(*args, **kwargs)

        return call

    try:
        for name, fn in saved.items():
            setattr(dist, name, wrap(name, fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(dist, name, fn)


def part(sizes: list[int], steps: int, ranks: list[int]) -> list[tuple[Tensor, Tensor]]:
    """The rows of ``ranks`` (in that order) of every step's batch."""
    starts = [sum(sizes[:r]) for r in range(len(sizes) + 1)]
    return [
        (
            torch.cat([x[starts[r] : starts[r + 1]] for r in ranks]),
            torch.cat([g[starts[r] : starts[r + 1]] for r in ranks]),
        )
        for x, g in batches(sizes, steps)
    ]


def torch_sync_bn(group: Any = None) -> nn.Module:
    """The reference layer's twin (same parameters) as torch.nn.SyncBatchNorm."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(make("torch_bn", {}), group)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- rank functions ------------------------------------------------------------------------------


def world_rank(rank: int, world: int, sizes: list[int], steps: int) -> dict[str, Any]:
    """SyncBatchNorm -> sync -> training; deepcopy; eval without collectives; unsync(to_torch)."""
    layer = normlab.sync(torch_sync_bn())
    assert type(layer) is normlab.BatchNorm
    result = _train(layer, part(sizes, steps, [rank]))
    twin = copy.deepcopy(layer)
    result["deepcopy"] = (
        twin is not layer
        and twin.moments_reducer is layer.moments_reducer
        and twin.moments_reducer.process_group is None
    )
    eval_calls: list[Any] = []
    train_calls: list[Any] = []
    x = batches(sizes, 1)[0][0][:3]
    with recording(eval_calls):
        twin.eval()
        for _ in range(rank + 1):  # unequal numbers of evals: a collective would hang
            twin(x)
    with recording(train_calls):  # the recorder sees the training collective
        twin.train()(x[: sizes[rank]])
    result["calls"] = (len(eval_calls), len(train_calls))
    back = normlab.unsync(layer, to_torch=True)
    result["back"] = (type(back), back.process_group, same_state(back, layer))
    return result


def subgroup_rank(rank: int, world: int, sizes: list[int], steps: int) -> Any:
    """Ranks {0, 2} share statistics, rank 1 is a group of its own: an explicit
    process_group, then a SyncBatchNorm's own one (kept by sync and by unsync(to_torch))."""
    pair, alone = dist.new_group([0, 2]), dist.new_group([1])  # every rank creates both
    mine = alone if rank == 1 else pair
    data = part(sizes, steps, [rank])
    explicit = _train(normlab.sync(make("torch_bn", {}), process_group=mine), data)
    layer = normlab.sync(torch_sync_bn(mine))
    own = _train(layer, data)
    back = normlab.unsync(layer, to_torch=True)
    kept = layer.moments_reducer.process_group is mine and back.process_group is mine
    return explicit, own, kept and isinstance(back, nn.SyncBatchNorm) and same_state(back, layer)


def low_precision_rank(rank: int, world: int, sizes: list[int], steps: int) -> Any:
    """float16 and bfloat16 input to a float32 layer; the dtypes the collectives carried."""
    out = {}
    for dtype in (torch.float16, torch.bfloat16):
        calls: list[Any] = []
        data = [(x.to(dtype), g.to(dtype)) for x, g in part(sizes, steps, [rank])]
        with recording(calls):
            out[dtype] = _train(normlab.sync(make("batch_norm", {}).float()), data)
        out[dtype]["calls"] = calls
    return out


# -- tests ---------------------------------------------------------------------------------------


def test_sync_batch_norm_model_trains_like_one_process() -> None:
    sizes, steps = [2, 0, 6], 3
    results = run_ranks(3, world_rank, sizes, steps)
    compare(results, reference("torch_bn", {}, sizes, steps))
    for r in results:
        assert r["deepcopy"]
        assert r["calls"] == (0, 1)  # eval: none; training: the one all_gather
        assert r["back"] == (nn.SyncBatchNorm, None, True)


def test_sub_groups_equal_one_process_on_the_group_data() -> None:
    sizes, steps = [3, 4, 5], 2
    results = run_ranks(3, subgroup_rank, sizes, steps)
    pair_ref = _train(make("torch_bn", {}), part(sizes, steps, [0, 2]))
    alone_ref = _train(make("torch_bn", {}), part(sizes, steps, [1]))
    for which in (0, 1):  # explicit process_group, SyncBatchNorm's own group
        compare([results[0][which], results[2][which]], pair_ref)
        compare([results[1][which]], alone_ref)
    assert all(r[2] for r in results)


def test_half_precision_statistics_travel_and_merge_in_float32() -> None:
    """Reference: the float32 layer on the concatenated low-precision input (converted to
    float32 exactly). Running buffers are float32 on both sides and differ only by float32
    rounding of the merge, so 1e-6 (they would be ~1e-3 off if the statistics travelled in
    fp16/bf16). Outputs are rounded once to the input dtype: within its unit roundoff u,
    rtol 2u = 2**-10 (fp16), 2**-7 (bf16). The input gradient is the sum of two terms rounded
    to the input dtype apiece (through x and through the moments) that nearly cancel, so its
    error is bounded by u times the largest term (about max|gx|), not by u|gx|: atol
    2u·max|gx|. Summed parameter gradients are float32 sums of low-precision products:
    rtol 2u."""
    sizes, steps = [3, 5], 2
    results = run_ranks(2, low_precision_rank, sizes, steps)
    for dtype, ulp in ((torch.float16, 2.0**-10), (torch.bfloat16, 2.0**-7)):
        data = [(x.to(dtype).float(), g.to(dtype).float()) for x, g in batches(sizes, steps)]
        ref = _train(make("batch_norm", {}).float(), data)
        per_rank = [r[dtype] for r in results]
        for r in per_rank:
            assert r["calls"] and all(d == torch.float32 for _, d in r["calls"]), r["calls"]
        for step in range(steps):
            for key in ("y", "gx"):
                got, expected = torch.cat([r[key][step] for r in per_rank]), ref[key][step]
                assert got.dtype == dtype
                atol = ulp * float(expected.abs().max()) if key == "gx" else 1e-6
                torch.testing.assert_close(got.float(), expected, rtol=ulp, atol=atol)
            for i, expected in enumerate(ref["param_grads"][step]):
                total = sum(r["param_grads"][step][i] for r in per_rank)
                torch.testing.assert_close(total, expected, rtol=ulp, atol=1e-4)
        for name, expected in ref["buffers"].items():
            for r in per_rank:
                torch.testing.assert_close(r["buffers"][name], expected, rtol=1e-6, atol=1e-6)


def test_torch_sync_batch_norm_checkpoint_loads_into_the_synced_model() -> None:
    torch_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.ReLU())
    with torch.no_grad():
        torch_model[1].running_mean.uniform_()
        torch_model[1].running_var.uniform_(1, 2)
        torch_model[1].weight.uniform_()
        torch_model[1].num_batches_tracked.fill_(7)
    synced = normlab.sync(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()))
    synced.load_state_dict(torch_model.state_dict())
    assert isinstance(synced[1], normlab.BatchNorm) and synced[1].moments_reducer is not None
    assert same_state(synced, torch_model)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(synced.eval()(x), torch_model.eval()(x))


class NoSyncBatchNorm(normlab.BatchNorm):
    """A batch-dependent layer whose class has no cross-replica mode."""

    supports_sync = False


def test_layer_without_cross_replica_mode_is_named_and_can_be_skipped() -> None:
    model = nn.Sequential(nn.BatchNorm2d(4), nn.Sequential(NoSyncBatchNorm(4)))
    with pytest.raises(ConfigError, match=r"1\.0 \(NoSyncBatchNorm\).*skip='1\.0'"):
        normlab.sync(model)
    synced, report = normlab.distributed.sync_with_report(model, skip="1.0")
    assert [r.path for r in report] == ["0"]
    assert synced[1][0].moments_reducer is None and synced[0].moments_reducer is not None


class DoublingBatchNorm2d(nn.BatchNorm2d):
    """A torch BN subclass with its own forward, which no conversion may silently drop."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * 2


def test_torch_layer_that_cannot_convert_is_named_by_its_path_with_the_skip_fix() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(DoublingBatchNorm2d(4)))
    with pytest.raises(ConfigError) as info:
        normlab.sync(model)
    assert str(info.value) == (
        "sync: 1.0: syncing converts this torch BatchNorm to normlab's, which failed: module "
        "(DoublingBatchNorm2d with 4 channels): its class overrides forward or holds child "
        "modules (e.g. a fused activation), which a plain norm layer would silently drop. "
        "Replace it with normlab.surgery.replace_modules and a callback that keeps the extra "
        "behaviour. Or pass skip='1.0' to keep it per-replica."
    )
    synced = normlab.sync(model, skip="1.0")
    assert type(synced[1][0]) is DoublingBatchNorm2d


def test_every_batch_dependent_registered_layer_has_a_cross_replica_mode() -> None:
    """A new method whose training statistics span the batch must implement sync (or be
    refused by it): none may silently normalize per replica."""
    missing = [
        entry.name
        for entry in normlab.registry.entries()
        if entry.cls.running_stats in ("batch", "batch_biased")
        and not entry.cls.frozen_stats
        and not entry.cls.supports_sync
    ]
    assert not missing, missing
