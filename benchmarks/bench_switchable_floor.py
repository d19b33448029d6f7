"""The floor of Switchable Norm on small maps as an autograd composition (issue 9's 2.0x target).

A stripped-down Switchable Norm (per-(n, c) var_mean, LN and BN moments merged from them, two
softmaxes, the mix, one affine pass, the running update; no checks, no numerics care: the merge
uses E[x²] − E[x]²) timed against nn.BatchNorm2d and normlab.SwitchableNorm, forward +
backward in training mode, fp32, rotated rounds in one process (the method of
bench_renorm_floor.py). Every op of the composition is recorded by autograd; the number of
calls, not the arithmetic, sets the cost at these sizes.

    python benchmarks/bench_switchable_floor.py [--rounds 31] [--calls 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import Tensor, nn

import normlab
from bench_classic import rotated_rounds, start_run
from bench_renorm_floor import Step, module, stepper

C = 64
EPS, MOMENTUM = 1e-5, 0.1


def minimal() -> Step:
    w, b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
    mean_logits, var_logits = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    rm, rv = torch.zeros(C), torch.ones(C)

    def f(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        n, c = x.shape[:2]
        var_in, mean_in = torch.var_mean(x.flatten(2), dim=2, correction=0)
        second = var_in + mean_in.square()
        mean_ln, mean_bn = mean_in.mean(1, keepdim=True), mean_in.mean(0, keepdim=True)
        var_ln = second.mean(1, keepdim=True) - mean_ln.square()
        var_bn = second.mean(0, keepdim=True) - mean_bn.square()
        sm, sv = torch.softmax(mean_logits, 0), torch.softmax(var_logits, 0)
        mean = sm[0] * mean_in + sm[1] * mean_ln + sm[2] * mean_bn
        var = sv[0] * var_in + sv[1] * var_ln + sv[2] * var_bn
        scale = (var + EPS).rsqrt() * w
        y = torch.addcmul((b - mean * scale).view(n, c, 1, 1), x, scale.view(n, c, 1, 1))
        with torch.no_grad():
            rm.lerp_(mean_bn.view(-1), MOMENTUM)
            rv.lerp_(var_bn.view(-1), MOMENTUM)
        return y, [w, b, mean_logits, var_logits]

    return f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    start_run(args.threads)
    print("| shape | candidate | µs per step | ratio to nn.BatchNorm2d |\n|---|---|---:|---:|")
    for shape in ((2, C, 4, 4), (16, C, 8, 8)):
        steps = {
            "nn.BatchNorm2d": stepper(module(nn.BatchNorm2d(C)), shape, args.calls),
            "minimal composition": stepper(minimal(), shape, args.calls),
            "normlab.SwitchableNorm": stepper(module(normlab.SwitchableNorm(C)), shape, args.calls),
        }
        times = rotated_rounds(steps, args.rounds, warmup=5)
        base = times["nn.BatchNorm2d"]
        for name, samples in times.items():
            ratio = statistics.median(a / b for a, b in zip(samples, base, strict=True))
            print(f"| {shape} | {name} | {1e6 * statistics.median(samples):.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
