"""Kernel floors and pass compositions of the mixed-statistics layers against native
nn.GroupNorm(32, 64) (issue 14, branch mixedspeed).

Each candidate is a bare sequence of ATen calls on the same (32, 64, 32, 32) fp32 tensor (no
Python checks, no autograd), forward + backward, timed in alternating rounds against
``nn.GroupNorm(32, 64)``'s forward + backward (autograd, parameter gradients included): one
thread, ``time.process_time_ns``, ratio = median of per-round ratios. Prints the 1-minute load.

    python benchmarks/bench_mixedspeed_floor.py [--rounds 15] [--only NAME,...] [--old-evo PATH]

"old:" rows are main's passes: for SN/BIN/VBN patched in (`old_paths`), for EvoNorm main's
evo_norm.py loaded from PATH (``git show main:src/normlab/norms/evo_norm.py > PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

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

    def out_mul_add() -> object:  # current: x̂·s + t in place, two passes
        y = torch.empty_like(x3)
        y.copy_(x3)
        return y

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

    def dx_chunked_mul() -> object:  # dy·A into dx (BN-inf), then += x·P (mul into scratch)
        dx = torch.empty_like(x3).view(N, C, L)
        xs, ds = x.view(N, C, L), dy.view(N, C, L)
        tmp = torch.empty(CHUNK, C, L)
        a2 = a.view(N, C)
        for i in range(0, N, CHUNK):
            j = i + CHUNK
            o = dx[i:j]
            bn_inf(ds[i:j].reshape(1, -1, L), o.view(1, -1, L))
            o.add_(torch.mul(xs[i:j], a2[i:j].unsqueeze(-1), out=tmp))
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

    def current_plan() -> object:
        y = gn_stats()[0]
        y.mul_(a.view(N, C, 1, 1)).add_(b.view(N, C, 1, 1))
        sums()
        return dx_current()

    _ = out_mul_add, dx_chunked_mul
    return {
        "stats: native_group_norm (writes x̂)": gn_stats,
        "stats: var_mean over rows": var_mean,
        "stats: batch_norm_update_stats (1, NC, L)": update_stats,
        "stats: sum + vector_norm (one-pass)": raw_moments,
        "output: BN-inference x -> fresh y": out_fresh,
        "output: BN-inference in place": lambda: bn_inf(x3, x3.clone()),
        "sums: group_norm_backward (Σdy, Σdy·x)": sums,
        "dx: BN-inf x·P+Q fresh + addcmul_ (current)": dx_current,
        "dx: chunked BN-inf + addcmul_ in cache": dx_chunked,
        "dx: native_group_norm_backward dx only": gn_bw_dx,
        "plan: GN stats, x̂·s+t (2 passes), sums, dx (current)": current_plan,
        "plan: GN stats, BN-inf in place, sums, chunked dx": floor_gnstats_inplace,
        "plan: var_mean, BN-inf fresh, sums, chunked dx": floor_varmean,
        "plan: update_stats, BN-inf fresh, sums, chunked dx": floor_update_stats,
    }


def old_evo_module(path: str | None) -> Any:
    """``evo_norm.py`` of another tree (``--old-evo``, e.g. main's, saved with ``git show``)
    loaded under another name: its EvoNorm classes, on this tree's helpers."""
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("evo_norm_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layers(old_evo: Any = None) -> dict[str, nn.Module]:
    import normlab

    vbn = normlab.VirtualBatchNorm(C)
    vbn.set_reference(torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(1)))
    return {"layer: SwitchableNorm": normlab.SwitchableNorm(C),
            "old: SwitchableNorm": normlab.SwitchableNorm(C),
            "old: BatchInstanceNorm": normlab.BatchInstanceNorm(C),
            "old: VirtualBatchNorm": vbn,
            "layer: BatchInstanceNorm": normlab.BatchInstanceNorm(C),
            "layer: VirtualBatchNorm": vbn, "layer: EvoNormB0": normlab.EvoNormB0(C),
            "layer: EvoNormS0": normlab.EvoNormS0(C)} | ({} if old_evo is None else {
            "old: EvoNormB0": old_evo.EvoNormB0(C), "old: EvoNormS0": old_evo.EvoNormS0(C)})


def layer_step(m: nn.Module, x: Tensor, dy: Tensor, old: bool = False) -> Callable[[], object]:
    xg = x.clone().requires_grad_()
    params = list(m.train().parameters())
    if not old:
        return lambda: torch.autograd.grad(m(xg), [xg, *params], dy)

    def step() -> object:
        with old_paths():
            return torch.autograd.grad(m(xg), [xg, *params], dy)

    return step


@contextlib.contextmanager
def old_paths() -> Iterator[None]:
    """Main's passes before this branch (x̂·s then + t, two whole passes; dx = x·P + Q into a
    fresh tensor, then addcmul_ of dy·A over the whole tensor), patched in for A/B rounds."""
    from normlab.norms import _instance_affine as ia

    def two_passes(src: Tensor, scale: Tensor, shift: Tensor, out: Tensor) -> Tensor:
        view = scale.shape + (1,) * (src.dim() - 2)
        return src.mul_(scale.view(view)).add_(shift.view(view))

    def whole(x: Tensor, dy: Tensor, scale: Tensor, mean: Tensor, g_mean: Tensor,
              g_var: Tensor) -> Tensor:
        n, c = mean.shape
        dx = ia.moments_grad(x, mean, g_mean, g_var, x.numel() // max(mean.numel(), 1))
        dx.view(n, c, -1).addcmul_(dy.reshape(n, c, -1), scale.reshape(n, c, 1))
        return dx

    saved = ia.slice_affine_into, ia.affine_input_grad
    ia.slice_affine_into, ia.affine_input_grad = two_passes, whole
    try:
        yield
    finally:
        ia.slice_affine_into, ia.affine_input_grad = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--only", default="", help="comma-separated substrings of candidate names")
    p.add_argument("--old-evo", default="", help="another tree's evo_norm.py to compare with")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t = setup()
    gn = nn.GroupNorm(32, C)
    xg = t["x"].clone().requires_grad_()
    params = list(gn.parameters())

    def gn_step() -> None:
        torch.autograd.grad(gn(xg), [xg, *params], t["dy"])

    chosen = [s for s in a.only.split(",") if s]
    steps = {"nn.GroupNorm(32, 64) fwd+bwd": gn_step}
    for name, layer in layers(old_evo_module(a.old_evo)).items():
        if not chosen or any(c in name for c in chosen):
            old = name.startswith("old") and "Evo" not in name  # old EvoNorm: its own module
            steps[name] = layer_step(layer, t["x"], t["dy"], old)
    steps.update({k: v for k, v in kernels(t).items() if not chosen or any(s in k for s in chosen)})
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
    print("| candidate | median ms | ratio to GroupNorm step | ratio to old |")
    print("|---|---:|---:|---:|")
    for k, v in times.items():
        med = sorted(v)[len(v) // 2]
        old = times.get(k.replace("layer:", "old:")) if k.startswith("layer:") else None
        vs_old = f"{timing.ratio(v, old):.2f}" if old else ""
        print(f"| {k} | {med * 1e3:.3f} | {timing.ratio(v, base):.2f} | {vs_old} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
