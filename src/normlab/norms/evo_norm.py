"""EvoNorm-B0 and EvoNorm-S0 (Liu, Brock, Simonyan & Le 2020, arXiv:2004.02967).

Normalization and activation in one layer, found by evolutionary search. Both follow the
official TensorFlow code (``tensorflow/tpu``, ``models/official/resnet/resnet_model.py``,
function ``evonorm``), which is the specification where the paper is silent:

* B0:  y = x / max(sqrt(s²_batch + ε), v·x + sqrt(s²_inst + ε)) · γ + β
* S0:  y = x · sigmoid(v·x) / sqrt(s²_group + ε) · γ + β
* ``nonlinearity=False``: y = γ·x + β, with no ``v`` (and, for B0, no moving variance).

Each method is an `Epilogue` of `normlab.norms._norm_activation`, statistics from one
group-norm kernel call (G = C for B0's instance moments, merged exactly into the batch moments).
Speed (2-core VM, (32, 64, 32, 32) fp32, training forward + backward): 3-4.5x
``torch.nn.GroupNorm(32, 64)``, 3.3-10x faster than ``benchmarks/eager/evo_norm.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import merge_equal_counts
from normlab.core.running import update_running_ema_
from normlab.norms._base import Norm, from_channels_first, to_channels_first
from normlab.norms._chunked import per_row
from normlab.norms._norm_activation import (
    Epilogue,
    Rows,
    add_rows_,
    affine_only,
    channel_affine_,
    check_slope_functional,
    norm_or_affine,
    safe_slope,
    swish_,
)
from normlab.norms._per_instance import broadcast, cached_sums, group_statistics

__all__ = ["EvoNormB0", "EvoNormS0", "evo_norm_b0", "evo_norm_s0", "resolve_groups"]


def resolve_groups(num_features: int, num_groups: int | None, group_size: int | None) -> int:
    """S0's number of groups: the reference's rule, or C / ``group_size``.

    The reference decrements ``num_groups`` (32 by default) until it divides C (``_group_std``
    in resnet_model.py): C = 6 gives G = 6, C = 24 gives 24. ``group_size`` must divide C.
    """
    if group_size is not None:
        return errors.check_groups(num_features, num_groups, group_size)
    groups = errors.check_num_features(32 if num_groups is None else num_groups, "num_groups")
    return errors.check_groups(num_features, None, None, max_groups=groups)


# -- EvoNorm-B0 -------------------------------------------------------------------------------


class _B0(Epilogue):
    """EvoNorm-B0 of a contiguous channels-first x with the analytic backward.

    With D = max(L, R), L = σ_batch (per c), R = v·x + σ_inst, m = [R > L] (ties: m = 0, the
    batch branch, like ``tf.maximum``'s gradient), q = dy/D, u = x/D and t = m·q·u:

    $$ ∂x = γ(q − v t) + x P + Q,\\quad ∂γ = Σ q x,\\quad ∂β = Σ dy,\\quad ∂v = −γ Σ t x, $$

    where P, Q gather the gradients of σ_inst (−γ Σ_S t per (n, c)) and, in training, of
    σ_batch (−γ/L · Σ (1 − m) q x, from Σ q x, Σ t and Σ t x) through the biased variances.
    Passes: forward 1 statistics + 6 elementwise; backward 10 elementwise + 2 fused sums
    (Σ dy, Σ dy·x/D; Σ t, Σ t·x), in training + 3 to add x P + Q once σ_batch's gradient is
    known. Saved: x and (N, C) statistics; the mask m is recomputed.
    """

    __slots__ = ("eps", "running_var", "training")

    def __init__(self, eps: float, running_var: Tensor | None) -> None:
        self.eps, self.running_var, self.training = eps, running_var, running_var is None

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple, tuple]:
        v, weight, bias = params
        rows, eps = Rows(x), self.eps
        acc = rows.acc
        # instance moments; ε = 0 gives σ² exactly as (1/σ)⁻² (a constant row: 1/σ = inf, σ² = 0)
        y, mean, rstd = group_statistics(x, rows.c, 0.0)
        var = rstd.pow(-2)
        sigma_inst = (var + eps).sqrt()
        if self.running_var is None:  # batch moments: the exact merge of the instance moments
            batch_mean, batch_var, _ = merge_equal_counts(mean, var, 0, keepdim=False)
            left = (batch_var + eps).sqrt()
        else:
            batch_mean, batch_var = None, mean.new_empty(0)
            left = (self.running_var.to(acc) + eps).sqrt()
        self.running_var = None  # not kept alive by the graph
        ww, bw = rows.cast(weight), rows.cast(bias)
        lv, vv = per_row(left), per_row(v.to(acc))  # type: ignore[union-attr]
        for a, b, yc, (xc,), _ in rows.sweep(y.view_as(rows.x3), (rows.x3,)):
            torch.mul(xc, vv, out=yc).add_(per_row(sigma_inst[a:b])).clamp_(min=lv)  # D
            torch.div(xc, yc, out=yc)
            channel_affine_(yc, ww, bw)
        return y, (batch_var,), (mean, sigma_inst, left, batch_mean)

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Tensor | None]:
        v, weight, _ = params
        mean, sigma_inst, left, batch_mean = saved
        n, c, length, acc = rows.n, rows.c, rows.length, rows.acc
        vw = v.to(acc)
        gamma = torch.ones_like(vw) if weight is None else weight.to(acc)
        # two sweeps over ∂x in training: low-precision input gets a float32 ∂x until the end
        wide = self.training and rows.low
        dx = (rows.new(n, c, length) if wide else torch.empty_like(rows.x3)) if wanted[0] else None
        sums = cached_sums(rows.chunks.shape[0] * c, acc, rows.x3.device)
        sum_g, sum_qx, sum_t, sum_tx = (rows.new(n, c) for _ in range(4))
        lv, vv, gv, neg_v = per_row(left), per_row(vw), per_row(gamma), per_row(-vw)
        inst_scale = -gamma / (sigma_inst * length)  # times Σ t: σ_inst's share of P
        sources = (rows.x3, grad.view_as(rows.x3))
        for a, b, dxc, (xc, gc), (d_buf, q_buf, u_buf) in rows.sweep(dx, sources, 3):
            d = torch.mul(xc, vv, out=d_buf).add_(per_row(sigma_inst[a:b])).clamp_(min=lv)
            u = torch.div(xc, d, out=u_buf)  # x/D
            q = torch.div(gc, d, out=q_buf)  # dy/D
            sum_g[a:b], sum_qx[a:b] = sums(gc, u)  # Σ dy and Σ dy·x/D
            t = d.gt_(lv).mul_(u).mul_(q)  # m = [D > L] = [R > L]; t = m·q·u
            sum_t[a:b], sum_tx[a:b] = sums(t, xc)
            if dxc is None:
                continue
            # ∂x = γ (q − v t) + x P + Q; in training P and Q need the whole batch, and a
            # second sweep adds x P + Q
            torch.mul(t.mul_(neg_v).add_(q), gv, out=dxc)
            if not self.training:
                p = inst_scale[a:b] * sum_t[a:b]
                add_rows_(dxc, xc, p, -mean[a:b] * p, u)
        if dx is not None and self.training:  # σ_batch depends on the whole batch
            branch = sum_qx - vw * sum_tx - sigma_inst * sum_t  # Σ (1 − m)·q·x per (n, c)
            d_left = -(gamma / left) * branch.sum(0)  # (C,)
            p_batch = d_left / (left * n * length)
            p = inst_scale * sum_t + p_batch
            shift = -mean * (p - p_batch) - batch_mean * p_batch
            for a, b, dxc, (xc,), (u,) in rows.sweep(dx, (rows.x3,), 1):
                add_rows_(dxc, xc, p[a:b], shift[a:b], u)
        grad_v = -(gamma * sum_tx.sum(0)) if wanted[1] else None
        return [dx, grad_v, sum_qx.sum(0) if wanted[2] else None,
                sum_g.sum(0) if wanted[3] else None]

    def eager(self, saved: list[Any], x: Tensor, *params: Tensor | None) -> Tensor:
        """Differentiable B0 of a channels-first x (float32 or wider): double backward only;
        σ_batch is the constant saved one in eval."""
        left = saved[2] if not self.training else (
            x.var(dim=(0, *range(2, x.dim())), correction=0) + self.eps).sqrt()
        return b0_composed(x, left, *params, self.eps)  # type: ignore[arg-type]


def b0_composed(
    x: Tensor, left: Tensor, v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """B0 of a channels-first x (float32 or wider) in plain autograd ops, with σ_batch =
    ``left`` (C,) given: `_B0`'s double backward, and training under `normlab.sync` (``left``
    from the cross-replica moments, so gradients flow through their merge)."""
    dims = tuple(range(2, x.dim()))
    inst_var = (  # an empty batch (a replica without samples) has no variance to compute
        x.var(dim=dims, correction=0, keepdim=True) if dims and x.numel() else torch.zeros_like(x)
    )
    left = broadcast(left.to(x.dtype), x.dim())
    right = broadcast(v, x.dim()) * x + (inst_var + eps).sqrt()
    # ties go to the batch branch, as tf.maximum's gradient sends them to its first argument
    return affine_only(x / torch.where(right > left, right, left), weight, bias)


# -- EvoNorm-S0 -------------------------------------------------------------------------------


class _S0(Epilogue):
    """EvoNorm-S0 of a contiguous channels-first x with the analytic backward.

    With p = sigmoid(v x), f = x p, r = 1/σ_group per (n, g), a = r γ per (n, c),
    h = dy·p and t = h·(1 − p)·x:

    $$ ∂x = a (h + v t) + x P + Q,\\quad ∂γ = Σ_n r Σ_S h x,\\quad ∂v = Σ_n a Σ_S t x, $$

    since ∂f/∂x = p + v x p (1 − p) and ∂f/∂v = x² p (1 − p); P = −r³K/M and Q = −P μ_group,
    K = Σ_{c∈g} γ_c Σ_S h x, M = (C/G)·|S|, carry the gradient of σ_group. No division by v
    anywhere, so v = 0 (where S0 is (x/2)/σ_group·γ + β) is exact in both directions. Passes:
    forward 1 statistics + 5 elementwise (`swish_`); backward 11 elementwise + 2 fused sums
    (Σ h·x, Σ t·x). Saved: x and (N, G) statistics.
    """

    __slots__ = ("eps", "groups")

    def __init__(self, groups: int, eps: float) -> None:
        self.groups, self.eps = groups, eps

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple, tuple]:
        v, weight, bias = params
        rows = Rows(x)
        acc = rows.acc
        y, mean, rstd = group_statistics(x, self.groups, self.eps)
        v_safe = safe_slope(v.to(acc))  # type: ignore[union-attr]
        scale = rstd.repeat_interleave(rows.c // self.groups, dim=1) / v_safe  # (N, C)
        if weight is not None:
            scale = scale * weight.to(acc)
        beta, slope = rows.cast(bias), per_row(v_safe)
        for a, b, yc, (xc,), _ in rows.sweep(y.view_as(rows.x3), (rows.x3,)):
            channel_affine_(swish_(xc, slope, yc), scale[a:b], beta)
        return y, (), (mean, rstd)

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Tensor | None]:
        v, weight, _ = params
        mean, rstd = saved
        groups, n, c, acc = self.groups, rows.n, rows.c, rows.acc
        size = c // groups
        sums = cached_sums(rows.chunks.shape[0] * c, acc, rows.x3.device)
        vw = v.to(acc)
        gamma = torch.ones_like(vw) if weight is None else weight.to(acc)
        r = rstd.repeat_interleave(size, dim=1)  # (N, C)
        a_all = r * gamma
        factor = -rstd.pow(3) / (size * rows.length)  # P = factor · K per (n, g)
        dx = torch.empty_like(rows.x3) if wanted[0] else None
        sum_hx, sum_tx, sum_g = rows.new(n, c), rows.new(n, c), rows.new(c, zero=True)
        vv = per_row(vw)
        sources = (rows.x3, grad.view_as(rows.x3))
        for a, b, dxc, (xc, gc), (t_buf, h_buf) in rows.sweep(dx, sources, 2):
            k = b - a
            t = torch.mul(xc, vv, out=t_buf).sigmoid_()  # p
            h = torch.mul(gc, t, out=h_buf)  # h = dy·p
            _, sum_hx[a:b] = sums(h, xc)
            torch.addcmul(h, h, t, value=-1, out=t).mul_(xc)  # t = h·(1 − p)·x
            _, sum_tx[a:b] = sums(t, xc)
            sum_g += gc.sum((0, 2))
            if dxc is None:
                continue
            p = factor[a:b] * (gamma * sum_hx[a:b]).view(k, groups, size).sum(-1)  # (k, G)
            # ∂x = x P + Q + a (h + v t) in binary passes; P and Q per (n, g) broadcast over
            # the (k, G, C/G·L) view
            grouped = dxc.view(k, groups, -1)
            torch.mul(xc.view(k, groups, -1), p.unsqueeze(-1), out=grouped)
            grouped.add_((-p * mean[a:b]).unsqueeze(-1))
            dxc.add_(t.mul_(vv).add_(h).mul_(per_row(a_all[a:b])))
        return [dx, (a_all * sum_tx).sum(0) if wanted[1] else None,
                (r * sum_hx).sum(0) if wanted[2] else None, sum_g if wanted[3] else None]

    def eager(self, saved: list[Any], x: Tensor, *params: Tensor | None) -> Tensor:
        """Differentiable S0 of a channels-first x (float32 or wider): double backward only."""
        v, weight, bias = params
        grouped = x.reshape(x.shape[0], self.groups, -1)
        sigma = (grouped.var(dim=-1, correction=0, keepdim=True) + self.eps).sqrt()
        swish = x * torch.sigmoid(broadcast(v, x.dim()) * x)  # type: ignore[arg-type]
        return affine_only((swish.reshape(grouped.shape) / sigma).reshape(x.shape), weight, bias)


# -- functionals ----------------------------------------------------------------------------------


def evo_norm_b0(
    x: Tensor, running_var: Tensor | None = None, weight: Tensor | None = None,
    bias: Tensor | None = None, v: Tensor | None = None, *, training: bool = False,
    nonlinearity: bool = True, eps: float = 1e-5, channel_dim: int = 1,
) -> Tensor:
    r"""EvoNorm-B0; pure (never writes ``running_var``).

    $$ y = \frac{x}{\max\left(\sqrt{s^2_b + \epsilon},\ v x + \sqrt{s^2_i + \epsilon}\right)}
       \gamma + \beta $$

    s²_i: biased variance over *S per (sample, channel). s²_b: ``running_var``, or the batch's
    biased variance over (N, *S) per channel when ``training`` or ``running_var`` is None.

    Args:
        running_var: running variance, shape (C,), used for s²_b outside training; only read.
            None: the batch's variance always.
        v: the per-channel v, shape (C,); None: v = 1.
        nonlinearity: False: the affine-only y = γx + β (``v`` must be None).
        eps: ε, added to both variances.

    Example:
        >>> x = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]])
        >>> evo_norm_b0(x, training=True, eps=1e-12)  # σ_b = √5; σ_i = 1: D = max(√5, x + 1)
        tensor([[[0.4472, 0.7500]],
        <BLANKLINE>
                [[0.8333, 0.8750]]])
    """
    xc, v, _, channel_dim, eps = check_slope_functional(
        "evo_norm_b0", x, nonlinearity, channel_dim, eps,
        weight=weight, bias=bias, v=v, running_var=running_var,
    )
    b0 = _B0(eps, None if training else running_var)
    return from_channels_first(norm_or_affine(xc, b0, v, weight, bias)[0], channel_dim)


def evo_norm_s0(
    x: Tensor, num_groups: int = 32, weight: Tensor | None = None, bias: Tensor | None = None,
    v: Tensor | None = None, *, nonlinearity: bool = True, eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""EvoNorm-S0; pure.

    $$ y = \frac{x \cdot \mathrm{sigmoid}(v x)}{\sqrt{s^2_g + \epsilon}} \gamma + \beta $$

    s²_g: biased variance over (C/G, *S) per (sample, group of C/G contiguous channels).

    Args:
        num_groups: G; decremented until it divides C (the reference's rule).
        v: the per-channel v, shape (C,); None: v = 1.
        nonlinearity: False: the affine-only y = γx + β.
        eps: ε, added to the group variance.

    Example:
        >>> evo_norm_s0(torch.tensor([[0.0, 2.0]]), num_groups=1, eps=1e-12).round(decimals=4)
        tensor([[0.0000, 1.7616]])
    """
    xc, v, c, channel_dim, eps = check_slope_functional(
        "evo_norm_s0", x, nonlinearity, channel_dim, eps, weight=weight, bias=bias, v=v
    )
    groups = resolve_groups(c, num_groups, None)
    y = norm_or_affine(xc, _S0(groups, eps), v, weight, bias)[0]
    return from_channels_first(y, channel_dim)


# -- modules --------------------------------------------------------------------------------------


class _EvoNorm(Norm):
    """Parameters shared by B0 and S0: γ (``weight``), β (``bias``) and v."""

    v: torch.nn.Parameter | None

    def __init__(self, num_features: int, *, nonlinearity: bool, **shared: Any) -> None:
        # eps, affine, channel_dim, device, dtype; ε must be a number (None is not an EvoNorm ε)
        super().__init__(num_features, **{**shared, "eps": errors.check_eps(shared["eps"])})
        self.nonlinearity = bool(nonlinearity)
        v = torch.empty(num_features, device=shared["device"], dtype=shared["dtype"])
        self.register_parameter("v", torch.nn.Parameter(v) if nonlinearity else None)

    def reset_parameters(self) -> None:
        """γ = 1, β = 0, v = 1 (the reference's initializers), fresh running statistics."""
        super().reset_parameters()
        if self.v is not None:
            torch.nn.init.ones_(self.v)


class EvoNormB0(_EvoNorm):
    r"""EvoNorm-B0: batch-dependent normalization and activation in one layer.

    $$ y = \frac{x}{\max\left(\sqrt{s^2_b + \epsilon},\ v x + \sqrt{s^2_i + \epsilon}\right)}
       \gamma + \beta $$

    s²_i: biased variance over (*S) per (sample, channel). s²_b: biased variance over (N, *S)
    per channel, from the batch in training and ``running_var`` in eval. v, γ, β are per
    channel (initialized to 1, 1, 0). Ties of the max send the gradient to the batch side (as
    ``tf.maximum``'s gradient does in the reference).

    Running variance (the reference's ``moving_variance``, no running mean): starts at 1,
    r ← (1 − momentum)·r + momentum·s²_b (decay d = 0.9 is ``momentum = 1 − d = 0.1``). It
    stores the **biased** s²_b, as the reference does (normlab's BatchNorm stores the unbiased
    one). ``momentum=None``: cumulative average over ``num_batches_tracked`` updates; a
    non-finite s²_b leaves both buffers unchanged. ``track_running_stats=False`` uses the
    batch's variance in eval too. Under `normlab.sync`, s²_b in training is the variance of
    every replica's concatenated batch; s²_i stays per sample.

    Args:
        num_features: C, the number of channels.
        nonlinearity: False gives the reference's affine-only layer y = γx + β (no ``v``, no
            running variance; train = eval).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = EvoNormB0(1, eps=1e-12)
        >>> norm(torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]])).detach()
        tensor([[[0.4472, 0.7500]],
        <BLANKLINE>
                [[0.8333, 0.8750]]])
        >>> norm.running_var  # 0.9 · 1 + 0.1 · 5
        tensor([1.4000])

    References:
        Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967. Official code: tensorflow/tpu, models/official/resnet/
        resnet_model.py (``evonorm``).
    """

    _repr_keys = ("eps", "momentum", "affine", "nonlinearity", "track_running_stats")
    statistics = "batch variance over (N, *S) per channel and instance variance over *S"
    axes = axes_lib.BATCH  # s²_b; s²_i is over axes_lib.INSTANCE
    running_stats = "batch_biased"  # running_var only: an EMA of the biased s²_b
    supports_sync = True

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, nonlinearity: bool = True, track_running_stats: bool = True,
        channel_dim: int = 1, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, nonlinearity=nonlinearity, eps=eps, affine=affine,
                         channel_dim=channel_dim, device=device, dtype=dtype)
        # the reference has no moving variance without the nonlinearity
        tracking = bool(track_running_stats) and self.nonlinearity
        self._init_running_stats(tracking, momentum, device, dtype, mean=False)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        if self.training and self.moments_reducer is not None and self.v is not None:
            return from_channels_first(self._forward_synced(xc), self.channel_dim)
        use_batch = self.training or self.running_var is None
        b0 = _B0(self.eps, None if use_batch else self.running_var)
        y, batch_var = norm_or_affine(xc, b0, self.v, self.weight, self.bias)
        if self.training and self.running_var is not None and batch_var:
            self._track(batch_var)
        return from_channels_first(y, self.channel_dim)

    def _track(self, batch_var: tuple[Tensor] | list[Tensor]) -> None:
        """r ← (1 − m)·r + m·s²_b, skipped if not finite (see normlab.core.running)."""
        update_running_ema_((self.running_var,), batch_var, self.num_batches_tracked, self.momentum)

    def _forward_synced(self, xc: Tensor) -> Tensor:
        """Training with s²_b over the batch of every replica (`normlab.sync`), s²_i per sample
        as ever: one collective in the forward, one in the backward; the running variance
        moves toward the global s²_b, identically on every replica."""
        batch = self._synced_batch_moments(xc)
        left = (batch.var + self.eps).sqrt()
        assert self.v is not None  # forward takes this path only with the nonlinearity
        y = b0_composed(xc.to(left.dtype), left, self.v, self.weight, self.bias, self.eps)
        if self.running_var is not None and batch.count:  # all replicas empty: no update
            self._track((batch.var,))
        return y.to(xc.dtype)


class EvoNormS0(_EvoNorm):
    r"""EvoNorm-S0: per-sample normalization and activation in one layer (a swish over GN's σ).

    $$ y = \frac{x \cdot \mathrm{sigmoid}(v x)}{\sqrt{s^2_g + \epsilon}} \gamma + \beta $$

    s²_g: biased variance over (C/G, *S) per (sample, group of C/G contiguous channels); the
    mean is not subtracted from x. v, γ, β are per channel (initialized to 1, 1, 0). No running
    statistics: training and eval agree.

    Args:
        num_features: C, the number of channels.
        num_groups: G, 32 by default. If it does not divide C it is decremented until it does
            (the reference's rule: C = 6 gives G = 6, C = 40 gives G = 20); ``num_groups`` then
            holds the G in use.
        group_size: channels per group instead (G = C / size), which must divide C; None:
            set by ``num_groups``.
        nonlinearity: False gives the reference's affine-only layer y = γx + β (no ``v``).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = EvoNormS0(2, num_groups=1, eps=1e-12)
        >>> norm(torch.tensor([[0.0, 2.0]])).detach().round(decimals=4)
        tensor([[0.0000, 1.7616]])

    References:
        Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers", NeurIPS 2020,
        arXiv:2004.02967. Official code: tensorflow/tpu, models/official/resnet/
        resnet_model.py (``evonorm``, ``_group_std``).
    """

    _repr_keys = ("num_groups", "eps", "affine", "nonlinearity")

    def __init__(
        self, num_features: int, *, num_groups: int | None = None,
        group_size: int | None = None, eps: float = 1e-5, affine: bool = True,
        nonlinearity: bool = True, channel_dim: int = 1,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, nonlinearity=nonlinearity, eps=eps, affine=affine,
                         channel_dim=channel_dim, device=device, dtype=dtype)
        self.num_groups = resolve_groups(self.num_features, num_groups, group_size)
        self.axes = axes_lib.group(self.num_groups)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        y, _ = norm_or_affine(xc, _S0(self.num_groups, self.eps), self.v, self.weight, self.bias)
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "evo_norm_b0", EvoNormB0, "Liu et al. 2020, arXiv:2004.02967",
        aliases=("evonorm_b0", "b0"), functional=(evo_norm_b0,),
    ),
    Entry(
        "evo_norm_s0", EvoNormS0, "Liu et al. 2020, arXiv:2004.02967",
        aliases=("evonorm_s0", "s0"), functional=(evo_norm_s0,), spec_arg="num_groups",
        fitting="s0:4",
    ),
)
