"""The overhead of `normlab.sync`: forward + backward of a small CNN on 2 local gloo processes.

The CNN is 3 blocks of conv 3x3 + BatchNorm + ReLU (3 -> 16 -> 32 -> 32 channels), a batch of
16 per process at 32x32, float32, one thread per process. Sides, built once in the same two
processes and run alternately (the order flips every round), each round ``--steps`` steps
after a barrier; a round's time is the slower process's, a ratio the median of the per-round
ratios against per-worker torch BatchNorm:

* ``torch BN, per worker``: torch.nn.BatchNorm2d, no collective (the baseline);
* ``normlab BN, per worker``: normlab's BatchNorm, no collective (the kernel's share);
* ``normlab.sync``: normlab BatchNorm with cross-replica statistics (per layer: one
  all_gather in the forward, one all_reduce in the backward).

With ``--ddp`` every side is wrapped in DistributedDataParallel (the gradient all_reduce
every side pays).

    python benchmarks/bench_sync.py [--rounds 15] [--steps 10] [--ddp]
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import normlab

WORLD = 2


def cnn() -> nn.Module:
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for cin, cout in ((3, 16), (16, 32), (32, 32)):
        blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*blocks)


def sides(ddp: bool) -> dict[str, nn.Module]:
    made = {
        "torch BN, per worker": cnn(),
        "normlab BN, per worker": normlab.convert(cnn(), "batch_norm"),
        "normlab.sync": normlab.sync(cnn()),
    }
    return {k: nn.parallel.DistributedDataParallel(m) if ddp else m for k, m in made.items()}


def worker(rank: int, port: int, args: argparse.Namespace, results: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )  # fmt: skip
    models = sides(args.ddp)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(rank))

    def run(model: nn.Module, steps: int) -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
        elapsed = torch.tensor([(time.perf_counter() - start) / steps])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slower process's time
        return float(elapsed)

    for model in models.values():  # warm-up
        run(model, 3)
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.rounds):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            times[name].append(run(models[name], args.steps))
    if rank == 0:
        results.put(times)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ddp", action="store_true", help="wrap every side in DDP")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=worker, args=(r, port, args, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    times = results.get(timeout=600)
    for p in procs:
        p.join()
    base = times["torch BN, per worker"]
    wrapped = " under DDP" if args.ddp else ""
    print(f"forward + backward, 3 conv+BN+ReLU blocks, batch 16 x 3 x 32 x 32 per process, "
          f"{WORLD} gloo processes{wrapped}, {args.rounds} x {args.steps} steps:")  # fmt: skip
    print("| side | ms / step (median) | ratio to per-worker torch BN |\n|---|---|---|")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        print(f"| {name} | {1e3 * statistics.median(ts):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
