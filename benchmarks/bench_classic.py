"""Forward + backward time of normlab's five classic layers against their torch.nn equivalents.

Both sides of a pair run in one process on the same fp32 (32, 64, 32, 32) data (or its NHWC
(32, 32, 32, 64) form), in training mode, with a random grad_output; each step computes the
gradients of the input and of the parameters. After a warm-up the two are run alternately
(A B, B A, A B, ...) so that drift in clock speed or machine load hits both alike; a row reports
each side's median step time and the median of the per-round ratios normlab / torch.

    python benchmarks/bench_classic.py [--repeats 60] [--threads 2]

Prints a Markdown table and writes it, with the date and machine, to benchmarks/results/classic.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import normlab
from normlab.bench import timing

NCHW = (32, 64, 32, 32)
NHWC = (32, 32, 32, 64)
RESULTS = Path(__file__).parent / "results" / "classic.md"


def call(m: nn.Module, x: Tensor) -> Tensor:
    return m(x)


@dataclass
class Side:
    """One layer: a module, how it is applied to the leaf input, and that input's shape."""

    module: nn.Module
    shape: tuple[int, ...]
    apply: Callable[[nn.Module, Tensor], Tensor] = call


@dataclass
class Case:
    layer: str
    torch_name: str
    layout: str
    normlab: Side
    torch: Side


def nchw_to_channels_last(m: nn.Module, x: Tensor) -> Tensor:
    """``x`` is NHWC memory; the module sees it as a channels_last NCHW view."""
    return m(x.permute(0, 3, 1, 2))


def through_nhwc(m: nn.Module, x: Tensor) -> Tensor:
    """Apply a channels-last module to NCHW data: permute to (N, H, W, C) and back (views)."""
    return m(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def cases() -> list[Case]:
    c = NCHW[1]
    return [
        Case("BatchNorm(64)", "nn.BatchNorm2d(64)", "NCHW",
             Side(normlab.BatchNorm(c), NCHW), Side(nn.BatchNorm2d(c), NCHW)),
        Case("BatchNorm(64, channel_dim=-1)", "nn.BatchNorm2d(64), channels_last", "NHWC",
             Side(normlab.BatchNorm(c, channel_dim=-1), NHWC),
             Side(nn.BatchNorm2d(c), NHWC, nchw_to_channels_last)),
        Case("LayerNorm(64)", "nn.GroupNorm(1, 64)", "NCHW",
             Side(normlab.LayerNorm(c), NCHW), Side(nn.GroupNorm(1, c), NCHW)),
        Case("LayerNorm(64)", "nn.LayerNorm([64, 32, 32])", "NCHW",
             Side(normlab.LayerNorm(c), NCHW), Side(nn.LayerNorm(list(NCHW[1:])), NCHW)),
        Case("LayerNorm(64, per_position=True, channel_dim=-1)", "nn.LayerNorm(64)", "NHWC",
             Side(normlab.LayerNorm(c, per_position=True, channel_dim=-1), NHWC),
             Side(nn.LayerNorm(c), NHWC)),
        Case("InstanceNorm(64, affine=True)", "nn.InstanceNorm2d(64, affine=True)", "NCHW",
             Side(normlab.InstanceNorm(c, affine=True), NCHW),
             Side(nn.InstanceNorm2d(c, affine=True), NCHW)),
        Case("GroupNorm(64, num_groups=32)", "nn.GroupNorm(32, 64)", "NCHW",
             Side(normlab.GroupNorm(c, num_groups=32), NCHW), Side(nn.GroupNorm(32, c), NCHW)),
        Case("RMSNorm(64, channel_dim=-1)", "nn.RMSNorm(64)", "NHWC",
             Side(normlab.RMSNorm(c, channel_dim=-1), NHWC), Side(nn.RMSNorm(c), NHWC)),
        Case("RMSNorm(64)", "nn.RMSNorm(64) on x.permute(0, 2, 3, 1)", "NCHW",
             Side(normlab.RMSNorm(c), NCHW), Side(nn.RMSNorm(c), NCHW, through_nhwc)),
    ]


def stepper(side: Side, seed: int) -> Callable[[], float]:
    """A closure that runs one forward + backward and returns its wall time in seconds."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(side.shape, generator=gen).requires_grad_()
    module = side.module  # as built: training mode, except a baseline built in eval mode
    wrt = [x, *(p for p in module.parameters() if p.requires_grad)]  # frozen ones: none
    grad_out = torch.randn_like(side.apply(module, x))  # same shape and memory format as y
    grad_out.copy_(torch.randn(grad_out.shape, generator=gen))

    def step() -> float:
        start = time.perf_counter()
        y = side.apply(module, x)
        torch.autograd.grad(y, wrt, grad_out)
        return time.perf_counter() - start

    return step


def rounds(
    a: Callable[[], float], b: Callable[[], float], repeats: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Times of ``repeats`` rounds of a and b, alternating which goes first, gc off."""
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    gc.collect()
    gc.disable()
    try:
        for i in range(repeats):
            if i % 2:
                tb.append(b())
                ta.append(a())
            else:
                ta.append(a())
                tb.append(b())
    finally:
        gc.enable()
    return ta, tb


def rotated_rounds(
    steps: dict[str, Callable[[], float]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """`normlab.bench.timing.rotated_rounds` after ``warmup`` untimed calls of every step."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    return timing.rotated_rounds(steps, rounds)


def measure(case: Case, repeats: int, warmup: int) -> tuple[float, float, float]:
    """(normlab median s, torch median s, median of the per-round ratios)."""
    ta, tb = rounds(stepper(case.normlab, 0), stepper(case.torch, 0), repeats, warmup)
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def start_run(threads: int) -> float:
    """Thread count and seed for a benchmark run; warns when the machine is busy. Returns the
    1-minute load average before the run."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: 1-minute load average {load_before:.2f}; other processes on these "
              "cores make the timings noisy.\n")
    return load_before


def write_results(
    path: Path, title: str, setup: str, lines: list[str], load_before: float
) -> None:
    """The table under a header with the date, machine, load and versions."""
    header = (
        f"# {title}\n\n"
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {cpu_model()}, {platform.system()} {platform.machine()}\n"
        f"- 1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n"
        f"- torch {torch.__version__}, normlab {normlab.__version__}, "
        f"Python {platform.python_version()}, {torch.get_num_threads()} threads\n"
        f"- {setup}\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(lines) + "\n")
    print(f"\nwritten to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true", help="do not write results/classic.md")
    args = parser.parse_args(argv)
    load_before = start_run(args.threads)

    lines = [
        "| layer | torch.nn equivalent | input | normlab ms | torch ms | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for case in cases():
        ta, tb, ratio = measure(case, args.repeats, args.warmup)
        row = (f"| {case.layer} | {case.torch_name} | {case.layout} | {1e3 * ta:.2f} | "
               f"{1e3 * tb:.2f} | {ratio:.2f} |")
        lines.append(row)
        print(row, flush=True)

    setup = (
        f"fp32, NCHW = {NCHW}, NHWC = {NHWC}, training mode, random grad_output; "
        f"median of {args.repeats} interleaved runs after {args.warmup} warm-up runs; "
        f"ratio = median of per-round normlab / torch (< 1: normlab faster)"
    )
    if not args.no_save:
        write_results(RESULTS, "Classic norms: normlab vs torch.nn, forward + backward",
                      setup, lines, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
