"""Cost of normlab's weight-side methods against the plain layer (issue 10's speed target).

One step = forward + backward in training mode (gradients of the input and of every trainable
parameter, random grad_output), fp32: a Conv2d 64 -> 64, 3x3, padding 1, on (32, 64, 32, 32)
and a Linear 1024 -> 1024 on (256, 1024). Every parametrization in the registry
(``normlab.available("weight")`` with an ``apply``) is registered on a copy of the plain layer;
the layers that also normalize their input (CosineConv2d / CosineLinear, NormPropConv2d /
NormPropLinear) are timed beside them, without a target. All candidates of one layer run in a
rotated order each round, in one process; a ratio is the median over rounds of the per-round
ratio candidate / plain layer. Target: <= 1.3x for every parametrization.

    python benchmarks/bench_reparam.py [--rounds 21] [--calls 3] [--threads 2] [--save]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import normlab
from bench_classic import rotated_rounds, start_run, write_results
from normlab import registry

RESULTS = Path(__file__).parent / "results" / "reparam.md"
TARGET = 1.3

LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], tuple[str, ...]]] = {
    "Conv2d(64, 64, 3)": (
        lambda: nn.Conv2d(64, 64, 3, padding=1),
        (32, 64, 32, 32),
        ("CosineConv2d", "NormPropConv2d"),
    ),
    "Linear(1024, 1024)": (
        lambda: nn.Linear(1024, 1024),
        (256, 1024),
        ("CosineLinear", "NormPropLinear"),
    ),
}


def _input_layer(name: str, plain: nn.Module) -> nn.Module | None:
    """normlab's input-normalizing twin of ``plain`` (same shapes), if normlab has it."""
    cls = getattr(normlab, name, None)
    if cls is None:
        return None
    if isinstance(plain, nn.Conv2d):
        return cls(plain.in_channels, plain.out_channels, 3, padding=1)
    return cls(plain.in_features, plain.out_features)


def candidates(make: Callable[[], nn.Module], others: tuple[str, ...]) -> dict[str, nn.Module]:
    plain = make()
    found: dict[str, nn.Module] = {"plain": plain}
    for entry in registry.weight_entries():
        if entry.apply is not None:
            found[entry.name] = entry.apply(copy.deepcopy(plain))
    for name in others:
        layer = _input_layer(name, plain)
        if layer is not None:
            found[name] = layer
    return found


def stepper(module: nn.Module, shape: tuple[int, ...], calls: int) -> Callable[[], float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    wrt = [x, *(p for p in module.parameters() if p.requires_grad)]
    grad_out = torch.randn_like(module(x))
    module.train()

    def step() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            torch.autograd.grad(module(x), wrt, grad_out)
        return (time.perf_counter() - start) / calls

    return step


def table(rounds: int, calls: int, warmup: int) -> list[str]:
    lines = [
        "| layer | method | ms per step | ratio to plain | target |",
        "|---|---|---:|---:|---:|",
    ]
    for layer, (make, shape, others) in LAYERS.items():
        modules = candidates(make, others)
        steps = {name: stepper(m, shape, calls) for name, m in modules.items()}
        times = rotated_rounds(steps, rounds, warmup)
        for name, samples in times.items():
            ratio = statistics.median(a / b for a, b in zip(samples, times["plain"], strict=True))
            target = "-" if name == "plain" or name in others else f"{TARGET:.2f}"
            lines.append(
                f"| {layer} | {name} | {1e3 * statistics.median(samples):.2f} | {ratio:.2f} | "
                f"{target} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=3, help="steps per timed sample")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", action="store_true", help="write results/reparam.md")
    args = parser.parse_args(argv)
    load_before = start_run(args.threads)
    lines = table(args.rounds, args.calls, args.warmup)
    print("\n".join(lines))
    if args.save:
        setup = (
            f"forward + backward, training mode, fp32; {args.rounds} rounds x {args.calls} "
            "steps, rotated order; ratio = median per-round ratio to the plain layer"
        )
        write_results(RESULTS, "Weight-side methods vs the plain layer", setup, lines, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
