"""Issue 12 for LpNorm (p = 1, 2) and StreamingNorm: forward + backward vs nn.GroupNorm(32, 64).

(32, 64, 32, 32) fp32, training mode, candidates alternated round by round in one process;
reports the median of per-round ratios to GroupNorm (``--threads 1``: process time per call,
robust to other processes on the machine; more threads: wall clock) and the bytes each layer
saves for backward, over the input's bytes.

    PYTHONPATH=src python benchmarks/bench_lp_streaming.py [--threads 1] [--rounds 21]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from normlab.norms.lp_norm import LpNorm
from normlab.norms.streaming_norm import StreamingNorm


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward (x itself included)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    torch.manual_seed(0)
    x = torch.randn(32, 64, 32, 32, requires_grad=True)
    dy = torch.randn_like(x)
    layers = {
        "GroupNorm(32, 64)": nn.GroupNorm(32, 64),
        "LpNorm p=1": LpNorm(64, p=1),
        "LpNorm p=2": LpNorm(64, p=2),
        "StreamingNorm": StreamingNorm(64),
    }

    def step(module: nn.Module) -> float:
        x.grad = None
        for p in module.parameters():
            p.grad = None
        start = clock()
        module(x).backward(dy)
        return clock() - start

    for module in layers.values():
        module.train()
        step(module)
        step(module)
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.rounds):
        for name, module in layers.items():
            times[name].append(step(module))
    base = times["GroupNorm(32, 64)"]
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        saved = saved_bytes(layers[name], x) / (x.numel() * x.element_size())
        print(f"{name:18s} {statistics.median(ts) * 1e3:7.2f} ms  ratio {ratio:5.2f}  "
              f"saved/input {saved:.2f}")


if __name__ == "__main__":
    main()
