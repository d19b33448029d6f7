"""The open speed targets of issues 12 and 14 against their floors, in one process.

For each layer with an open target, on (32, 64, 32, 32) fp32, forward + backward, training:
the layer's step, and the bare ATen kernel sequences of its pass plans (the floors of
``actspeed_floors.py``, ``bench_mixedspeed_floor.py`` and ``bench_mixedspeed_evo.py``: no
checks, no autograd, no C-sized arithmetic), all timed against native ``nn.GroupNorm(32, 64)``
on the same tensor. ``normlab.bench.timing``'s samples, rounds rotated and reversed, one
thread, ``time.process_time_ns``, ratio = median of per-round ratios; glibc keeps freed memory
(``normlab bench --allocator keep``) so that no candidate pays page faults another does not.

The verdict of each line follows from the two ratios and the target fixed below, before any
run: **met** when the layer's ratio is at most the target; **below the floor** when even the
cheapest exact plan measured costs more than the target while costing no more than the layer
(the plans are the layer's passes as bare kernels, with nothing else: no composition of those
kernels meets the target); **room** otherwise, including when every plan measured costs more
than the layer itself (then none of them is a floor). A plan marked "part" is a subset of the
passes every plan that saves only x must make (DyT: the sigmoid of the forward and of the
backward, and the read of dy for ∂γ, ∂β). Inexact plans (one-pass moments) are left out.

    PYTHONPATH=src:benchmarks python benchmarks/bench_open_targets.py [--rounds 21] [--md FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import bench_mixedspeed_evo as evo
import bench_mixedspeed_floor as mixed
import normlab
from actspeed_floors import FLOORS, PARTS, _row_sums
from normlab.bench.allocator import keep_freed_memory
from normlab.bench.timing import ratio, rotated_rounds, sampler

N, C, H, W = mixed.N, mixed.C, mixed.H, mixed.W
BN_PLAN = "plan: GN stats, BN-inf in place, sums, chunked dx"
MEAN_ONLY_PLAN = "mean-only plan: GN moments, BN-inf, sums, BN-inf on dy"


@dataclass(frozen=True)
class Line:
    """One open target: the layer, its issue, the target ÷ nn.GroupNorm and where its floors
    come from (``floors``: keys of `plans`)."""

    layer: str
    issue: int
    target: float
    make: Callable[[], nn.Module]
    floors: tuple[str, ...]


def _vbn() -> nn.Module:
    m = normlab.VirtualBatchNorm(C)
    m.set_reference(torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1)))
    return m


def mean_only_plan(x: Tensor, dy: Tensor) -> Callable[[], object]:
    """Mean-only BN's passes: the batch moments (μ, and σ² for ``running_var``) from the
    group-norm kernel, y = x·γ + (β − γμ) into its spare x̂, the fused sums (Σdy, Σdy·x; ∂γ
    needs Σdy·x), ∂x = dy·γ − γ·mean(dy) in one BN-inference pass."""
    n, c, length = x.shape[0], x.shape[1], x[0, 0].numel()
    gamma, beta = torch.rand(c) + 0.5, torch.randn(c)
    zero, one, empty = torch.zeros(c), torch.ones(c), torch.empty(0)
    x3, dy3 = x.view(n, c, length), dy.view(n, c, length)

    def step() -> object:
        spare, mean_nc, _ = torch.ops.aten.native_group_norm(x, None, None, n, c, length, c, 0.0)
        mu = mean_nc.view(n, c).mean(0)
        torch.ops.aten.native_batch_norm.out(
            x, gamma, beta - gamma * mu, zero, one, False, 0.0, 0.0, out=spare,
            save_mean=empty, save_invstd=empty)
        sum_dy = _row_sums(dy3, x3)[0].sum(0)
        dx = torch.batch_norm(dy, gamma, -gamma * sum_dy / (n * length), zero, one, False, 0.0,
                              0.0, False)
        return spare, dx

    return step


LINES = (
    Line("SwitchableNorm", 14, 1.2, lambda: normlab.SwitchableNorm(C), (BN_PLAN,)),
    Line("BatchInstanceNorm", 14, 1.2, lambda: normlab.BatchInstanceNorm(C), (BN_PLAN,)),
    Line("VirtualBatchNorm", 14, 1.2, _vbn, (BN_PLAN,)),
    Line("EvoNormB0", 14, 1.5, lambda: normlab.EvoNormB0(C),
         ("B0 floor: chunked (the layer's plan, training)", "B0: chunked, BN-inf affine steps")),
    Line("EvoNormS0", 14, 1.5, lambda: normlab.EvoNormS0(C),
         ("S0 floor: chunked (the layer's plan)", "S0: chunked, BN-inf + silu_backward")),
    Line("BoundedBatchNorm", 14, 1.5, lambda: normlab.BoundedBatchNorm(C), (BN_PLAN,)),
    Line("GhostBatchNorm(8)", 14, 1.5, lambda: normlab.GhostBatchNorm(C, ghost_batch_size=8),
         (BN_PLAN,)),
    Line("BatchRenorm", 14, 1.5, lambda: normlab.BatchRenorm(C), (BN_PLAN,)),
    Line("MeanOnlyBatchNorm", 14, 1.5, lambda: normlab.MeanOnlyBatchNorm(C),
         (MEAN_ONLY_PLAN,)),
    Line("RMSNorm", 14, 1.5, lambda: normlab.RMSNorm(C), ("rms: floor: GEMV plan, whole tensor",)),
    Line("FilterResponseNorm", 12, 1.5, lambda: normlab.FilterResponseNorm(C),
         tuple(f"frn: {k}" for k in FLOORS["frn"])),
    Line("LpNorm", 12, 1.5, lambda: normlab.LpNorm(C), ("lp: floor: whole-tensor passes",)),
    Line("StreamingNorm", 12, 1.5, lambda: normlab.StreamingNorm(C),
         ("streaming: floor: the layer's plan (GN moments, BN-inf, sums, BN-inf + addcmul_)",)),
    Line("DynamicTanh", 12, 1.0, lambda: normlab.DynamicTanh(C),
         ("dyt: part: the two sigmoid passes and one sums pass",
          "dyt: floor: s half saved (1.47x)", "dyt: floor: sigmoid plan, whole tensor")),
)


def plans(x: Tensor, dy: Tensor) -> dict[str, Callable[[], object]]:
    """Every floor any line names, built on the same x and grad_output."""
    t = mixed.setup()
    t["x"].copy_(x)
    t["dy"].copy_(dy)
    wanted = {name for line in LINES for name in line.floors}
    found = {**mixed.kernels(t), **evo.kernels(t)}
    for layer, table in (*FLOORS.items(), *PARTS.items()):
        for name, build in table.items():
            if f"{layer}: {name}" in wanted:  # building a floor runs its layer's check
                found[f"{layer}: {name}"] = build(x, dy)
    found[MEAN_ONLY_PLAN] = mean_only_plan(x, dy)
    return {name: step for name, step in found.items() if name in wanted}


def verdict(layer: float, floor: float, target: float) -> str:
    """'met'; 'below the floor' (the cheapest plan's bare kernels alone cost more than the
    target, and no more than the layer: a real floor); else 'room'."""
    if layer <= target:
        return "met"
    return "below the floor" if target < floor <= layer else "room"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--md", type=Path, help="also write the table to this markdown file")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error(f"--rounds must be at least 1; got {a.rounds}.")
    if a.md is not None and not a.md.parent.is_dir():
        p.error(f"--md {a.md}: the folder {a.md.parent} does not exist; create it or name "
                "a file in an existing folder.")
    keep_freed_memory()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, dy = torch.randn(N, C, H, W, generator=g), torch.randn(N, C, H, W, generator=g)
    gn = "nn.GroupNorm(32, 64)"
    steps = {gn: mixed.layer_step(nn.GroupNorm(32, C), x, dy)}
    steps.update({line.layer: mixed.layer_step(line.make(), x, dy) for line in LINES})
    steps.update(plans(x, dy))
    for step in steps.values():
        for _ in range(3):
            step()
    samples = {k: sampler(s, time.process_time_ns, 0.01) for k, s in steps.items()}
    load0 = os.getloadavg()[0]
    times = rotated_rounds(samples, a.rounds)
    load1 = os.getloadavg()[0]
    base = times[gn]
    ms = statistics.median(base) * 1e3
    out = [
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
        f"process time, glibc keeps freed memory, {a.rounds} rounds, "
        f"1-min load {load0:.2f} -> {load1:.2f}; {gn} forward + backward: {ms:.2f} ms",
        "",
        "| layer | issue | target | layer ÷ GN | cheapest plan ÷ GN | that plan | verdict |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for line in LINES:
        layer = ratio(times[line.layer], base)
        floors = {name: ratio(times[name], base) for name in line.floors}
        cheapest = min(floors, key=floors.__getitem__)
        out.append(
            f"| {line.layer} | {line.issue} | {line.target:.1f} | {layer:.2f} | "
            f"{floors[cheapest]:.2f} | {cheapest} | "
            f"{verdict(layer, floors[cheapest], line.target)} |"
        )
    text = "\n".join(out)
    print(text)
    if a.md:
        a.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
