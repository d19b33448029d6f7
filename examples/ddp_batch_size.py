"""Per-worker BatchNorm under DDP trains a different model than one process does; normlab.sync
does not.

    torchrun --nproc_per_node 2 examples/ddp_batch_size.py        (CPU, gloo; a few seconds)

"If two different machines use different batch sizes, they will indirectly be optimizing
different loss functions" (Goyal et al. 2017, arXiv:1706.02677): under DDP each worker's
BatchNorm normalizes with the statistics of its own part of the batch, so the loss is not the
loss of the global batch. This script trains one small CNN on sklearn's digits for STEPS SGD
steps of a global batch of 32 — split 16 + 16 and 4 + 28 over the workers, with per-worker BN
and with `normlab.sync` — and prints how far each run ends from one process training on the
whole batch. Every run scales its local loss so that DDP's gradient average is the gradient of
the global batch's mean loss: the only difference left is where BN's statistics come from.

It runs in float64 so that rounding stays near 1e-15 and the gaps printed are BN's alone (in
float32 the synced run starts 1e-7 from the reference, and rounding differences then grow
along the trajectory as they do between any two float32 runs: 4e-4 after 40 steps here).
"""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

import normlab

GLOBAL_BATCH, STEPS, LR = 32, 40, 0.1


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def digits() -> tuple[Tensor, Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x).view(-1, 1, 8, 8) / 16, torch.tensor(y)


def batches(x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    return [(x[idx], y[idx]) for idx in order[: STEPS * GLOBAL_BATCH].split(GLOBAL_BATCH)]


def train(model: nn.Module, data: list[tuple[Tensor, Tensor]], world: int = 1) -> float:
    """SGD on the local batches; returns the last step's loss on the global batch. The local
    loss is sum / GLOBAL_BATCH · world: DDP averages gradients over the workers, so their
    average is the gradient of the global mean loss whatever the local batch sizes."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for x, y in data:
        loss = F.cross_entropy(model(x), y, reduction="sum") / GLOBAL_BATCH
        opt.zero_grad()
        (loss * world).backward()
        opt.step()
    total = loss.detach()
    if world > 1:
        dist.all_reduce(total)
    return float(total)


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_default_dtype(torch.float64)
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(*digits())

    reference = cnn()  # one process, the whole batch (every worker computes it)
    ref_loss = train(reference, data)
    ref_params = torch.cat([p.detach().flatten() for p in reference.parameters()])

    if rank == 0:
        print(f"{world} workers, global batch {GLOBAL_BATCH}, {STEPS} SGD steps on digits, "
              "compared with one process on the whole batch:")  # fmt: skip
    for label, sizes, synced in (
        ("per-worker BN", [GLOBAL_BATCH // world] * world, False),
        ("per-worker BN", [4, GLOBAL_BATCH - 4], False),
        ("normlab.sync ", [4, GLOBAL_BATCH - 4], True),
    ):
        assert len(sizes) == world, "run with --nproc_per_node 2"
        start = sum(sizes[:rank])
        local = [(x[start : start + sizes[rank]], y[start : start + sizes[rank]]) for x, y in data]
        model = normlab.sync(cnn()) if synced else cnn()
        loss = train(DDP(model), local, world)
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        gap = float((params - ref_params).abs().max())
        if rank == 0:
            split = " + ".join(map(str, sizes))
            print(f"  {label}  batches {split:>7}:  max|Δ param| {gap:.1e}"
                  f"   |Δ loss| {abs(loss - ref_loss):.1e}")  # fmt: skip
    # free the DDP wrappers (reference cycles) while the group lives, and let both ranks finish
    # before it goes: a wrapper collected after destroy_process_group aborts its process
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
