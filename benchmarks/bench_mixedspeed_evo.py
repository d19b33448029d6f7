"""EvoNorm-B0 / S0 kernel floors against native nn.GroupNorm(32, 64) (issue 14, mixedspeed).

The bare ATen sequences of the layers' pass plans (`normlab.norms.evo_norm`), forward +
backward on (32, 64, 32, 32) fp32, without Python checks or autograd, next to the layers
themselves, timed by ``bench_mixedspeed_floor.main`` (1 thread, process time, alternating
rounds, median of per-round ratios). Three compositions of each plan:

* ``chunked``: the layers' plan, 8 samples (2 MiB) at a time over reused scratch buffers;
* ``whole``: the same kernels over the whole tensor (fresh full-size intermediates);
* ``chunked, BN-inf``: the per-(n, c) affine steps as BN-inference passes, and for S0 the
  backward's dy·(p + v x p (1 − p)) as one ``silu_backward`` (tried on this branch).

    python benchmarks/bench_mixedspeed_evo.py [--rounds 15] [--only NAME,...]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bench_mixedspeed_floor import C, H, N, W, main

aten = torch.ops.aten
L, G, K = H * W, 32, 8  # positions, S0's groups, samples per chunk


def _consts(rows: int) -> dict[str, Tensor]:
    return {"zero1": torch.zeros(1, rows), "one": torch.ones(rows), "zero": torch.zeros(rows)}


def _sums(k: dict[str, Tensor], grad: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    rows = grad.shape[0] * grad.shape[1]
    length = grad.numel() // rows
    _, sx, s = aten.native_group_norm_backward(
        grad.reshape(1, rows, length), x.reshape(1, rows, length), k["zero1"][:, :rows],
        k["one"][:rows].view(1, rows), k["one"][:rows], 1, rows, length, rows,
        [False, True, True])
    return s, sx


def _bn_inf(k: dict[str, Tensor], src: Tensor, scale: Tensor, shift: Tensor,
            out: Tensor) -> Tensor:
    rows = scale.numel()
    empty = scale.new_empty(0)
    aten.native_batch_norm.out(
        src.reshape(1, rows, -1), scale.reshape(rows), shift.reshape(rows), k["zero"][:rows],
        k["one"][:rows], False, 0.0, 0.0, out=out.view(1, rows, -1), save_mean=empty,
        save_invstd=empty)
    return out


def kernels(t: dict[str, Tensor]) -> dict[str, Callable[[], object]]:
    x, dy = t["x"].view(N, C, L), t["dy"].view(N, C, L)
    k = _consts(N * C)
    g = torch.Generator().manual_seed(2)
    v, gamma, beta = torch.rand(C, generator=g) + 0.5, torch.rand(C, generator=g) + 0.5, \
        torch.randn(C, generator=g)
    vv, gv, bv, neg_v = v.view(1, C, 1), gamma.view(1, C, 1), beta.view(1, C, 1), -v.view(1, C, 1)
    vk, gk, bk = (p.expand(N, C).contiguous() for p in (v, gamma, beta))
    pool = [torch.empty(K, C, L) for _ in range(3)]
    per_nc = torch.rand(N, C, generator=g) + 0.5  # stands for the (N, C) coefficients
    shift_nc = torch.randn(N, C, generator=g)
    left = torch.rand(C, generator=g) + 0.5
    lv = left.view(1, C, 1)

    def ranges(chunk: int) -> list[tuple[int, int]]:
        return [(i, min(i + chunk, N)) for i in range(0, N, chunk)]

    def s0(chunk: int, bn: bool) -> Callable[[], object]:
        bufs = pool if chunk == K else None

        def step() -> object:
            y, mean, rstd = aten.native_group_norm(x, None, None, N, C, L, G, 1e-5)
            y3 = y.view(N, C, L)
            for a, b in ranges(chunk):
                yc, xc = y3[a:b], x[a:b]
                F.silu(torch.mul(xc, vv, out=yc), inplace=True)
                if bn:
                    _bn_inf(k, yc, per_nc[a:b], shift_nc[a:b], yc)
                else:
                    yc.mul_(per_nc[a:b].unsqueeze(-1)).add_(bv)
            dx = torch.empty_like(x)
            for a, b in ranges(chunk):
                xc, gc, dxc = x[a:b], dy[a:b], dx[a:b]
                n = b - a
                tb, hb, ub = (w[:n] for w in bufs) if bufs else (torch.empty_like(xc)
                                                                 for _ in range(3))
                if bn:  # z, f = x p, u = h x, x(1 − p); silu_backward; BN-inf + addcmul_
                    torch.mul(xc, vv, out=tb)
                    torch.sigmoid(tb, out=hb).mul_(xc)
                    torch.mul(hb, gc, out=ub)
                    _sums(k, ub, torch.sub(xc, hb, out=hb))
                    gc.sum((0, 2))
                    _bn_inf(k, xc, per_nc[a:b], shift_nc[a:b], dxc)
                    aten.silu_backward.grad_input(gc, tb, grad_input=ub)
                    dxc.addcmul_(ub, per_nc[a:b].unsqueeze(-1))
                    continue
                p = torch.mul(xc, vv, out=tb).sigmoid_()
                h = torch.mul(gc, p, out=hb)
                _sums(k, h, xc)
                torch.addcmul(h, h, p, value=-1, out=p).mul_(xc)
                _sums(k, p, xc)
                gc.sum((0, 2))
                grouped = dxc.view(n, G, -1)
                torch.mul(xc.view(n, G, -1), rstd.view(N, G, 1)[a:b], out=grouped)
                grouped.add_(mean.view(N, G, 1)[a:b])
                dxc.add_(p.mul_(vv).add_(h).mul_(per_nc[a:b].unsqueeze(-1)))
            return dx

        return step

    def b0(chunk: int, bn: bool) -> Callable[[], object]:
        bufs = pool if chunk == K else None

        def step() -> object:
            y, _, rstd = aten.native_group_norm(x, None, None, N, C, L, C, 0.0)
            sigma = rstd.view(N, C)
            y3 = y.view(N, C, L)
            for a, b in ranges(chunk):
                yc, xc = y3[a:b], x[a:b]
                if bn:
                    _bn_inf(k, xc, vk[a:b], sigma[a:b], yc).clamp_(min=lv)
                    torch.div(xc, yc, out=yc)
                    _bn_inf(k, yc, gk[a:b], bk[a:b], yc)
                else:
                    torch.mul(xc, vv, out=yc).add_(sigma[a:b].unsqueeze(-1)).clamp_(min=lv)
                    torch.div(xc, yc, out=yc)
                    yc.mul_(gv).add_(bv)
            dx = torch.empty_like(x)
            for a, b in ranges(chunk):
                xc, gc, dxc = x[a:b], dy[a:b], dx[a:b]
                n = b - a
                db, qb, ub = (w[:n] for w in bufs) if bufs else (torch.empty_like(xc)
                                                                 for _ in range(3))
                if bn:
                    d = _bn_inf(k, xc, vk[a:b], sigma[a:b], db).clamp_(min=lv)
                else:
                    d = torch.mul(xc, vv, out=db).add_(sigma[a:b].unsqueeze(-1)).clamp_(min=lv)
                u = torch.div(xc, d, out=ub)
                q = torch.div(gc, d, out=qb)
                _sums(k, gc, u)
                tt = d.gt_(lv).mul_(u).mul_(q)
                _sums(k, tt, xc)
                torch.mul(tt.mul_(neg_v).add_(q), gv, out=dxc)
            for a, b in ranges(chunk):  # training: + x P + Q once σ_batch's gradient is known
                xc, dxc = x[a:b], dx[a:b]
                u = pool[2][: b - a] if bufs else torch.empty_like(xc)
                if bn:
                    dxc.add_(_bn_inf(k, xc, per_nc[a:b], shift_nc[a:b], u))
                else:
                    dxc.add_(torch.mul(xc, per_nc[a:b].unsqueeze(-1), out=u)
                             .add_(shift_nc[a:b].unsqueeze(-1)))
            return dx

        return step

    return {
        "S0 floor: chunked (the layer's plan)": s0(K, False),
        "S0: whole tensor": s0(N, False),
        "S0: chunked, BN-inf + silu_backward": s0(K, True),
        "B0 floor: chunked (the layer's plan, training)": b0(K, False),
        "B0: whole tensor": b0(N, False),
        "B0: chunked, BN-inf affine steps": b0(K, True),
    }


if __name__ == "__main__":
    raise SystemExit(main(kernels_of=kernels, description=__doc__.splitlines()[0]))
