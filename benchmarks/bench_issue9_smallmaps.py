"""Issue 9 on small maps: the changed layers before and after, side by side in ONE process.

Forward + backward in training mode (gradients of the input and of every trainable parameter,
random grad_output), fp32, on (2, 64, 4, 4) and (16, 64, 8, 8), against ``torch.nn.BatchNorm2d``
(issue 9's targets: Ghost BN, Batch Renorm, Frozen BN <= 1.3x, BatchNorm <= 1.10x). The
"before" layers are the method files of git revision ``--before`` (default ``main``), loaded
from ``git show`` under other module names beside this tree's normlab (their helpers are this
tree's), so before and after alternate round by round in one process: with other jobs on the
machine, only such ratios compare. One thread, ``time.process_time_ns``, rotated order, ratio =
median of the per-round ratios. ``--ops`` prints the ATen calls per step instead
(TorchDispatchMode, every call, views included).

``--mixed``: the floor evidence for the mixed-statistics layers (SN, BIN, VBN, EvoNorm; target
<= 2.0x): each layer and the floors of bench_function_floor.py / bench_switchable_floor.py with
their ATen calls per step, and the marginal cost of one tiny ATen call measured in the same
rounds ("BN kernels in a Function" with and without 8 extra (C,) ops): a layer needs at least
calls x that cost beyond the native kernels.

    python benchmarks/bench_issue9_smallmaps.py [--rounds 21] [--before main] [--ops] [--mixed]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import normlab
from bench_renorm_floor import Step, module
from normlab.bench import timing

C = 64
SHAPES = ((2, C, 4, 4), (16, C, 8, 8))
ROOT = Path(__file__).resolve().parent.parent


def load_before(rev: str, name: str) -> ModuleType:
    """``src/normlab/norms/<name>.py`` at git revision ``rev`` as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/normlab/norms/{name}.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"before_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"before_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def mixed() -> dict[str, Callable[[tuple[int, ...]], Step]]:
    """The mixed-statistics layers and the compositions that bound them from below."""
    from bench_function_floor import bn_kernels, switchable
    from bench_switchable_floor import minimal

    def vbn(shape: tuple[int, ...]) -> nn.Module:  # a reference batch of the input's shape
        m = normlab.VirtualBatchNorm(C)
        m.set_reference(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
        return m

    return {
        "nn.BatchNorm2d": lambda s: module(nn.BatchNorm2d(C)),
        "BN kernels in a Function": lambda s: bn_kernels(),
        "... + 8 vector ops": lambda s: bn_kernels(8),
        "SN hand-written Function (floor)": lambda s: switchable(),
        "SN plain-autograd composition": lambda s: minimal(),
        "SwitchableNorm": lambda s: module(normlab.SwitchableNorm(C)),
        "BatchInstanceNorm": lambda s: module(normlab.BatchInstanceNorm(C)),
        "VirtualBatchNorm": lambda s: module(vbn(s)),
        "EvoNormB0": lambda s: module(normlab.EvoNormB0(C)),
        "EvoNormS0": lambda s: module(normlab.EvoNormS0(C)),
    }


def candidates(rev: str) -> dict[str, Callable[[tuple[int, ...]], Step]]:
    ghost, frozen = load_before(rev, "ghost_batch_norm"), load_before(rev, "frozen_batch_norm")
    clip = {"warmup_steps": 0, "rmax_ramp_end": 0, "dmax_ramp_end": 0}
    return {
        "nn.BatchNorm2d": lambda s: module(nn.BatchNorm2d(C)),
        "BatchNorm (unchanged)": lambda s: module(normlab.BatchNorm(C)),
        "FrozenBatchNorm, before": lambda s: module(frozen.FrozenBatchNorm(C)),
        "FrozenBatchNorm, after": lambda s: module(normlab.FrozenBatchNorm(C)),
        "GhostBatchNorm(8), before": lambda s: module(ghost.GhostBatchNorm(C, ghost_batch_size=8)),
        "GhostBatchNorm(8), after": lambda s: module(normlab.GhostBatchNorm(C, ghost_batch_size=8)),
        "BatchRenorm (unchanged)": lambda s: module(normlab.BatchRenorm(C, **clip)),
    }


def stepper(f: Step, shape: tuple[int, ...]) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    grad_out = torch.randn(shape, generator=gen)

    def step() -> None:
        y, params = f(x)
        torch.autograd.grad(y, [x, *(p for p in params if p.requires_grad)], grad_out)

    return step


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def aten_calls(step: Callable[[], None]) -> int:
    step()  # warm-up: caches filled
    with _Count() as count:
        step()
    return sum(count.calls.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--before", default="main", help="git revision of the 'before' layers")
    parser.add_argument("--ops", action="store_true", help="ATen calls per step, then exit")
    parser.add_argument("--mixed", action="store_true", help="the mixed-statistics floors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    made = mixed() if args.mixed else candidates(args.before)
    if args.ops:
        print("| layer | " + " | ".join(f"{s} ATen calls" for s in SHAPES) + " |")
        print("|---|" + "---:|" * len(SHAPES))
        for name, make in made.items():
            counts = [aten_calls(stepper(make(s), s)) for s in SHAPES]
            print(f"| {name} | " + " | ".join(map(str, counts)) + " |")
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| layer | " + " | ".join(f"{s} µs | ratio" for s in SHAPES) + " |")
    print("|---|" + "---:|---:|" * len(SHAPES))
    results = {}
    for shape in SHAPES:
        steps = {name: stepper(make(shape), shape) for name, make in made.items()}
        for step in steps.values():
            for _ in range(5):
                step()
        samples = {n: timing.sampler(s, time.process_time_ns, 0.05) for n, s in steps.items()}
        results[shape] = timing.rotated_rounds(samples, args.rounds)
    for name in made:
        cells = []
        for shape in SHAPES:
            t, base = results[shape][name], results[shape]["nn.BatchNorm2d"]
            ratio = statistics.median(a / b for a, b in zip(t, base, strict=True))
            cells.append(f"{1e6 * statistics.median(t):.0f} | {ratio:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.mixed:
        print("\nmarginal cost of one tiny ATen call (µs), and the implied floor of each layer:")
        for shape in SHAPES:
            r = results[shape]
            per_call = statistics.median(
                (a - b) / 8 for a, b in zip(r["... + 8 vector ops"], r["BN kernels in a Function"],
                                            strict=True))
            base = statistics.median(r["nn.BatchNorm2d"])
            print(f"{shape}: {1e6 * per_call:.2f} µs per call; BN step {1e6 * base:.0f} µs")
            for name, make in made.items():
                calls = aten_calls(stepper(make(shape), shape))
                print(f"  {name}: {calls} ATen calls, calls x per-call = "
                      f"{calls * per_call / base:.2f}x the BN step")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
