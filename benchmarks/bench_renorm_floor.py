"""The floor of Batch Renorm on small maps: the fewest ATen calls any composition needs.

Issue 9 asks for BatchRenorm <= 1.3x nn.BatchNorm2d per call (forward + backward, training,
fp32) on (2, 64, 4, 4) and (16, 64, 8, 8). Batch Renorm needs the batch moments *before* the
normalization (r = clip(σ_B/σ), d = clip((μ_B − μ)/σ) enter its affine), so on top of BN's own
kernel any composition pays one moments pass and a handful of per-channel vector ops, each a
separate ATen call whose fixed cost dominates at these sizes. This benchmark times, against
nn.BatchNorm2d, stripped-down compositions that do only the arithmetic (no validation, no
schedule, no dtype handling), and normlab's layer:

* ``minimal``: var_mean, r and d in 7 in-place vector ops, the BN kernel with weight γr and
  bias γd + β (2 autograd-tracked ops), the moving-average update in 3 ops.
* ``batched r, d``: r and d from one cat / div / clamp over a (2, C) stack.
* ``normlab.BatchRenorm``: the layer (clipping active from the first step).

    python benchmarks/bench_renorm_floor.py [--rounds 31] [--calls 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import normlab
from bench_classic import rotated_rounds, start_run

C = 64
EPS, RMAX, DMAX, MOMENTUM = 1e-5, 3.0, 5.0, 0.01
Step = Callable[[Tensor], tuple[Tensor, list[Tensor]]]


def minimal() -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    rm, rv = torch.zeros(C), torch.ones(C)

    def f(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            sig_b = var.add_(EPS).sqrt_()
            sig_r = rv.add(EPS).sqrt_()
            r = sig_b.div(sig_r).clamp_(1 / RMAX, RMAX)
            d = mean.sub(rm).div_(sig_r).clamp_(-DMAX, DMAX)
        y = torch.batch_norm(x, w * r, torch.addcmul(b, w, d), None, None, True, 0.0, EPS, False)
        with torch.no_grad():
            rm.lerp_(mean, MOMENTUM)
            sig_r.lerp_(sig_b, MOMENTUM)
            torch.mul(sig_r, sig_r, out=rv).sub_(EPS)
        return y, [w, b]

    return f


def batched() -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    rm, rv = torch.zeros(C), torch.ones(C)
    lo = torch.cat([torch.full((C,), 1 / RMAX), torch.full((C,), -DMAX)])
    hi = torch.cat([torch.full((C,), RMAX), torch.full((C,), DMAX)])

    def f(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            sig_r = rv.add(EPS).sqrt_()
            both = torch.cat([var.add_(EPS).sqrt_(), mean.sub_(rm)]).view(2, C)
            r, d = both.div_(sig_r).view(-1).clamp_(lo, hi).view(2, C)
        y = torch.batch_norm(x, w * r, torch.addcmul(b, w, d), None, None, True, 0.0, EPS, False)
        with torch.no_grad():
            rm.add_(mean, alpha=MOMENTUM)  # mean holds μ_B − μ here
        return y, [w, b]

    return f


def module(layer: nn.Module) -> Step:
    return lambda x: (layer(x), list(layer.parameters()))


def stepper(
    f: Step, shape: tuple[int, ...], calls: int, clock: Callable[[], float] = time.perf_counter
) -> Callable[[], float]:
    x = torch.randn(shape).requires_grad_()
    grad_out = torch.randn(shape)

    def step() -> float:
        start = clock()
        for _ in range(calls):
            y, params = f(x)
            torch.autograd.grad(y, [x, *params], grad_out)
        return (clock() - start) / calls

    return step


def floor_table(doc: str, candidates: Callable[[], dict[str, Step]], argv: list[str] | None) -> int:
    """The floor benchmarks' command line: every candidate (the first is the baseline) on
    (2, 64, 4, 4) and (16, 64, 8, 8), rotated rounds in one process, as a Markdown table."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process_time (robust to other processes; use --threads 1)")
    args = parser.parse_args(argv)
    start_run(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    print("| shape | candidate | µs per step | ratio to nn.BatchNorm2d |\n|---|---|---:|---:|")
    for shape in ((2, C, 4, 4), (16, C, 8, 8)):
        steps = {name: stepper(f, shape, args.calls, clock) for name, f in candidates().items()}
        times = rotated_rounds(steps, args.rounds, warmup=5)
        base = next(iter(times.values()))
        for name, samples in times.items():
            ratio = statistics.median(a / b for a, b in zip(samples, base, strict=True))
            print(f"| {shape} | {name} | {1e6 * statistics.median(samples):.0f} | {ratio:.2f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    return floor_table(
        __doc__,
        lambda: {
            "nn.BatchNorm2d": module(nn.BatchNorm2d(C)),
            "minimal": minimal(),
            "batched r, d": batched(),
            "normlab.BatchRenorm": module(
                normlab.BatchRenorm(C, warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0)
            ),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
