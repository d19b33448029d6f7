"""Issue 12 / 14 activation layers: this tree against an older one, in one process, and floors.

Every candidate is a training step, forward + backward (input and parameter gradients, a fixed
random grad_output) on (32, 64, 32, 32) fp32, timed against native ``nn.GroupNorm(32, 64)`` on
the same tensor: ``normlab.bench.timing``'s samples, rounds rotated and reversed, one thread,
``time.process_time_ns``, ratio = median of per-round ratios. The older implementation is the
``--before`` git ref (default ``main``) extracted into a temporary package ``normlab_before``
(every ``normlab`` name rewritten), so before and after alternate in the same process and the
same heap. ``--floors`` adds, per layer, the bare ATen kernel sequences of candidate pass plans
(no checks, no autograd: the kernels on the same tensor, forward + backward), other
compositions, and parts (a plan with one pass left out, or some passes alone). Page faults per
step (``ru_minflt``, load-independent) are printed with each row: glibc returns freed 8 MB
tensors to the kernel depending on the heap's history, and a fresh tensor's first touch costs
~2048 faults; ``--keep-heap`` turns that off (mallopt).

    PYTHONPATH=src python benchmarks/bench_actspeed.py [--layers frn,dn,...] [--rounds 15]
        [--before main] [--floors] [--keep-heap] [--channels-last] [--md FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from actspeed_floors import FLOORS, PARTS
from normlab.bench.timing import ratio, rotated_rounds, sampler

SHAPE = (32, 64, 32, 32)
Step = Callable[[], object]
LAYERS: dict[str, Callable[[object], nn.Module]] = {
    "frn": lambda m: m.FilterResponseNorm(64),
    "frn_notlu": lambda m: m.FilterResponseNorm(64, tlu=False),
    "dn": lambda m: m.create("divisive_norm", 64),  # the registry's fields (normlab bench's)
    "lp": lambda m: m.LpNorm(64, p=1),
    "streaming": lambda m: m.StreamingNorm(64),
    "rms": lambda m: m.RMSNorm(64),
    "dyt": lambda m: m.DynamicTanh(64),
    "mobn": lambda m: m.MeanOnlyBatchNorm(64),
    "mobn_affine": lambda m: m.MeanOnlyBatchNorm(64, affine=True),
}


def before_package(ref: str) -> object:
    """``normlab`` at git ``ref``, importable as ``normlab_before`` (names rewritten)."""
    root = Path(tempfile.mkdtemp(prefix="normlab_before_"))
    repo = Path(__file__).resolve().parent.parent
    tar = subprocess.run(["git", "-C", str(repo), "archive", ref, "src/normlab"],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=tar, check=True)
    pkg = root / "normlab_before"
    (root / "src" / "normlab").rename(pkg)
    for f in pkg.rglob("*.py"):
        f.write_text(re.sub(r"\bnormlab\b", "normlab_before", f.read_text()))
    sys.path.insert(0, str(root))
    return importlib.import_module("normlab_before")


def train_step(module: nn.Module, x: Tensor, g: Tensor) -> Step:
    xr = x.detach().clone().requires_grad_()
    params = list(module.parameters())

    def step() -> None:
        xr.grad = None
        for p in params:
            p.grad = None
        module(xr).backward(g)

    return step


def faults(step: Step, reps: int = 5) -> float:
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / reps


def keep_heap() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    libc.mallopt(-2, 64 << 20)  # M_TOP_PAD


def compare(cands: dict[str, Step], rounds: int, target_s: float) -> list[str]:
    """Rows '| name | ms | ratio | faults/step |', GroupNorm (the first candidate) = 1."""
    now = time.process_time_ns
    samples = {}
    for name, step in cands.items():
        for _ in range(3):
            step()
        samples[name] = sampler(step, now, target_s)
    load = os.getloadavg()[0]
    times = rotated_rounds(samples, rounds)
    base = next(iter(cands))
    rows = []
    for name, step in cands.items():
        ms = 1e3 * sorted(times[name])[len(times[name]) // 2]
        row = (f"| {name} | {ms:.2f} | {ratio(times[name], times[base]):.2f} | "
               f"{faults(step):.0f} | {load:.1f} / {os.getloadavg()[0]:.1f} |")
        print(row, flush=True)
        rows.append(row)
    return rows


def overhead(layers: list[str], make: object) -> list[str]:
    """'| layer | ATen calls per step | µs per step |' on a (2, 64, 2, 2) input: the fixed cost
    of a step (Python, autograd, small operations), next to native GroupNorm's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    x, g = torch.randn(2, 64, 2, 2), torch.randn(2, 64, 2, 2)
    rows = []
    for name in ["nn.GroupNorm(32, 64)", *layers]:
        module = nn.GroupNorm(32, 64) if name.startswith("nn.") else LAYERS[name](make)
        step = train_step(module, x, g)
        for _ in range(5):
            step()
        Count.calls = 0
        with Count():
            step()
        start = time.process_time_ns()
        for _ in range(200):
            step()
        us = (time.process_time_ns() - start) / 200 / 1e3
        rows.append(f"| {name} | {Count.calls} | {us:.0f} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="frn,dn,lp,streaming,rms,dyt")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--target-s", type=float, default=0.05)
    p.add_argument("--before", default="main")
    p.add_argument("--floors", action="store_true")
    p.add_argument("--keep-heap", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--overhead", action="store_true",
                   help="also count ATen calls and time a step on a (2, 64, 2, 2) input")
    p.add_argument("--md", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.keep_heap:
        keep_heap()
    import normlab

    old = before_package(a.before) if a.before else None
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    x = torch.randn(SHAPE).contiguous(memory_format=fmt)
    g = torch.randn(SHAPE).contiguous(memory_format=fmt)
    head = (f"(32, 64, 32, 32) fp32 {'channels_last' if a.channels_last else 'NCHW'}, "
            f"{a.rounds} rounds, 1 thread, process time"
            f"{', heap kept' if a.keep_heap else ''}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    lines = [head, "", "| candidate | median ms | ÷ nn.GroupNorm | faults/step | load 1-min |",
             "|---|---:|---:|---:|---|"]
    print(head)
    for layer in a.layers.split(","):
        cands: dict[str, Step] = {"nn.GroupNorm(32, 64)": train_step(nn.GroupNorm(32, 64), x, g)}
        cands[f"{layer}: this tree"] = train_step(LAYERS[layer](normlab), x, g)
        if old is not None:
            cands[f"{layer}: {a.before}"] = train_step(LAYERS[layer](old), x, g)
        if a.floors:
            for name, make in {**FLOORS.get(layer, {}), **PARTS.get(layer, {})}.items():
                cands[f"{layer}: {name}"] = make(x.contiguous(), g.contiguous())
        lines += compare(cands, a.rounds, a.target_s)
    if a.overhead:
        lines += ["", "| layer | ATen calls per step | µs per step, (2, 64, 2, 2) |",
                  "|---|---:|---:|", *overhead(a.layers.split(","), normlab)]
    if a.md:
        a.md.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
