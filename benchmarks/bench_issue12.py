"""Issue 12's speed and memory table: the activation normalizers against nn.GroupNorm(32, 64),
NormLSTM against nn.LSTM.

Layers: (32, 64, 32, 32) fp32, training mode, forward + backward with the gradients of the input
and of every parameter, a fixed random grad_output; all candidates alternate round by round in
one process (`bench_classic.rotated_rounds`), and a ratio is the median over rounds of the
per-round ratio candidate / GroupNorm, so that machine load hits every candidate alike. Saved
bytes: the distinct storages autograd keeps for backward (saved_tensors_hooks; the input itself
included), over the input's bytes. NormLSTM: sequence-first (T, N, I) input, one layer, the sum
of the outputs backpropagated. With ``--threads 1`` the clock is ``time.process_time`` (robust to
other processes on the machine), otherwise wall time; ``--keep-heap`` stops glibc from
returning freed tensors to the kernel (page faults otherwise land on whichever candidate runs
after a trim). ``--floors`` adds the cost of one pass of
single ATen kernels on the same tensor (what the slower methods are made of).

Targets (issue 12): each layer <= 1.5x GroupNorm (DynamicTanh <= 1.0x), saved <= 1.5x the input;
NormLSTM <= 3x nn.LSTM. Issue 14 adds the EvoNorm and RMSNorm rows (<= 1.5x; RMSNorm normalizes
over C per position, on the same NCHW tensor).

    PYTHONPATH=src python benchmarks/bench_issue12.py [--threads 2] [--rounds 31] [--floors]
        [--lstm-rounds 15] [--chunk 524288] [--keep-heap] [--save | --append] [--results PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import normlab.norms._chunked as chunked
from bench_classic import rotated_rounds, start_run, write_results
from normlab.bench.timing import saved_bytes
from normlab.core import axes as axes_lib
from normlab.norms import _batch_affine
from normlab.norms.adain import AdaIN
from normlab.norms.divisive_norm import DivisiveNorm, _divisive_eager
from normlab.norms.dynamic_tanh import DynamicTanh
from normlab.norms.evo_norm import EvoNormB0, EvoNormS0
from normlab.norms.filter_response_norm import FilterResponseNorm, frn_composed
from normlab.norms.lp_norm import LpNorm, _lp_reference_forward
from normlab.norms.rms_norm import RMSNorm
from normlab.norms.streaming_norm import StreamingNorm, _BatchStats
from normlab.rnn import NormLSTM

SHAPE = (32, 64, 32, 32)
RESULTS = Path(__file__).parent / "results" / "issue12.md"
BASE = "nn.GroupNorm(32, 64)"
TARGETS = {"DynamicTanh(64)": 1.0}  # every other layer: 1.5


def layers() -> dict[str, nn.Module]:
    c = SHAPE[1]
    adain = AdaIN(c)
    adain.set_style(torch.randn(1, c, 8, 8) * 2 + 1)
    found: dict[str, nn.Module] = {
        BASE: nn.GroupNorm(32, c),
        "FilterResponseNorm(64)": FilterResponseNorm(c),
        "FilterResponseNorm(64, tlu=False)": FilterResponseNorm(c, tlu=False),
        "AdaIN(64), stored style": adain,
        "DivisiveNorm(64)": DivisiveNorm(c),
        "LpNorm(64, p=1)": LpNorm(c, p=1),
        "LpNorm(64, p=2)": LpNorm(c, p=2),
        "StreamingNorm(64)": StreamingNorm(c),
        "DynamicTanh(64)": DynamicTanh(c),
        "EvoNormB0(64)": EvoNormB0(c),
        "EvoNormS0(64)": EvoNormS0(c),
        "RMSNorm(64), NCHW": RMSNorm(c),
    }
    for m in found.values():  # parameters away from their initial values (no special cases)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return found


def clock(threads: int) -> Callable[[], float]:
    return time.process_time if threads == 1 else time.perf_counter


def layer_step(
    m: nn.Module, x: Tensor, dy: Tensor, now: Callable[[], float]
) -> Callable[[], float]:
    """One forward + backward (input and parameter gradients); returns its time."""
    wrt = [x, *(p for p in m.parameters() if p.requires_grad)]

    def step() -> float:
        start = now()
        torch.autograd.grad(m(x), wrt, dy)
        return now() - start

    return step


def ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Median over rounds of each candidate's time over the base's time in the same round."""
    b = times[base]
    return {k: statistics.median(t / u for t, u in zip(ts, b, strict=True))
            for k, ts in times.items()}


def layer_table(args: argparse.Namespace) -> list[str]:
    now = clock(args.threads)
    x = torch.randn(SHAPE, requires_grad=True)
    dy = torch.randn(SHAPE)
    mods = layers()
    times = rotated_rounds({k: layer_step(m, x, dy, now) for k, m in mods.items()},
                           args.rounds, warmup=3)
    ratio = ratios(times, BASE)
    nbytes = x.numel() * x.element_size()
    lines = ["| layer | median ms | ratio to GroupNorm | target | saved / input | met |",
             "|---|---:|---:|---:|---:|---|"]
    for name, m in mods.items():
        saved = saved_bytes(lambda m=m: m(x)) / nbytes
        if name == BASE:
            lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.2f} | 1.00 | | "
                         f"{saved:.2f} | |")
            continue
        target = TARGETS.get(name, 1.5)
        met = "yes" if ratio[name] <= target and saved <= 1.5 else "no"
        lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.2f} | "
                     f"{ratio[name]:.2f} | {target:.1f} | {saved:.2f} | {met} |")
    return lines


def lstm_step(m: nn.Module, x: Tensor, now: Callable[[], float]) -> Callable[[], float]:
    def step() -> float:
        start = now()
        out, _ = m(x)
        out.sum().backward()
        return now() - start

    return step


def lstm_table(args: argparse.Namespace) -> list[str]:
    now = clock(args.threads)
    t, n, i, h = args.lstm
    x = torch.randn(t, n, i, requires_grad=True)
    models: dict[str, nn.Module] = {"nn.LSTM": nn.LSTM(i, h)}
    for norm in ("ln", "bn", None):
        models[f"NormLSTM(norm={norm!r})"] = NormLSTM(i, h, norm=norm)
    times = rotated_rounds({k: lstm_step(m, x, now) for k, m in models.items()},
                           args.lstm_rounds, warmup=2)
    ratio = ratios(times, "nn.LSTM")
    lines = [f"NormLSTM, (T, N, I, H) = ({t}, {n}, {i}, {h}), target <= 3x nn.LSTM "
             "(norm=None: no target, shown for scale):", "",
             "| layer | median ms | ratio to nn.LSTM | met |", "|---|---:|---:|---|"]
    for name in models:
        met = "" if name == "nn.LSTM" or "None" in name else ("yes" if ratio[name] <= 3 else "no")
        lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.1f} | "
                     f"{ratio[name]:.2f} | {met} |")
    return lines


def floor_kernels(x: Tensor, dy: Tensor) -> dict[str, Callable[[], object]]:
    """Single passes over the (32, 64, 32, 32) tensor: the building blocks of the layers."""
    n, c = x.shape[:2]
    rows, length = n * c, x.numel() // (n * c)
    x3, dy3 = x.view(1, rows, length), dy.view(1, rows, length)
    one, zero = torch.ones(rows), torch.zeros(rows)
    sums = chunked.Sums(rows, x.dtype, x.device)
    xg = x.clone().requires_grad_()
    wg, bg = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    mask = x > 0
    return {
        "GroupNorm(32, 64) forward + backward": lambda: torch.autograd.grad(
            nn.functional.group_norm(xg, 32, wg, bg), (xg, wg, bg), dy),
        "native_group_norm, 1 group per (n, c)": lambda: torch.ops.aten.native_group_norm(
            x, None, None, n, c, length, c, 1e-5),
        "native_group_norm_backward sums (Σdy, Σdy·x)": lambda: sums(dy3, x3),
        "batch_norm inference pass (x·A + B per row)": lambda: torch.batch_norm(
            x3, one, zero, zero, one, False, 0.0, 0.0, False),
        "batch_norm_update_stats (per-channel moments)": lambda:
            torch.ops.aten.batch_norm_update_stats(x, None, None, 0.0),
        "torch.var_mean over (0, 2, 3)": lambda: torch.var_mean(x, (0, 2, 3)),
        "vector_norm over S (Σx² per row)": lambda: torch.linalg.vector_norm(x3, dim=2),
        "sum over S (per row)": lambda: x3.sum(2),
        "abs": lambda: x.abs(),
        "mul (x·dy)": lambda: x * dy,
        "mul by per-row scalar": lambda: x3 * one.view(1, -1, 1),
        "addcmul (x + x·dy)": lambda: torch.addcmul(x, x, dy),
        "clamp_min by per-row tensor": lambda: x3.clamp_min(zero.view(1, -1, 1)),
        "gt (bool mask)": lambda: x > 0,
        "where(mask, dy, 0)": lambda: torch.where(mask, dy, 0.0),
        "sigmoid": lambda: torch.sigmoid(x),
        "tanh": lambda: torch.tanh(x),
        "tanh_backward": lambda: torch.ops.aten.tanh_backward(dy, x),
        "empty_like + copy_": lambda: torch.empty_like(x).copy_(x),
        "avg_pool2d 3x3 (stride 1, pad 1)": lambda: nn.functional.avg_pool2d(x, 3, 1, 1),
    }


def compositions(x: Tensor) -> dict[str, tuple[Callable[..., Tensor], list[Tensor]]]:
    """Other ways to compute the slower layers (forward + backward by autograd): each a function
    of (x, *params) and its parameters, timed like the layers."""
    n, c = x.shape[:2]
    ones, zeros = torch.ones(c), torch.zeros(c)

    def leaf(t: Tensor) -> Tensor:
        return (t + 0.1 * torch.randn_like(t)).requires_grad_()

    def row(t: Tensor) -> Tensor:
        return t.view(1, -1, 1, 1)

    def rms_frn(x: Tensor, w: Tensor, b: Tensor, tau: Tensor | None = None) -> Tensor:
        z = torch.nn.functional.rms_norm(x.view(n, c, -1), (x[0, 0].numel(),), eps=1e-6)
        y = torch.addcmul(row(b), z.view(x.shape), row(w))
        return y if tau is None else torch.maximum(y, row(tau))

    mods = StreamingNorm(c)
    stats = _BatchStats((mods.running_mean, mods.running_var, mods.short_mean, mods.short_var,
                         mods.short_steps, mods.num_batches_tracked),
                        {"alpha": 0.5, "momentum": 0.1, "window": 8})
    fields = {"sum_window": 3, "sup_window": 3, "sum_channels": None, "sup_channels": None,
              "center": True, "channel_dim": 1, "layer": "DivisiveNorm"}
    return {
        "DyT: w·tanh(a·x) + b (autograd)": (
            lambda x, a, w, b: torch.addcmul(row(b), torch.tanh(a * x), row(w)),
            [leaf(torch.full((1,), 0.5)), leaf(ones), leaf(zeros)]),
        "DyT: 2w·sigmoid(2a·x) + (b − w) (autograd)": (
            lambda x, a, w, b: torch.addcmul(row(b - w), torch.sigmoid(2 * a * x), row(2 * w)),
            [leaf(torch.full((1,), 0.5)), leaf(ones), leaf(zeros)]),
        "FRN + TLU: frn_composed (autograd)": (
            lambda x, w, b, t: frn_composed(x, w, b, t, 1e-6),
            [leaf(ones), leaf(zeros), leaf(zeros)]),
        "FRN + TLU: F.rms_norm per (n, c), affine, maximum (autograd)": (
            rms_frn, [leaf(ones), leaf(zeros), leaf(zeros)]),
        "FRN: frn_composed (autograd)": (
            lambda x, w, b: frn_composed(x, w, b, None, 1e-6), [leaf(ones), leaf(zeros)]),
        "FRN: F.rms_norm per (n, c), affine (autograd)": (
            rms_frn, [leaf(ones), leaf(zeros)]),
        "LpNorm p=1: eager reference (autograd)": (
            lambda x, w, b: _lp_reference_forward(x, w, b, 1.0, 1e-5, axes_lib.LAYER, True),
            [leaf(ones), leaf(zeros)]),
        "LpNorm p=1: (x − μ)/mean|x − μ| over (C, H, W) (autograd)": (
            lambda x, w, b: torch.addcmul(
                row(b), (t := x - x.mean((1, 2, 3), keepdim=True))
                / (t.abs().mean((1, 2, 3), keepdim=True) + 1e-5), row(w)),
            [leaf(ones), leaf(zeros)]),
        "StreamingNorm: eager moments + mixture (autograd)": (
            lambda x, w, b: _batch_affine.eager(x, w, b, stats, 1e-5),
            [leaf(ones), leaf(zeros)]),
        "StreamingNorm's pass count: F.batch_norm, training (native)": (
            lambda x, w, b: torch.nn.functional.batch_norm(x, None, None, w, b, True),
            [leaf(ones), leaf(zeros)]),
        "DivisiveNorm: eager composition (autograd)": (
            lambda x, w, b: _divisive_eager(x, w, b, 0.25, **fields),
            [leaf(ones), leaf(zeros)]),
    }


def composition_table(args: argparse.Namespace) -> list[str]:
    now = clock(args.threads)
    x = torch.randn(SHAPE, requires_grad=True)
    dy = torch.randn(SHAPE)
    base = nn.GroupNorm(32, SHAPE[1])
    steps = {BASE: layer_step(base, x, dy, now)}
    for name, (f, params) in compositions(x).items():
        def step(f: Callable[..., Tensor] = f, params: list[Tensor] = params) -> float:
            start = now()
            torch.autograd.grad(f(x, *params), [x, *params], dy)
            return now() - start

        steps[name] = step
    times = rotated_rounds(steps, args.rounds, warmup=2)
    ratio = ratios(times, BASE)
    lines = ["Other compositions of the layers (forward + backward, same input and rounds):", "",
             "| composition | median ms | ratio to GroupNorm |", "|---|---:|---:|"]
    for name in steps:
        lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.2f} | "
                     f"{ratio[name]:.2f} |")
    return lines


def floor_table(args: argparse.Namespace) -> list[str]:
    now = clock(args.threads)
    x, dy = torch.randn(SHAPE), torch.randn(SHAPE)
    kernels = floor_kernels(x, dy)

    def timed(f: Callable[[], object]) -> Callable[[], float]:
        def step() -> float:
            start = now()
            f()
            return now() - start

        return step

    times = rotated_rounds({k: timed(f) for k, f in kernels.items()}, args.rounds, warmup=2)
    base = "GroupNorm(32, 64) forward + backward"
    ratio = ratios(times, base)
    lines = ["One pass of each kernel on the same (32, 64, 32, 32) fp32 tensor (median ms, and "
             "over GroupNorm's whole forward + backward):", "",
             "| kernel | median ms | ratio to GroupNorm step |", "|---|---:|---:|"]
    for name in kernels:
        lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.3f} | "
                     f"{ratio[name]:.2f} |")
    return lines


def keep_heap() -> None:
    """glibc malloc: serve every full-size tensor from a heap that is never trimmed, so that
    steps stop paying page faults for memory the previous candidate returned to the kernel
    (which candidate pays them depends on the rotation order, not on the layer)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--lstm-rounds", type=int, default=15)
    p.add_argument("--lstm", type=int, nargs=4, default=[50, 32, 64, 128],
                   metavar=("T", "N", "I", "H"))
    p.add_argument("--chunk", type=int, default=chunked.CHUNK_ELEMENTS,
                   help="elements per chunk of the chunked passes (normlab.norms._chunked)")
    p.add_argument("--no-lstm", action="store_true")
    p.add_argument("--floors", action="store_true",
                   help="also time single ATen kernels and other compositions of the layers")
    p.add_argument("--keep-heap", action="store_true",
                   help="glibc mallopt: no trimming, no mmap for tensors (no page-fault noise)")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/issue12.md")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the file --save / --append write (default: results/issue12.md)")
    p.add_argument("--append", action="store_true",
                   help="add this run to benchmarks/results/issue12.md, below the earlier ones")
    a = p.parse_args(argv)
    if a.keep_heap:
        keep_heap()
    chunked.CHUNK_ELEMENTS = a.chunk
    load = start_run(a.threads)
    print(f"{a.threads} thread(s), clock {'process_time' if a.threads == 1 else 'wall'}, "
          f"load {load:.2f}{', heap kept' if a.keep_heap else ''}", flush=True)
    lines = layer_table(a)
    print("\n".join(lines), flush=True)
    if not a.no_lstm:
        part = lstm_table(a)
        print("\n" + "\n".join(part), flush=True)
        lines += ["", *part]
    if a.floors:
        for table in (floor_table, composition_table):
            part = table(a)
            print("\n" + "\n".join(part), flush=True)
            lines += ["", *part]
    if a.save or a.append:
        setup = (f"{SHAPE} fp32, training mode, forward + backward (input and parameter "
                 f"gradients), {a.rounds} rotated rounds ({a.lstm_rounds} for the LSTMs), ratio "
                 f"= median of per-round ratios; clock "
                 f"{'process_time' if a.threads == 1 else 'wall'}"
                 f"{'; glibc heap kept (--keep-heap)' if a.keep_heap else ''}; pid {os.getpid()}")
        title = "Issue 12: activation normalizers and NormLSTM"
        out = a.results
        if a.append and out.exists():  # one more run under the file's earlier ones
            earlier = out.read_text()
            write_results(out, title, setup, lines, load)
            out.write_text(earlier + "\n---\n\n" + out.read_text().replace("# ", "## ", 1))
        else:
            write_results(out, title, setup, lines, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
