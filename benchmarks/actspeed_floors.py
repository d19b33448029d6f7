"""Kernel floors of the issue 12 / 14 activation layers, for bench_actspeed.py.

Each entry builds, for a channels-first (N, C, H, W) float32 x and grad_output g, a step that
runs the bare ATen kernels of one pass plan, forward + backward, parameter gradients included:
no input checks, no autograd, no dtype care, whole-tensor passes unless the name says chunked.
Outputs and ∂x are fresh tensors (a layer must return fresh ones); scratch is reused. Before
timing, `check` compares each plan's outputs with the first plan of its layer (so a fast wrong
plan cannot pass for a floor).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

aten = torch.ops.aten
Step = Callable[[], object]
Plan = Callable[[Tensor, Tensor], Callable[[], tuple[Tensor, ...]]]
EMPTY = torch.empty(0)


def _bn_inf(x3: Tensor, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """x·a + b per (n, c) row of an (N, C, L) x: ATen's BN-inference kernel on (1, N·C, L)."""
    n, c, length = x3.shape
    rows = n * c
    zero, one = torch.zeros(rows), torch.ones(rows)
    flat = x3.view(1, rows, length)
    if out is None:
        return torch.batch_norm(flat, a.reshape(rows), b.reshape(rows), zero, one, False, 0.0,
                                0.0, False).view(n, c, length)
    aten.native_batch_norm.out(flat, a.reshape(rows), b.reshape(rows), zero, one, False, 0.0,
                               0.0, out=out.view(1, rows, length), save_mean=EMPTY,
                               save_invstd=EMPTY)
    return out


def _row_sums(g3: Tensor, x3: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_L g, Σ_L g·x) per (n, c) row in one fused read (group-norm backward, mean 0, 1/σ 1)."""
    n, c, length = x3.shape
    rows = n * c
    one = torch.ones(rows)
    _, sgx, sg = aten.native_group_norm_backward(
        g3.reshape(1, rows, length), x3.reshape(1, rows, length), torch.zeros(1, rows),
        one.view(1, rows), one, 1, rows, length, rows, [False, True, True])
    return sg.view(n, c), sgx.view(n, c)


# -- Filter Response Norm + TLU: z = max(γ r x + β, τ), r = (mean_L x² + ε)^-1/2 -----------------

def _frn_setup(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, int, Tensor, Tensor, Tensor]:
    n, c = x.shape[:2]
    x3, g3 = x.reshape(n, c, -1), g.reshape(n, c, -1)
    gen = torch.Generator().manual_seed(1)
    gamma = torch.rand(c, generator=gen) + 0.5
    beta = torch.randn(c, generator=gen) * 0.1
    tau = torch.randn(c, generator=gen) * 0.1
    return x3, g3, x3.shape[2], gamma, beta, tau


def _frn_forward(x3: Tensor, length: int, gamma: Tensor, beta: Tensor, tau: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    n = x3.shape[0]
    r = torch.linalg.vector_norm(x3, dim=2).square_().div_(length).add_(1e-6).rsqrt_()
    s = r * gamma
    y = _bn_inf(x3, s, beta.repeat(n))
    return y.clamp_(min=tau.view(1, -1, 1)), r, s


def frn_masked_mul(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """Backward as the layer's: mask by mul, gt_, mul_; Σg; fused sums; ∂x by mul + addcmul_."""
    x3, g3, length, gamma, beta, tau = _frn_setup(x, g)
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        y, r, s = _frn_forward(x3, length, gamma, beta, tau)
        dz = torch.mul(x3, s.unsqueeze(-1), out=work).gt_((tau - beta).view(1, -1, 1)).mul_(g3)
        sum_g = g3.sum((0, 2))
        sum_dz, k = _row_sums(dz, x3)
        dx = torch.mul(dz, s.unsqueeze(-1)).addcmul_(x3, (-s * r * r * k / length).unsqueeze(-1))
        return y, dx, (r * k).sum(0), sum_dz.sum(0), sum_g - sum_dz.sum(0)

    return step


def frn_threshold_backward(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """Mask as t = BN-inference(x; s, β − τ) then ``threshold_backward(g, t, 0)``."""
    x3, g3, length, gamma, beta, tau = _frn_setup(x, g)
    work = torch.empty_like(x3)
    n = x3.shape[0]

    def step() -> tuple[Tensor, ...]:
        y, r, s = _frn_forward(x3, length, gamma, beta, tau)
        t = _bn_inf(x3, s, (beta - tau).repeat(n), out=work)
        dz = aten.threshold_backward.grad_input(g3, t, 0.0, grad_input=t)
        sum_g = g3.sum((0, 2))
        sum_dz, k = _row_sums(dz, x3)
        dx = torch.mul(dz, s.unsqueeze(-1)).addcmul_(x3, (-s * r * r * k / length).unsqueeze(-1))
        return y, dx, (r * k).sum(0), sum_dz.sum(0), sum_g - sum_dz.sum(0)

    return step


def frn_group_norm_backward(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """Mask by threshold_backward; ∂x, r·K and Σdz from one ``native_group_norm_backward`` on
    the (1, N·C, L) view (mean 0, 1/σ = r, weight γ), plus its mean term added back per row."""
    x3, g3, length, gamma, beta, tau = _frn_setup(x, g)
    work = torch.empty_like(x3)
    n, c = x3.shape[:2]
    rows = n * c
    zero = torch.zeros(1, rows)

    def step() -> tuple[Tensor, ...]:
        y, r, s = _frn_forward(x3, length, gamma, beta, tau)
        t = _bn_inf(x3, s, (beta - tau).repeat(n), out=work)
        dz = aten.threshold_backward.grad_input(g3, t, 0.0, grad_input=t)
        sum_g = g3.sum((0, 2))
        dx, rk, sum_dz = aten.native_group_norm_backward(
            dz.view(1, rows, length), x3.view(1, rows, length), zero, r.view(1, rows),
            gamma.repeat(n), 1, rows, length, rows, [True, True, True])
        dx = dx.view(n, c, length).add_((s * sum_dz.view(n, c) / length).unsqueeze(-1))
        d_beta = sum_dz.view(n, c).sum(0)
        return y, dx, rk.view(n, c).sum(0), d_beta, sum_g - d_beta

    return step


def frn_saved_mask(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """The forward also keeps the bool mask [z > τ] (x + mask = 1.25x the input saved);
    the backward's dz = g·mask is one ``mul`` (no recomputation of s x + β)."""
    x3, g3, length, gamma, beta, tau = _frn_setup(x, g)

    def step() -> tuple[Tensor, ...]:
        y, r, s = _frn_forward(x3, length, gamma, beta, tau)
        mask = y > tau.view(1, -1, 1)
        dz = torch.mul(g3, mask)
        sum_g = g3.sum((0, 2))
        sum_dz, k = _row_sums(dz, x3)
        dx = dz.mul_(s.unsqueeze(-1)).addcmul_(x3, (-s * r * r * k / length).unsqueeze(-1))
        return y, dx, (r * k).sum(0), sum_dz.sum(0), sum_g - sum_dz.sum(0)

    return step


def frn_no_tlu(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """FRN alone (no TLU): ν², one BN-inference pass; fused sums, then ∂x by one BN-inference
    pass x·P and ``addcmul_`` of g·s (reference point: the TLU's extra cost)."""
    x3, g3, length, gamma, beta, _ = _frn_setup(x, g)
    n = x3.shape[0]

    def step() -> tuple[Tensor, ...]:
        r = torch.linalg.vector_norm(x3, dim=2).square_().div_(length).add_(1e-6).rsqrt_()
        s = r * gamma
        y = _bn_inf(x3, s, beta.repeat(n))
        sum_g, k = _row_sums(g3, x3)
        dx = torch.mul(g3, s.unsqueeze(-1)).addcmul_(x3, (-s * r * r * k / length).unsqueeze(-1))
        return y, dx, (r * k).sum(0), sum_g.sum(0)

    return step


FRN: dict[str, Plan] = {
    "floor: mask by mul/gt_/mul_, sums, mul + addcmul_": frn_masked_mul,
    "floor: mask by BN-inf + threshold_backward": frn_threshold_backward,
    "floor: threshold_backward + GN backward for ∂x": frn_group_norm_backward,
    "floor: bool mask saved in forward": frn_saved_mask,
}


# -- Dynamic Tanh: y = γ tanh(αx) + β = 2γ·sigmoid(2αx) + (β − γ) --------------------------------

def _dyt_setup(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    n, c = x.shape[:2]
    gen = torch.Generator().manual_seed(2)
    gamma = torch.rand(c, generator=gen) + 0.5
    beta = torch.randn(c, generator=gen) * 0.1
    return x.reshape(n, c, -1), g.reshape(n, c, -1), gamma, beta, 0.5


def _sigmoid(x3: Tensor, k: float, out: Tensor | None = None) -> Tensor:
    """sigmoid(k·x) in one fused pass (softplus_backward with grad 1, the layer's kernel)."""
    one = torch.ones((), dtype=x3.dtype).expand_as(x3)
    if out is None:
        return aten.softplus_backward(one, x3, k, 30.0)
    return aten.softplus_backward.grad_input(one, x3, k, 30.0, grad_input=out)


def dyt_sigmoid(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """The layer's plan, whole tensor: s twice (forward, backward), y = BN-inf(s),
    sums (g, s) and (h, x), h = sigmoid_backward(g, s), ∂x = h·4αγ."""
    x3, g3, gamma, beta, alpha = _dyt_setup(x, g)
    n = x3.shape[0]
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        y = _bn_inf(_sigmoid(x3, 2 * alpha, out=work), (2 * gamma).repeat(n),
                    (beta - gamma).repeat(n))
        s = _sigmoid(x3, 2 * alpha, out=work)
        sum_g, sum_gs = _row_sums(g3, s)
        dx = aten.sigmoid_backward(g3, s)
        _, sum_hx = _row_sums(dx, x3)
        dx.mul_((4 * alpha * gamma).view(1, -1, 1))
        d_beta = sum_g.sum(0)
        return y, dx, 4 * (sum_hx.sum(0) * gamma).sum(), 2 * sum_gs.sum(0) - d_beta, d_beta

    return step


def dyt_tanh(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """aten.tanh + aten.tanh_backward: t = tanh(αx) twice, y = BN-inf(t; γ, β),
    h = tanh_backward(g, t) = g(1 − t²), ∂x = h·αγ."""
    x3, g3, gamma, beta, alpha = _dyt_setup(x, g)
    n = x3.shape[0]
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        y = _bn_inf(torch.mul(x3, alpha, out=work).tanh_(), gamma.repeat(n), beta.repeat(n))
        t = torch.mul(x3, alpha, out=work).tanh_()
        sum_g, sum_gt = _row_sums(g3, t)
        dx = aten.tanh_backward(g3, t)
        _, sum_hx = _row_sums(dx, x3)
        dx.mul_((alpha * gamma).view(1, -1, 1))
        return y, dx, (sum_hx.sum(0) * gamma).sum(), sum_gt.sum(0), sum_g.sum(0)

    return step


def dyt_half_saved(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """s saved for the first (N − 1) // 2 samples (x + 0.47 x = 1.47x the input saved), so the
    backward recomputes the sigmoid for the other samples only."""
    x3, g3, gamma, beta, alpha = _dyt_setup(x, g)
    n = x3.shape[0]
    k = (n - 1) // 2
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        kept = _sigmoid(x3[:k], 2 * alpha)  # fresh: saved for the backward
        _sigmoid(x3[k:], 2 * alpha, out=work[k:])
        work[:k].copy_(kept)  # stands for the chunked affine reading kept directly
        y = _bn_inf(work, (2 * gamma).repeat(n), (beta - gamma).repeat(n))
        _sigmoid(x3[k:], 2 * alpha, out=work[k:])
        work[:k].copy_(kept)
        s = work
        sum_g, sum_gs = _row_sums(g3, s)
        dx = aten.sigmoid_backward(g3, s)
        _, sum_hx = _row_sums(dx, x3)
        dx.mul_((4 * alpha * gamma).view(1, -1, 1))
        d_beta = sum_g.sum(0)
        return y, dx, 4 * (sum_hx.sum(0) * gamma).sum(), 2 * sum_gs.sum(0) - d_beta, d_beta

    return step


# -- LpNorm p = 1 over the sample: y = γ (x − μ)/d + β, d = mean |x − μ| + ε -------------------

def lp1_whole(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """Whole-tensor passes: Σx; t = x − μ; Σ|t|; y = BN-inf(x); backward t = x − μ, fused
    sums (dy, t), u = sign(t), Σu, ∂x = BN-inf(u; K, c) + dy·γ/d (``addcmul_``)."""
    n, c = x.shape[:2]
    x3, g3 = x.reshape(n, c, -1), g.reshape(n, c, -1)
    gen = torch.Generator().manual_seed(3)
    gamma, beta = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen) * 0.1
    m = x3[0].numel()
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        xs = x3.view(n, -1)
        mu = xs.sum(1).div_(m)
        t = torch.sub(xs, mu.unsqueeze(-1), out=work.view(n, -1))
        inv = t.abs_().sum(1).div_(m).add_(1e-5).reciprocal_()
        scale = inv.unsqueeze(-1) * gamma
        y = _bn_inf(x3, scale, beta - mu.unsqueeze(-1) * scale)
        t = torch.sub(xs, mu.unsqueeze(-1), out=work.view(n, -1)).view(n, c, -1)
        sum_dy, sum_dyt = _row_sums(g3, t)
        gs, s = (sum_dy * gamma).sum(1), (sum_dyt * gamma).sum(1)
        u_sum = t.sign_().sum((1, 2))
        coef = s * inv.square() / m
        shift = (coef * u_sum / m - gs * inv / m).unsqueeze(-1).expand(n, c)
        dx = _bn_inf(t, (-coef).unsqueeze(-1).expand(n, c), shift)
        dx.addcmul_(g3, scale.unsqueeze(-1))
        return y, dx, (sum_dyt * inv.unsqueeze(-1)).sum(0), sum_dy.sum(0)

    return step


# -- RMSNorm over C at each position (NCHW): y = γ_c x r_p, r = (mean_C x² + ε)^-1/2 ------------

def rms_gemv_whole(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """The layer's GEMV plan on the whole tensor (no chunks): x², bmm, x·r, ·γ; backward g·x,
    bmm (s), ∂γ by a second bmm against r, ∂x = γ r g + x·coef."""
    n, c = x.shape[:2]
    x3, g3 = x.reshape(n, c, -1), g.reshape(n, c, -1)
    gamma = torch.rand(c, generator=torch.Generator().manual_seed(4)) + 0.5
    mean_row = torch.full((n, 1, c), 1.0 / c)
    work = torch.empty_like(x3)

    def step() -> tuple[Tensor, ...]:
        r = torch.bmm(mean_row, torch.square(x3, out=work)).add_(1e-6).rsqrt_()
        y = torch.mul(x3, r).mul_(gamma.view(1, c, 1))
        q = torch.mul(g3, x3, out=work)
        coef = torch.bmm(gamma.view(1, 1, c).expand(n, 1, c), q).mul_(r.pow(3)).div_(-c)
        d_gamma = torch.bmm(q, r.transpose(1, 2)).sum((0, 2))
        dx = torch.mul(g3, r).mul_(gamma.view(1, c, 1)).addcmul_(x3, coef)
        return y, dx, d_gamma

    return step


def rms_nhwc_native(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """torch's RMSNorm over the last dim on an NHWC copy (``F.rms_norm`` with autograd: ATen's
    fused CPU forward, no fused CPU backward in torch 2.13), copies back to NCHW."""
    n, c = x.shape[:2]
    gamma = torch.rand(c, generator=torch.Generator().manual_seed(4)) + 0.5

    def step() -> tuple[Tensor, ...]:
        with torch.enable_grad():
            xl = x.permute(0, 2, 3, 1).contiguous().requires_grad_()
            w = gamma.detach().requires_grad_()
            yl = torch.nn.functional.rms_norm(xl, [c], w, 1e-6)
            dxl, d_gamma = torch.autograd.grad(yl, (xl, w), g.permute(0, 2, 3, 1).contiguous())
        y = yl.detach().permute(0, 3, 1, 2).contiguous()
        dx = dxl.permute(0, 3, 1, 2).contiguous()
        return y.reshape(n, c, -1), dx.reshape(n, c, -1), d_gamma

    return step


# -- StreamingNorm's pass plan: per-channel y = x·A + B from the batch moments ------------------
# (the mixture with the accumulated history is C-sized arithmetic, left out of the floor)

def _bn_setup(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, c = x.shape[:2]
    gen = torch.Generator().manual_seed(5)
    return (x.reshape(n, c, -1), g.reshape(n, c, -1), torch.rand(c, generator=gen) + 0.5,
            torch.randn(c, generator=gen) * 0.1)


def _per_channel_backward(x3: Tensor, g3: Tensor, mean: Tensor, rstd: Tensor, scale: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """BN's backward as the layer writes it: fused per-(n, c) sums, then ∂x = BN-inf(x; P, Q)
    + dy·A (``addcmul_``)."""
    n, _, length = x3.shape
    sum_dy, sum_dyx = (t.sum(0) for t in _row_sums(g3, x3))
    centered = sum_dyx - mean * sum_dy
    count = n * length
    g_mean, g_var = -scale * sum_dy, -0.5 * scale * rstd.square() * centered
    p = g_var * (2.0 / count)
    q = g_mean / count - p * mean
    dx = _bn_inf(x3, p.repeat(n), q.repeat(n)).addcmul_(g3, scale.view(1, -1, 1))
    return dx, rstd * centered, sum_dy


def streaming_plan(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """The layer's plan: per-(n, c) moments from native_group_norm (its x̂ buffer reused for
    y), merged per channel, y = BN-inf(x; A, B); backward `_per_channel_backward`."""
    x3, g3, gamma, beta = _bn_setup(x, g)
    n, c, length = x3.shape

    def step() -> tuple[Tensor, ...]:
        x_hat, mean_nc, rstd_nc = aten.native_group_norm(x3, None, None, n, c, length, c, 0.0)
        mean_nc, var_nc = mean_nc.view(n, c), rstd_nc.view(n, c).pow(-2)
        mean = mean_nc.mean(0)
        var = var_nc.mean(0) + (mean_nc - mean).square().mean(0)
        rstd = (var + 1e-5).rsqrt()
        scale = rstd * gamma
        y = _bn_inf(x3, scale.repeat(n), (beta - mean * scale).repeat(n), out=x_hat)
        dx, d_gamma, d_beta = _per_channel_backward(x3, g3, mean, rstd, scale)
        return y, dx, d_gamma, d_beta

    return step


def streaming_one_pass_moments(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """Moments as Σx and Σx² per row (``sum`` + ``vector_norm``, no x̂ written; one-pass
    variance, less accurate when |μ| ≫ σ), y = BN-inf into a fresh tensor."""
    x3, g3, gamma, beta = _bn_setup(x, g)
    n, _, length = x3.shape
    count = n * length

    def step() -> tuple[Tensor, ...]:
        mean = x3.sum(2).sum(0) / count
        var = torch.linalg.vector_norm(x3, dim=2).square_().sum(0) / count - mean.square()
        rstd = (var + 1e-5).rsqrt()
        scale = rstd * gamma
        y = _bn_inf(x3, scale.repeat(n), (beta - mean * scale).repeat(n))
        dx, d_gamma, d_beta = _per_channel_backward(x3, g3, mean, rstd, scale)
        return y, dx, d_gamma, d_beta

    return step


def streaming_native_bn(x: Tensor, g: Tensor) -> Callable[[], tuple[Tensor, ...]]:
    """ATen's own BatchNorm kernels, training mode (native_batch_norm + its backward)."""
    x4 = x.contiguous()
    _, g3, gamma, beta = _bn_setup(x, g)
    g4 = g3.view_as(x4)

    def step() -> tuple[Tensor, ...]:
        y, mean, invstd = aten.native_batch_norm(x4, gamma, beta, None, None, True, 0.0, 1e-5)
        dx, d_gamma, d_beta = aten.native_batch_norm_backward(
            g4, x4, gamma, None, None, mean, invstd, True, 1e-5, [True, True, True])
        n, c = x4.shape[:2]
        return y.view(n, c, -1), dx.view(n, c, -1), d_gamma, d_beta

    return step


# -- parts: the layer's chunked FRN + TLU backward with one pass left out (not a correct
# gradient; its time shows what that pass costs in situ), and DyT's sigmoid passes alone -----

def frn_backward_without(skip: str) -> Callable[[Tensor, Tensor], Step]:
    """FRN + TLU's backward as the layer runs it (chunks of 8 samples), without ``skip``:
    'mask' (dz = g), 'sum_g' (Σg for ∂τ), 'sums' (the fused Σdz, Σdz·x), 'addcmul' (the
    x term of ∂x); '' leaves nothing out."""
    def build(x: Tensor, g: Tensor) -> Step:
        x3, g3, length, gamma, beta, tau = _frn_setup(x, g)
        n, c = x3.shape[:2]
        r = torch.linalg.vector_norm(x3, dim=2).square_().div_(length).add_(1e-6).rsqrt_()
        scale, thr = r * gamma, (tau - beta).view(1, -1, 1)
        coef = -scale * r * r / length

        def step() -> Tensor:
            dx = torch.empty_like(x3)
            k_sum, g_sum = torch.zeros(n, c), torch.zeros(c)
            for a in range(0, n, 8):
                xc, gc, dxc, rs = x3[a:a + 8], g3[a:a + 8], dx[a:a + 8], scale[a:a + 8, :, None]
                dz = gc if skip == "mask" else torch.mul(xc, rs, out=dxc).gt_(thr).mul_(gc)
                if skip != "sum_g":
                    g_sum += gc.sum((0, 2))
                if skip != "sums":
                    k_sum[a:a + 8] = _row_sums(dz, xc)[1]
                torch.mul(dz, rs, out=dxc) if skip == "mask" else dxc.mul_(rs)
                if skip != "addcmul":
                    dxc.addcmul_(xc, (coef[a:a + 8] * k_sum[a:a + 8]).unsqueeze(-1))
            return dx

        return step

    return build


def dyt_sigmoids(with_sums: bool) -> Callable[[Tensor, Tensor], Step]:
    """The two full-tensor sigmoid passes DyT needs (forward, and its recomputation in the
    backward), and with ``with_sums`` one fused sums pass over dy and s (∂γ = Σ dy·tanh and
    ∂β = Σ dy per channel read dy once more, since no sigmoid kernel reduces); nothing else:
    lower bounds of any plan that saves only x."""
    def build(x: Tensor, g: Tensor) -> Step:
        x3, g3 = x.reshape(x.shape[0], x.shape[1], -1), g.reshape(g.shape[0], g.shape[1], -1)
        work = torch.empty_like(x3)

        def step() -> None:
            _sigmoid(x3, 1.0, out=torch.empty_like(x3))
            s = _sigmoid(x3, 1.0, out=work)
            if with_sums:
                _row_sums(g3, s)

        return step

    return build


PARTS: dict[str, dict[str, Callable[[Tensor, Tensor], Step]]] = {
    "frn": {f"part: chunked backward only{'' if not k else ', without ' + k}":
            frn_backward_without(k) for k in ("", "mask", "sum_g", "sums", "addcmul")},
    "dyt": {"part: the two sigmoid passes alone": dyt_sigmoids(False),
            "part: the two sigmoid passes and one sums pass": dyt_sigmoids(True)},
}


def check(plans: dict[str, Plan], x: Tensor, g: Tensor) -> None:
    """Every plan's outputs equal the first plan's (float32 tolerance)."""
    first = None
    for name, plan in plans.items():
        out = plan(x, g)()
        if first is None:
            first = out
            continue
        for i, (a, b) in enumerate(zip(first, out, strict=True)):
            if not torch.allclose(a, b, rtol=1e-3, atol=1e-3):
                raise AssertionError(f"{name}: output {i} differs by {(a - b).abs().max()}")


def _steps(plans: dict[str, Plan]) -> dict[str, Callable[[Tensor, Tensor], Step]]:
    def make(plan: Plan) -> Callable[[Tensor, Tensor], Step]:
        def build(x: Tensor, g: Tensor) -> Step:
            check(plans, x.contiguous(), g.contiguous())
            return plan(x.contiguous(), g.contiguous())
        return build

    return {name: make(plan) for name, plan in plans.items()}


FLOORS: dict[str, dict[str, Callable[[Tensor, Tensor], Step]]] = {
    "frn": _steps(FRN),
    "frn_notlu": _steps({"floor: sums + BN-inf ∂x": frn_no_tlu}),
    "dyt": _steps({"floor: sigmoid plan, whole tensor": dyt_sigmoid,
                   "floor: tanh + tanh_backward": dyt_tanh,
                   "floor: s half saved (1.47x)": dyt_half_saved}),
    "lp": _steps({"floor: whole-tensor passes": lp1_whole}),
    "streaming": _steps({"floor: the layer's plan (GN moments, BN-inf, sums, BN-inf + addcmul_)":
                         streaming_plan,
                         "floor: one-pass moments (sum + vector_norm)": streaming_one_pass_moments,
                         "composition: native_batch_norm + backward": streaming_native_bn}),
    "rms": _steps({"floor: GEMV plan, whole tensor": rms_gemv_whole,
                   "composition: NHWC copy + F.rms_norm": rms_nhwc_native}),
}
