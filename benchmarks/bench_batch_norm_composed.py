"""Issue 14: normlab.BatchNorm against torch.nn.BatchNorm2d on contiguous NCHW, and where its
per-(n, c)-kernel composition (normlab.norms._batch_norm_composed) starts to pay.

One step = forward + backward in training mode (gradients of x, γ, β; random grad_output),
fp32. Per shape, the candidates run in rotated order round by round in one process:

* ``nn.BatchNorm2d``: the baseline;
* ``BatchNorm``: the layer as it dispatches;
* ``BatchNorm, kernel``: the layer forced onto torch's kernel (the path below the threshold);
* ``BatchNorm, composed``: the layer forced onto the composition (the path above it).

A ratio is the median over rounds of the per-round ratio to nn.BatchNorm2d. ``--cpu-time``
times with ``time.process_time`` (use ``--threads 1``): robust to other processes.

    python benchmarks/bench_batch_norm_composed.py --threads 1 --cpu-time [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import normlab
from bench_classic import rotated_rounds, start_run, write_results
from normlab.norms import _batch_norm_composed as composed

RESULTS = Path(__file__).parent / "results" / "issue14_batch_norm.md"
SHAPES = (
    (16, 64, 8, 8), (32, 64, 8, 8), (128, 64, 4, 4), (8, 64, 16, 16), (4, 64, 32, 32),
    (16, 64, 16, 16), (1, 64, 64, 64), (64, 64, 8, 8), (32, 64, 16, 16), (32, 256, 8, 8),
    (8, 64, 32, 32), (32, 64, 32, 32), (32, 64, 32, 32, "channels_last"),
)


def stepper(
    module: nn.Module, x: torch.Tensor, grad: torch.Tensor, calls: int, threshold: int | None,
    clock: Callable[[], float],
) -> Callable[[], float]:
    """``calls`` steps per sample; ``threshold`` overrides composed.MIN_ELEMENTS meanwhile."""
    wrt = [x, *module.parameters()]

    def step() -> float:
        saved = composed.MIN_ELEMENTS
        if threshold is not None:
            composed.MIN_ELEMENTS = threshold
        try:
            start = clock()
            for _ in range(calls):
                torch.autograd.grad(module(x), wrt, grad)
            return (clock() - start) / calls
        finally:
            composed.MIN_ELEMENTS = saved

    return step


def table(shapes: tuple[tuple, ...], rounds: int, clock: Callable[[], float]) -> list[str]:
    lines = ["| shape | elements | nn.BatchNorm2d µs | BatchNorm | BatchNorm, kernel | "
             "BatchNorm, composed |", "|---|---:|---:|---:|---:|---:|"]
    for spec in shapes:
        shape = tuple(s for s in spec if isinstance(s, int))
        layout = torch.channels_last if "channels_last" in spec else torch.contiguous_format
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen).contiguous(memory_format=layout).requires_grad_()
        grad = torch.randn(shape, generator=gen).contiguous(memory_format=layout)
        c = shape[1]
        numel = x.numel()
        calls = max(2, min(40, 4_000_000 // numel))
        steps = {
            "nn": stepper(nn.BatchNorm2d(c), x, grad, calls, None, clock),
            "auto": stepper(normlab.BatchNorm(c), x, grad, calls, None, clock),
            "kernel": stepper(normlab.BatchNorm(c), x, grad, calls, 1 << 62, clock),
            "composed": stepper(normlab.BatchNorm(c), x, grad, calls, 0, clock),
        }
        times = rotated_rounds(steps, rounds, warmup=3)
        base = times["nn"]
        cells = [
            f"{statistics.median(a / b for a, b in zip(times[k], base, strict=True)):.2f}"
            for k in ("auto", "kernel", "composed")
        ]
        name = f"{shape}" + (", channels_last" if layout is torch.channels_last else "")
        lines.append(f"| {name} | {numel} | {1e6 * statistics.median(base):.0f} | "
                     + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process_time (robust to other processes; --threads 1)")
    parser.add_argument("--save", action="store_true", help=f"write {RESULTS.name}")
    parser.add_argument("--shapes", nargs="*", metavar="N,C,H,W[,cl]",
                        help="shapes to run instead of the default list (cl: channels_last)")
    args = parser.parse_args(argv)
    shapes = SHAPES if not args.shapes else tuple(
        tuple(int(v) if v.isdigit() else "channels_last" for v in spec.split(","))
        for spec in args.shapes)
    load_before = start_run(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    lines = table(shapes, args.rounds, clock)
    print("\n".join(lines))
    if args.save:
        setup = (f"fp32, training, forward + backward, {args.rounds} rounds in rotated order, "
                 f"{'process' if args.cpu_time else 'wall'} time; ratio to nn.BatchNorm2d = "
                 "median of per-round ratios; composed.MIN_ELEMENTS = "
                 f"{composed.MIN_ELEMENTS}, MIN_POSITIONS = {composed.MIN_POSITIONS}")
        write_results(RESULTS, "Issue 14: BatchNorm on NCHW vs torch.nn.BatchNorm2d", setup,
                      lines, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
