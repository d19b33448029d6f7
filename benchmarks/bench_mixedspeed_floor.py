"""Kernel floors and pass compositions of the mixed-statistics layers against native
nn.GroupNorm(32, 64) (issue 14, branch mixedspeed).

Each candidate is a bare sequence of ATen calls on the same (32, 64, 32, 32) fp32 tensor (no
Python checks, no autograd), forward + backward, timed in alternating rounds against
``nn.GroupNorm(32, 64)``'s forward + backward (autograd, parameter gradients included): one
thread, ``time.process_time_ns``, ratio = median of per-round ratios. Prints the 1-minute load.

    python benchmarks/bench_mixedspeed_floor.py [--rounds 15] [--only NAME,...] [--overhead]

``--overhead`` adds each layer on a (2, 64, 4, 4) input: its per-call cost (Python, the
autograd Function, the ~60-90 ATen calls on (N, C) tensors), nearly free of data passes.

EvoNorm's kernel sequences are in ``bench_mixedspeed_evo.py`` (same runner).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from normlab.bench import timing

aten = torch.ops.aten
N, C, H, W = 32, 64, 32, 32
R, L = N * C, H * W
CHUNK = 8  # samples per chunk: 8·64·1024 fp32 = 2 MiB


def setup() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=g)
    dy = torch.randn(N, C, H, W, generator=g)
    a, b = torch.rand(R, generator=g) + 0.5, torch.randn(R, generator=g)
    return {"x": x, "dy": dy, "a": a, "b": b, "zero": torch.zeros(R), "one": torch.ones(R),
            "zero1": torch.zeros(1, R), "one1": torch.ones(1, R)}


def kernels(t: dict[str, Tensor]) -> dict[str, Callable[[], object]]:
    x, dy, a, b, zero, one = t["x"], t["dy"], t["a"], t["b"], t["zero"], t["one"]
    x3, dy3 = x.view(1, R, L), dy.view(1, R, L)
    xr = x.view(R, L)

    def gn_stats() -> object:  # per-(n, c) mean and 1/σ, writes x̂
        return aten.native_group_norm(x, None, None, N, C, H * W, C, 0.0)

    def var_mean() -> object:
        return torch.var_mean(xr, dim=1, correction=0)

    def update_stats() -> object:
        return aten.batch_norm_update_stats(x3, None, None, 0.0)

    def raw_moments() -> object:
        return xr.sum(1), torch.linalg.vector_norm(xr, dim=1)

    def bn_inf(src: Tensor, out: Tensor | None = None) -> Tensor:
        if out is None:
            return torch.batch_norm(src, a, b, zero, one, False, 0.0, 0.0, False)
        return aten.native_batch_norm.out(src, a, b, zero, one, False, 0.0, 0.0, out=out,
                                          save_mean=a.new_empty(0),
                                          save_invstd=a.new_empty(0))[0]

    def sums() -> object:
        return aten.native_group_norm_backward(dy3, x3, t["zero1"], t["one1"], one, 1, R, L, R,
                                               [False, True, True])

    def out_fresh() -> object:  # y = x·A + B into a fresh tensor
        return bn_inf(x3)

    def dx_current() -> object:
        dx = bn_inf(x3)
        dx.view(N, C, L).addcmul_(dy.view(N, C, L), a.view(N, C, 1))
        return dx

    def dx_chunked() -> object:
        dx = torch.empty_like(x3).view(N, C, L)
        xs, ds = x.view(N, C, L), dy.view(N, C, L)
        a2 = a.view(N, C)
        for i in range(0, N, CHUNK):
            j = i + CHUNK
            o = dx[i:j]
            bn_inf(xs[i:j].reshape(1, -1, L), o.view(1, -1, L))
            o.addcmul_(ds[i:j], a2[i:j].unsqueeze(-1))
        return dx

    def gn_bw_dx() -> object:  # a GN backward computing dx itself (sums inside)
        return aten.native_group_norm_backward(dy3, x3, t["zero1"], t["one1"], one, 1, R, L, R,
                                               [True, False, False])

    def floor_gnstats_inplace() -> object:  # stats writing x̂, BN-inf in place, sums, dx
        y = gn_stats()[0]
        bn_inf(y.view(1, R, L), y.view(1, R, L))
        sums()
        return dx_chunked()

    def floor_varmean() -> object:
        var_mean()
        out_fresh()
        sums()
        return dx_chunked()

    def floor_update_stats() -> object:
        update_stats()
        out_fresh()
        sums()
        return dx_chunked()

    def floor_one_pass() -> object:  # Σx, Σx² moments: cancels for |μ| ≫ σ (not exact)
        raw_moments()
        out_fresh()
        sums()
        return dx_current()

    def current_plan() -> object:
        y = gn_stats()[0]
        y.mul_(a.view(N, C, 1, 1)).add_(b.view(N, C, 1, 1))
        sums()
        return dx_current()

    return {
        "stats: native_group_norm (writes x̂)": gn_stats,
        "stats: var_mean over rows": var_mean,
        "stats: batch_norm_update_stats (1, NC, L)": update_stats,
        "stats: sum + vector_norm (one-pass)": raw_moments,
        "output: BN-inference x -> fresh y": out_fresh,
        "output: clone, then BN-inference x -> the copy": lambda: bn_inf(x3, x3.clone()),
        "sums: group_norm_backward (Σdy, Σdy·x)": sums,
        "dx: BN-inf x·P+Q fresh + addcmul_ (current)": dx_current,
        "dx: chunked BN-inf + addcmul_ in cache": dx_chunked,
        "dx: native_group_norm_backward dx only": gn_bw_dx,
        "plan: GN stats, x̂·s+t (2 passes), sums, dx (current)": current_plan,
        "plan: GN stats, BN-inf in place, sums, chunked dx": floor_gnstats_inplace,
        "plan: var_mean, BN-inf fresh, sums, chunked dx": floor_varmean,
        "plan: update_stats, BN-inf fresh, sums, chunked dx": floor_update_stats,
        "plan: one-pass Σx, Σx², BN-inf fresh, sums, dx (inexact)": floor_one_pass,
    }


def layers() -> dict[str, nn.Module]:
    import normlab

    vbn = normlab.VirtualBatchNorm(C)
    vbn.set_reference(torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1)))
    return {"layer: SwitchableNorm": normlab.SwitchableNorm(C),
            "layer: BatchInstanceNorm": normlab.BatchInstanceNorm(C),
            "layer: VirtualBatchNorm": vbn, "layer: EvoNormB0": normlab.EvoNormB0(C),
            "layer: EvoNormS0": normlab.EvoNormS0(C)}


def layer_step(m: nn.Module, x: Tensor, dy: Tensor) -> Callable[[], object]:
    xg = x.clone().requires_grad_()
    params = list(m.train().parameters())
    return lambda: torch.autograd.grad(m(xg), [xg, *params], dy)


Kernels = Callable[[dict[str, Tensor]], dict[str, Callable[[], object]]]


def main(argv: list[str] | None = None, kernels_of: Kernels | None = None,
         description: str | None = None) -> int:
    """Time the layers and the kernel sequences of ``kernels_of`` (default: this file's)
    against nn.GroupNorm(32, 64) and print a markdown table."""
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    p.add_argument("--overhead", action="store_true",
                   help="also time each layer on a (2, 64, 4, 4) input (the per-call cost)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t = setup()
    gn = nn.GroupNorm(32, C)
    xg = t["x"].clone().requires_grad_()
    params = list(gn.parameters())

    def gn_step() -> None:
        torch.autograd.grad(gn(xg), [xg, *params], t["dy"])

    chosen = [s for s in a.only.split(",") if s]
    steps: dict[str, Callable[[], object]] = {"nn.GroupNorm(32, 64) fwd+bwd": gn_step}
    tiny = torch.randn(2, C, 4, 4, generator=torch.Generator().manual_seed(3))
    for name, layer in layers().items():
        if not chosen or any(c in name for c in chosen):
            steps[name] = layer_step(layer, t["x"], t["dy"])
            if a.overhead:  # the same layer on a (2, 64, 4, 4) input: its per-call cost
                steps[f"{name} on (2, 64, 4, 4)"] = layer_step(layer, tiny, torch.ones_like(tiny))
    found = (kernels_of or kernels)(t)
    steps.update({k: v for k, v in found.items() if not chosen or any(s in k for s in chosen)})
    now = time.process_time_ns
    for s in steps.values():
        for _ in range(3):
            s()
    samples = {k: timing.sampler(s, now, 0.01) for k, s in steps.items()}
    load0 = os.getloadavg()[0]
    times = timing.rotated_rounds(samples, a.rounds)
    base = times["nn.GroupNorm(32, 64) fwd+bwd"]
    load1 = os.getloadavg()[0]
    print(f"1 thread, process_time, {a.rounds} rounds; 1-min load {load0:.2f} -> {load1:.2f}")
    print("| candidate | median ms | ratio to GroupNorm step |\n|---|---:|---:|")
    for k, v in times.items():
        med = sorted(v)[len(v) // 2]
        print(f"| {k} | {med * 1e3:.3f} | {timing.ratio(v, base):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
