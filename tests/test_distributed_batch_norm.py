"""Cross-replica BatchNorm on real gloo processes: equal to one process on the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab
from distributed_cases import compare, reference, synced_rank
from distributed_harness import run_ranks

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

SIZES = {2: [[4, 4], [3, 5]], 3: [[1, 7, 3], [4, 0, 2]]}


@pytest.mark.parametrize("spec", ["batch_norm", "torch_bn", "bounded_batch_norm"])
@pytest.mark.parametrize(
    ("world", "sizes"),
    [(w, s) for w, group in SIZES.items() for s in group],
    ids=lambda v: str(v),
)
def test_synced_batch_norm_equals_one_process(spec: str, world: int, sizes: list[int]) -> None:
    ref = reference(spec, {}, sizes, steps=3)
    results = run_ranks(world, synced_rank, spec, {}, sizes, 3)
    compare(results, ref)
    for r in results:  # eval is the same function everywhere, and ran without a collective
        torch.testing.assert_close(r["eval"], results[0]["eval"], rtol=0, atol=0)


def test_sync_reports_and_converts_torch_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.GroupNorm(2, 4))
    new, report = normlab.distributed.sync_with_report(model)
    assert [str(r) for r in report] == ["1: BatchNorm2d -> BatchNorm (cross-replica statistics)"]
    assert isinstance(new[1], normlab.BatchNorm) and new[1].moments_reducer is not None
    assert isinstance(model[1], nn.BatchNorm2d)  # a copy by default
    back = normlab.distributed.unsync(new)
    assert back[1].moments_reducer is None


def test_synced_layer_without_process_group_says_how_to_fix() -> None:
    layer = normlab.distributed.sync(normlab.BatchNorm(3))
    with pytest.raises(normlab.NormlabError, match="init_process_group"):
        layer(torch.randn(4, 3))
    layer.eval()(torch.randn(4, 3))  # eval needs no process group


@pytest.mark.skipif(
    not (
        torch.cuda.is_available()
        and torch.cuda.device_count() >= 2
        and torch.distributed.is_nccl_available()
    ),
    reason="the NCCL path needs 2 CUDA GPUs",
)
@pytest.mark.parametrize("sizes", [[3, 5], [6, 0]], ids=str)
def test_synced_batch_norm_over_nccl_equals_one_process(sizes: list[int]) -> None:
    ref = reference("batch_norm", {}, sizes, steps=2)
    results = run_ranks(2, synced_rank, "batch_norm", {}, sizes, 2, "cuda", backend="nccl")
    compare(results, ref, tol=1e-9)
