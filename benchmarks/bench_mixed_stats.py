"""Forward + backward process-CPU time of the mixed-statistics layers against native
nn.GroupNorm(32, 64) at (32, 64, 32, 32) (issue 14) and nn.BatchNorm2d on small maps (issue 9).

Training mode, fp32, random grad_output; gradients of the input and every parameter. One
thread; candidates run alternately round by round in one process; a round's time is the
process CPU time (time.process_time_ns) of ``--calls`` steps; a ratio is the median of the
per-round ratios to the native layer of the same round.

    python benchmarks/bench_mixed_stats.py [--rounds 21] [--calls 0] [--shapes 0,1,2] [--write]

Before/after comparisons run it once per source tree (PYTHONPATH), alternating the trees.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import normlab

RESULTS = Path(__file__).parent / "results" / "issue14_mixed_stats.md"
C = 64
SHAPES = ((32, C, 32, 32), (16, C, 8, 8), (2, C, 4, 4))


def with_reference(m: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    m.set_reference(torch.randn(shape, generator=g))  # type: ignore[operator]
    return m


def layers(shape: tuple[int, ...]) -> dict[str, Callable[[], nn.Module]]:
    return {
        "SwitchableNorm": lambda: normlab.SwitchableNorm(C),
        "BatchInstanceNorm": lambda: normlab.BatchInstanceNorm(C),
        "VirtualBatchNorm": lambda: with_reference(normlab.VirtualBatchNorm(C), shape),
        "EvoNormB0": lambda: normlab.EvoNormB0(C),
        "EvoNormS0": lambda: normlab.EvoNormS0(C),
    }


def stepper(m: nn.Module, shape: tuple[int, ...]) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).requires_grad_()
    dy = torch.randn(shape, generator=g)
    m.train()

    def step() -> None:
        m(x).backward(dy)
        x.grad = None
        for p in m.parameters():
            p.grad = None

    return step


def ratios(
    native: Callable[[], None], candidates: dict[str, Callable[[], None]], rounds: int, calls: int
) -> dict[str, float]:
    steps = {"native": native, **candidates}
    for s in steps.values():  # warm-up
        for _ in range(3):
            s()
    times: dict[str, list[int]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0 = time.process_time_ns()
            for _ in range(calls):
                steps[k]()
            times[k].append(time.process_time_ns() - t0)
    out = {"native ms": statistics.median(times["native"]) / calls / 1e6}
    for k in candidates:
        out[k] = statistics.median(a / b for a, b in zip(times[k], times["native"], strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated layer names")
    parser.add_argument("--shapes", default="0,1,2", help="indices into SHAPES")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    lines = ["| shape | native | native ms | " + " | ".join(layers(SHAPES[0])) + " |",
             "|---|---|---:|" + "---:|" * len(layers(SHAPES[0]))]
    for shape in (SHAPES[int(i)] for i in args.shapes.split(",")):
        big = shape[0] == 32
        native = nn.GroupNorm(32, C) if big else nn.BatchNorm2d(C)
        chosen = {k: v for k, v in layers(shape).items() if not args.only or k in args.only}
        calls = args.calls or (2 if big else 50)
        res = ratios(stepper(native, shape), {k: stepper(v(), shape) for k, v in chosen.items()},
                     args.rounds, calls)
        cells = " | ".join(f"{res[k]:.2f}" if k in res else "-" for k in layers(shape))
        line = (f"| {shape} | {'GroupNorm(32, 64)' if big else 'BatchNorm2d(64)'} | "
                f"{res['native ms']:.3f} | {cells} |")
        lines.append(line)
        print(line, flush=True)
    text = (f"1 thread, process CPU time, {args.rounds} alternating rounds, median of per-round "
            f"ratios; 1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
            f"torch {torch.__version__}\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
