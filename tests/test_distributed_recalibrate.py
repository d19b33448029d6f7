"""recalibrate across replicas (real gloo processes): every replica ends with the buffers of one
process recalibrating on the batches of all replicas — uneven numbers of batches, a replica with
none, a layer that sees input on some replicas only, a synced model, a DDP wrapper, and a
replica that fails."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

import normlab
from distributed_harness import run_ranks
from normlab.errors import InputError
from normlab.surgery import recalibrate

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

C = 4
F64 = torch.float64


class Net(nn.Module):
    """One layer of each kind of running statistics; ``big`` sees only batches of >= 5
    samples, ``unused`` never sees input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.bn = nn.BatchNorm2d(C)  # "batch", torch
        self.nbn = normlab.BatchNorm(C)  # "batch", normlab (synced on the replicas)
        self.brn = normlab.create("batch_renorm", C, warmup_steps=0)  # "batch_biased"
        self.inorm = normlab.create("instance_norm", C, affine=True, track_running_stats=True)
        self.evo = normlab.create("evo_norm_b0", C)  # running_var only
        self.big = nn.BatchNorm2d(C)
        self.unused = nn.BatchNorm2d(C)

    def forward(self, x: Tensor) -> Tensor:
        x = self.nbn(torch.relu(self.bn(torch.relu(self.brn(self.conv(x))))))
        x = self.evo(self.inorm(x))
        return self.big(x) if x.shape[0] >= 5 else x


def make_net() -> Net:
    """The same stale model on every process (statistics of another distribution)."""
    torch.manual_seed(0)
    net = Net().to(F64)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(6, 3, 5, 5, dtype=F64) * 3 - 2)
    return net


def rank_batches(shapes: list[list[tuple[int, ...]]]) -> list[list[Tensor]]:
    """Every replica's batches (deterministic), unequal batch and spatial sizes."""
    gen = torch.Generator().manual_seed(3)
    return [[torch.randn(s, generator=gen, dtype=F64) * 1.5 + 0.5 for s in rank] for rank in shapes]


def buffers(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def recalibrate_rank(rank: int, world: int, shapes: list[list[tuple[int, ...]]]) -> Any:
    net = normlab.sync(make_net(), skip=["brn", "evo", "inorm"])  # BNs synced
    report = recalibrate(net, rank_batches(shapes)[rank], process_group=dist.group.WORLD)
    assert net.nbn.moments_reducer is not None  # restored
    return buffers(net), [(r.path, r.count, r.batches) for r in report]


def ddp_and_failure_rank(rank: int, world: int, shapes: list[list[tuple[int, ...]]]) -> Any:
    """A DDP-wrapped synced model (uneven numbers of batches), then a replica with a NaN."""
    net = normlab.sync(make_net(), skip=["brn", "evo", "inorm"])
    ddp = nn.parallel.DistributedDataParallel(net)
    recalibrate(ddp, rank_batches(shapes)[rank], process_group=dist.group.WORLD)
    merged = buffers(net)
    bad = [torch.randn(4, 3, 5, 5, dtype=F64)]
    if rank == 1:
        bad[0][0, 0, 0, 0] = float("nan")
    try:
        recalibrate(net, bad, process_group=dist.group.WORLD)
    except InputError as error:
        message = str(error)
    else:
        message = ""
    return merged, buffers(net), message


def one_process(shapes: list[list[tuple[int, ...]]]) -> tuple[dict[str, Tensor], list[Any]]:
    net = make_net()
    report = recalibrate(net, [b for rank in rank_batches(shapes) for b in rank])
    return buffers(net), [(r.path, r.count, r.batches) for r in report]


def check_equal(results: list[dict[str, Tensor]], expected: dict[str, Tensor]) -> None:
    for name, value in expected.items():
        for rank, got in enumerate(results):
            torch.testing.assert_close(
                got[name], value, rtol=1e-10, atol=1e-10, msg=f"{name}, rank {rank}"
            )
            assert torch.equal(got[name], results[0][name]), (name, rank)


# rank 1 has no batch; `big` sees input on rank 2 only; 2 + 0 + 3 batches
THREE = [
    [(2, 3, 5, 5), (4, 3, 6, 6)],
    [],
    [(7, 3, 5, 5), (1, 3, 4, 4), (3, 3, 5, 5)],
]
TWO = [[(3, 3, 5, 5)], [(5, 3, 4, 4), (2, 3, 6, 6), (4, 3, 5, 5), (6, 3, 5, 5)]]


def test_three_replicas_equal_one_process_on_all_batches() -> None:
    expected, expected_report = one_process(THREE)
    stale = buffers(make_net())
    results = run_ranks(3, recalibrate_rank, THREE)
    check_equal([r[0] for r in results], expected)
    for _, report in results:
        assert report == expected_report  # global counts and batches on every replica
    counts = dict((path, count) for path, count, _ in expected_report)
    assert counts["big"] == 7 * 25 and counts["unused"] == 0 and counts["inorm"] == 17
    # the test can fail: recalibrating a replica's own batches alone gives other statistics
    assert not torch.allclose(results[0][0]["bn.running_mean"], stale["bn.running_mean"])
    for name in ("brn.running_var", "nbn.running_mean", "inorm.running_var", "evo.running_var"):
        alone = make_net()
        recalibrate(alone, rank_batches(THREE)[2])
        assert not torch.allclose(buffers(alone)[name], expected[name]), name
    torch.testing.assert_close(results[1][0]["unused.running_mean"], stale["unused.running_mean"])


def test_ddp_wrapper_uneven_batches_and_a_failing_replica() -> None:
    expected, _ = one_process(TWO)
    results = run_ranks(2, ddp_and_failure_rank, TWO)
    check_equal([r[0] for r in results], expected)
    for rank, (merged, after, message) in enumerate(results):
        for name, value in merged.items():  # the failed run changed nothing anywhere
            assert torch.equal(after[name], value), (rank, name)
        assert ("NaN" if rank == 1 else "other replica") in message, message

# recalibrate(process_group=...) without torch.distributed: tests/test_surgery_recalibrate.py


def small_net() -> nn.Module:
    """The same small model (Linear, BatchNorm1d) on every process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to(F64)


def _failure_message(net: nn.Module, batches: list[Tensor], group: Any) -> str:
    """The message of the InputError that recalibrate raises ("" when it succeeds)."""
    try:
        recalibrate(net, batches, process_group=group)
    except InputError as error:
        return str(error)
    return ""


def subgroups_and_failures_rank(rank: int, world: int) -> Any:
    """Ranks 0 and 1 recalibrate in their own group (2 + 1 batches), rank 2 alone in its own
    (4 batches); then ranks 1 and 2 fail on a NaN in the world group, then rank 1 fails in
    the group of ranks 0 and 1 while rank 2 succeeds alone."""
    pair, single = dist.new_group([0, 1]), dist.new_group([2])
    mine = pair if rank < 2 else single
    gen = torch.Generator().manual_seed(rank)
    data = [torch.randn(5, 3, generator=gen, dtype=F64) for _ in range((2, 1, 4)[rank])]
    report = recalibrate(small_net(), data, process_group=mine)
    bad = torch.randn(5, 3, generator=gen, dtype=F64)
    if rank > 0:
        bad[0, 0] = float("nan")
    in_world = _failure_message(small_net(), [bad], dist.group.WORLD)
    in_group = _failure_message(small_net(), [bad if rank == 1 else data[0]], mine)
    return [(r.batches, r.count) for r in report], in_world, in_group


def test_subgroups_count_their_own_batches_and_the_failure_message_counts_replicas() -> None:
    """recalibrate merges the batches of its process_group only (not of the world), and a
    replica whose peers failed says how many failed and that nothing was changed."""
    results = run_ranks(3, subgroups_and_failures_rank)
    assert [r[0] for r in results] == [[(3, 3 * 5)], [(3, 3 * 5)], [(4, 4 * 5)]]
    failed = (
        "recalibrate: {} other replica(s) of the process group failed while running their "
        "batches (their own error says why); every running statistic was left as it was here "
        "too."
    )
    assert results[0][1] == failed.format(2)
    assert all("NaN" in r[1] for r in results[1:]), results
    assert results[0][2] == failed.format(1) and "NaN" in results[1][2] and results[2][2] == ""
