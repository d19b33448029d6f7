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

import torch
from torch import Tensor, nn

import normlab
from bench_renorm_floor import Step, floor_table, module

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
    return floor_table(
        __doc__,
        lambda: {
            "nn.BatchNorm2d": module(nn.BatchNorm2d(C)),
            "minimal composition": minimal(),
            "normlab.SwitchableNorm": module(normlab.SwitchableNorm(C)),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
