"""Per-call cost of normlab's layers against torch.nn on the small maps a ResNet is made of.

One step = forward + backward in training mode (gradients of the input and of the trainable
parameters, random grad_output), fp32, on (2, 64, 4, 4) and (16, 64, 8, 8). At these sizes the
Python wrapper and the number of ATen calls, not the arithmetic, set the cost. For one shape,
every candidate (baselines included) runs ``--calls`` steps per round, in a rotated order each
round, all in one process; a ratio is the median over rounds of the per-round ratio
candidate / its torch.nn baseline, so drift in clock speed or machine load hits both alike.

Targets (issue 9): BatchNorm, GroupNorm, LayerNorm, InstanceNorm <= 1.10x their torch.nn
counterparts; GhostBatchNorm, BatchRenorm, FrozenBatchNorm <= 1.3x nn.BatchNorm2d;
SwitchableNorm, BatchInstanceNorm, VirtualBatchNorm, EvoNorm <= 2.0x nn.BatchNorm2d.

    python benchmarks/bench_per_call.py [--rounds 41] [--calls 20] [--threads 2]
    python benchmarks/bench_per_call.py --threads 1 --cpu-time   # robust to other processes
    python benchmarks/bench_per_call.py --ops    # ATen calls per step: normlab BN vs nn BN

Prints Markdown tables; ``--save`` also writes them to benchmarks/results/per_call.md.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import normlab
from bench_classic import rotated_rounds, start_run, write_results

SHAPES = ((2, 64, 4, 4), (16, 64, 8, 8))
C = 64
RESULTS = Path(__file__).parent / "results" / "per_call.md"


@dataclass
class Candidate:
    name: str
    make: Callable[[tuple[int, ...]], nn.Module]
    baseline: str | None = None  # name of the candidate it is compared with
    target: float | None = None


def _vbn(shape: tuple[int, ...]) -> nn.Module:
    m = normlab.VirtualBatchNorm(C)
    m.set_reference(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    return m


def _frozen_native(shape: tuple[int, ...]) -> nn.Module:
    bn = nn.BatchNorm2d(C).eval()
    bn.requires_grad_(False)
    return bn


BN = "nn.BatchNorm2d"
CANDIDATES = [
    Candidate(BN, lambda s: nn.BatchNorm2d(C)),
    Candidate("nn.GroupNorm(32)", lambda s: nn.GroupNorm(32, C)),
    Candidate("nn.GroupNorm(1)", lambda s: nn.GroupNorm(1, C)),
    Candidate("nn.InstanceNorm2d", lambda s: nn.InstanceNorm2d(C)),
    Candidate("nn.BatchNorm2d.eval, frozen", _frozen_native),
    Candidate("BatchNorm", lambda s: normlab.BatchNorm(C), BN, 1.10),
    Candidate("GroupNorm(32)", lambda s: normlab.GroupNorm(C, num_groups=32),
              "nn.GroupNorm(32)", 1.10),
    Candidate("LayerNorm", lambda s: normlab.LayerNorm(C), "nn.GroupNorm(1)", 1.10),
    Candidate("InstanceNorm", lambda s: normlab.InstanceNorm(C), "nn.InstanceNorm2d", 1.10),
    Candidate("GhostBatchNorm(8)", lambda s: normlab.GhostBatchNorm(C, ghost_batch_size=8),
              BN, 1.3),
    Candidate("BatchRenorm, clipping",
              lambda s: normlab.BatchRenorm(C, warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0),
              BN, 1.3),
    Candidate("FrozenBatchNorm", lambda s: normlab.FrozenBatchNorm(C), BN, 1.3),
    Candidate("FrozenBatchNorm vs frozen nn", lambda s: normlab.FrozenBatchNorm(C),
              "nn.BatchNorm2d.eval, frozen", None),
    Candidate("SwitchableNorm", lambda s: normlab.SwitchableNorm(C), BN, 2.0),
    Candidate("BatchInstanceNorm", lambda s: normlab.BatchInstanceNorm(C), BN, 2.0),
    Candidate("VirtualBatchNorm", _vbn, BN, 2.0),
    Candidate("EvoNormB0", lambda s: normlab.EvoNormB0(C), BN, 2.0),
    Candidate("EvoNormS0", lambda s: normlab.EvoNormS0(C), BN, 2.0),
]


CLOCK: list[Callable[[], float]] = [time.perf_counter]  # --cpu-time: time.process_time


def stepper(module: nn.Module, shape: tuple[int, ...], calls: int) -> Callable[[], float]:
    """A closure running ``calls`` forward + backward steps; returns seconds per step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    wrt = [x, *(p for p in module.parameters() if p.requires_grad)]
    grad_out = torch.randn(shape, generator=gen)

    clock = CLOCK[0]

    def step() -> float:
        start = clock()
        for _ in range(calls):
            torch.autograd.grad(module(x), wrt, grad_out)
        return (clock() - start) / calls

    return step


def measure(
    shape: tuple[int, ...], candidates: list[Candidate], rounds: int, calls: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per step of every candidate, one list entry per round."""
    steps = {c.name: stepper(c.make(shape), shape, calls) for c in candidates}
    return rotated_rounds(steps, rounds, warmup)


def ratio_table(
    shapes: tuple[tuple[int, ...], ...], rounds: int, calls: int, warmup: int,
    only: list[str] | None,
) -> list[str]:
    chosen = [c for c in CANDIDATES if only is None or c.baseline is None or c.name in only]
    results = {s: measure(s, chosen, rounds, calls, warmup) for s in shapes}
    head = "| layer | baseline | " + " | ".join(
        f"{s} µs | {s} ratio" for s in shapes) + " | target |"
    lines = [head, "|---|---|" + "---:|---:|" * len(shapes) + "---:|"]
    for c in chosen:
        if c.baseline is None:
            continue
        cells = []
        for s in shapes:
            t, b = results[s][c.name], results[s][c.baseline]
            ratio = statistics.median(x / y for x, y in zip(t, b, strict=True))
            cells.append(f"{1e6 * statistics.median(t):.0f} | {ratio:.2f}")
        target = f"{c.target:.2f}" if c.target else "-"
        lines.append(f"| {c.name} | {c.baseline} | " + " | ".join(cells) + f" | {target} |")
    base = ["", "| baseline | " + " | ".join(f"{s} µs" for s in shapes) + " |",
            "|---|" + "---:|" * len(shapes)]
    for c in chosen:
        if c.baseline is None:
            base.append(f"| {c.name} | " + " | ".join(
                f"{1e6 * statistics.median(results[s][c.name]):.0f}" for s in shapes) + " |")
    return lines + base


def aten_counts(module: nn.Module, shape: tuple[int, ...]) -> collections.Counter[str]:
    """ATen ops run by one forward + backward (after a warm-up step), by name."""
    step = stepper(module, shape, 1)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    counts: collections.Counter[str] = collections.Counter()
    for event in prof.events():
        if event.name.startswith("aten::"):
            counts[event.name] += 1
    return counts


def ops_table(shape: tuple[int, ...]) -> list[str]:
    a = aten_counts(normlab.BatchNorm(C), shape)
    b = aten_counts(nn.BatchNorm2d(C), shape)
    lines = [f"ATen calls per forward + backward, {shape} (all levels, nested ones included)",
             "", "| op | normlab BatchNorm | nn.BatchNorm2d |", "|---|---:|---:|",
             f"| **total** | {sum(a.values())} | {sum(b.values())} |"]
    for name in sorted(set(a) | set(b), key=lambda n: (-a[n], n)):
        lines.append(f"| {name} | {a[name]} | {b[name]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--calls", type=int, default=20, help="steps per timed sample")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="normlab candidates to run (default: all)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process_time (robust to other processes; --threads 1)")
    parser.add_argument("--ops", action="store_true", help="print ATen op counts and exit")
    parser.add_argument("--save", action="store_true", help="write results/per_call.md")
    args = parser.parse_args(argv)
    load_before = start_run(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    if args.ops:
        for shape in SHAPES:
            print("\n".join(ops_table(shape)) + "\n")
        return 0
    lines = ratio_table(SHAPES, args.rounds, args.calls, args.warmup, args.only)
    print("\n".join(lines))
    if args.save:
        clock = "process" if args.cpu_time else "wall"
        setup = (f"fp32, training mode, forward + backward, {args.calls} steps per sample, "
                 f"{args.threads} thread(s), {clock} time, "
                 f"{args.rounds} rounds in rotated order; ratio = median of per-round ratios")
        write_results(RESULTS, "Per-call cost: normlab vs torch.nn", setup, lines, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
