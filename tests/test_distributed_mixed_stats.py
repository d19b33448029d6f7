"""Cross-replica Batch-Instance Norm, Switchable Norm and Virtual BN on real gloo processes:
equal to one process on the concatenated batch (outputs, input gradients, summed parameter
gradients, running / reference buffers to 1e-10, buffers bitwise identical across ranks).

Two spawns in all (2 ranks; 3 ranks with the uneven (1, 7, 3) and empty-rank splits), each
running every case (tests/distributed_cases_mixed.py).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import torch
from torch import nn

import normlab
from distributed_cases import _train, compare, make
from distributed_cases_mixed import Run, phases, reference_run, reference_run_on, synced_runs
from distributed_harness import run_ranks

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

LAYERS: list[tuple[str, dict[str, Any], bool]] = [
    ("batch_instance_norm", {}, False),
    ("batch_instance_norm", {"channel_dim": -1, "momentum": None}, False),
    ("batch_instance_norm", {}, True),  # (N, C): the IN term is 0, BN with weight γρ
    ("switchable_norm", {}, False),
    ("switchable_norm", {"channel_dim": -1, "affine": False}, False),
    ("switchable_norm", {"branches": ("ln", "bn")}, True),  # the reference's SwitchNorm1d
    ("switchable_norm", {"branches": ("bn",), "momentum": None}, False),
]
SPLITS = {2: [(3, 5)], 3: [(1, 7, 3), (4, 0, 2)]}
VBN_SPLITS = {  # (minibatch, reference R) per rank
    2: [((3, 5), (5, 3))],
    3: [((1, 7, 3), (3, 1, 7)), ((0, 2, 4), (4, 0, 2)), ((2, 0, 3), (3, 0, 2))],
}
VBN_KWARGS: list[dict[str, Any]] = [{}, {"channel_dim": -1, "affine": False}]
# rank 0's minibatch is empty and its loss holds no y_R: its backward must still reach the
# merge's collective (through its empty output), or the other ranks wait for it
VBN_EXTRA = {3: [Run("virtual_batch_norm", (0, 2, 4), ref_sizes=(4, 0, 2), ref_loss=False)]}

RUNS = {
    world: [
        Run(spec, sizes, kwargs, flat) for sizes in SPLITS[world] for spec, kwargs, flat in LAYERS
    ]
    + [
        Run("virtual_batch_norm", sizes, kwargs, ref_sizes=ref)
        for sizes, ref in VBN_SPLITS[world]
        for kwargs in VBN_KWARGS
    ]
    + VBN_EXTRA.get(world, [])
    for world in SPLITS
}


@functools.cache
def _spawn(world: int) -> tuple[list[dict[str, Any]], RuntimeError | None]:
    try:
        return run_ranks(world, synced_runs, RUNS[world]), None
    except RuntimeError as error:  # kept: a hanging rank costs its timeout once, not per test
        return [], error


def spawned(world: int) -> list[dict[str, Any]]:
    """Every run of ``world``, from one spawn of ``world`` gloo processes."""
    results, error = _spawn(world)
    if error is not None:
        raise error
    return results


@pytest.mark.parametrize(
    ("world", "run"),
    [(world, run) for world, runs in RUNS.items() for run in runs],
    ids=lambda v: v.name if isinstance(v, Run) else f"world{v}",
)
def test_synced_mixed_norm_equals_one_process(world: int, run: Run) -> None:
    results = [r[run.name] for r in spawned(world)]
    ref = reference_run(run)
    if run.ref_sizes:
        for got, expected in zip(
            zip(*(phases(r) for r in results), strict=True), phases(ref), strict=True
        ):
            compare(list(got), expected)
        # eval's set_reference is local: each rank's own (rank + 2) examples
        assert [r["eval_reference_size"] for r in results] == [2 + i for i in range(world)]
    else:
        compare(results, ref)
    for r in results:  # eval runs no collective and computes the same function everywhere
        torch.testing.assert_close(r["eval"], results[0]["eval"], rtol=0, atol=0)


def test_reference_empty_on_every_rank_raises_alike() -> None:
    messages = {r["empty_everywhere"] for r in spawned(3)}
    assert len(messages) == 1
    assert "it is empty in every replica" in messages.pop()


def test_sync_takes_the_mixed_norms_and_unsync_releases_them() -> None:
    model = nn.Sequential(
        normlab.BatchInstanceNorm(4),
        normlab.SwitchableNorm(4),
        normlab.VirtualBatchNorm(4),
        normlab.LayerNorm(4),
    )
    new, report = normlab.distributed.sync_with_report(model)
    assert [r.path for r in report] == ["0", "1", "2"]
    assert all(new[i].moments_reducer is not None for i in range(3))
    back = normlab.distributed.unsync(new)
    assert all(back[i].moments_reducer is None for i in range(3))


@pytest.mark.parametrize(
    "layer",
    [normlab.BatchInstanceNorm(3), normlab.SwitchableNorm(3), normlab.VirtualBatchNorm(3)],
    ids=lambda m: type(m).__name__,
)
def test_synced_training_needs_a_process_group_eval_does_not(layer: nn.Module) -> None:
    synced = normlab.distributed.sync(layer)
    x = torch.randn(4, 3, 5)
    train_call = synced.set_reference if isinstance(synced, normlab.VirtualBatchNorm) else synced
    with pytest.raises(normlab.NormlabError, match="init_process_group"):
        train_call(x)
    synced.eval()
    layer.eval()
    if isinstance(synced, normlab.VirtualBatchNorm):  # eval: a local reference, no collective
        synced.set_reference(x)
        layer.set_reference(x)
        assert int(synced.reference_size) == 4
    torch.testing.assert_close(synced(x), layer(x), rtol=0, atol=0)


def test_switchable_norm_without_bn_branch_needs_no_process_group() -> None:
    layer = normlab.SwitchableNorm(3, branches=("in", "ln"))
    synced = normlab.distributed.sync(layer)
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(synced(x), layer(x), rtol=0, atol=0)  # the local fast path


ONE_REPLICA = [
    ("batch_instance_norm", {}, (6, 3, 4, 5)),
    ("batch_instance_norm", {"channel_dim": -1, "affine": False}, (6, 4, 5, 3)),
    ("batch_instance_norm", {}, (6, 3)),
    ("switchable_norm", {}, (6, 3, 4, 5)),
    ("switchable_norm", {"branches": ("in", "bn"), "channel_dim": -1}, (6, 7, 3)),
    ("switchable_norm", {"branches": ("ln", "bn"), "affine": False}, (6, 3)),
]


@pytest.mark.parametrize(("spec", "kwargs", "shape"), ONE_REPLICA, ids=str)
def test_synced_path_on_one_replica_equals_the_fast_path(
    spec: str, kwargs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    """The synced composition with an identity reducer (a group of one) against the fused
    fast path, in-process: float64 to 1e-10; bf16 keeps its dtype (float32 statistics)."""
    fast = make(spec, kwargs)
    synced = copy.deepcopy(fast)
    synced.moments_reducer = lambda moments: moments
    gen = torch.Generator().manual_seed(3)
    data = [
        (
            torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3,
            torch.randn(shape, generator=gen, dtype=torch.float64),
        )
        for _ in range(2)
    ]
    compare([_train(synced, data)], _train(fast, data))
    low = {"dtype": torch.bfloat16}
    x = data[0][0].to(**low)
    y_fast, y_synced = fast.float()(x), synced.float()(x)
    assert y_synced.dtype == torch.bfloat16
    torch.testing.assert_close(y_synced, y_fast, rtol=2e-2, atol=2e-2)


def test_virtual_batch_norm_synced_reference_on_one_replica_equals_the_fast_path() -> None:
    run = Run("virtual_batch_norm", (5,), ref_sizes=(4,))
    fast = make(run.spec, {})
    synced = copy.deepcopy(fast)
    synced.moments_reducer = lambda moments: moments
    expected, got = reference_run_on(fast, run), reference_run_on(synced, run)
    for got_phase, expected_phase in zip(phases(got), phases(expected), strict=True):
        compare([got_phase], expected_phase)
