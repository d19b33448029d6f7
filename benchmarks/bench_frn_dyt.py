"""Forward + backward of FilterResponseNorm (+ TLU) and DynamicTanh against nn.GroupNorm(32, 64).

Issue 12's measurement: (32, 64, 32, 32) fp32, training mode, gradients of the input and of
every parameter, random grad_output, all candidates alternating in one process. Each round
times every candidate as the best of 3 steps; a ratio is the median over rounds of the
per-round ratio candidate / GroupNorm, so machine load hits both alike. With one thread the
clock is ``time.process_time`` (robust to other processes on the machine); with more, wall
time (only meaningful on a quiet machine). Targets: FRN (+TLU) <= 1.5x, DyT <= 1.0x.

    python benchmarks/bench_frn_dyt.py [--threads 1] [--rounds 15] [--chunk 524288 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import normlab.norms._chunked as chunked
from normlab.norms.dynamic_tanh import DynamicTanh
from normlab.norms.filter_response_norm import FilterResponseNorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--chunk", type=int, nargs="*", default=[chunked.CHUNK_ELEMENTS])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    torch.manual_seed(0)
    x = torch.randn(32, 64, 32, 32, requires_grad=True)
    grad = torch.randn(32, 64, 32, 32)
    candidates = {
        "groupnorm": nn.GroupNorm(32, 64),
        "frn_tlu": FilterResponseNorm(64),
        "frn": FilterResponseNorm(64, tlu=False),
        "dyt": DynamicTanh(64),
    }
    for m in candidates.values():
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))

    def step(m: nn.Module) -> None:
        x.grad = None
        for p in m.parameters():
            p.grad = None
        m(x).backward(grad)

    def best(m: nn.Module) -> float:
        times = []
        for _ in range(3):
            t0 = clock()
            step(m)
            times.append(clock() - t0)
        return min(times)

    for chunk in args.chunk:
        chunked.CHUNK_ELEMENTS = chunk
        for m in candidates.values():
            step(m)
        ratios: dict[str, list[float]] = {k: [] for k in candidates if k != "groupnorm"}
        base = []
        for _ in range(args.rounds):
            t = {k: best(m) for k, m in candidates.items()}
            base.append(t["groupnorm"])
            for k in ratios:
                ratios[k].append(t[k] / t["groupnorm"])
        shown = " ".join(f"{k} {statistics.median(v):.2f}x" for k, v in ratios.items())
        print(f"chunk {chunk}, {args.threads} thread(s): groupnorm "
              f"{1e3 * statistics.median(base):.2f} ms; {shown}")


if __name__ == "__main__":
    main()
