"""Batch Renormalization (Ioffe 2017, arXiv:1702.03275).

Training normalizes with the batch's statistics and then corrects toward the moving ones with
two per-channel constants r and d (no gradient flows through them), so that the training output
is the inference function whenever the clips are inactive. With r = 1 and d = 0 it is BN.

Fast path. Per channel, y = γ·r·(x − μ_B)/σ_B + γ·d + β is BN with weight γ·r and bias
γ·d + β, so the backward is BN's native backward kernel with that weight (gradients flow through
μ_B and σ_B exactly as in BN; r and d are constants). The forward needs μ_B and σ_B before it
can fold r and d into the weight: on small input (≤ 2^14 elements, where the number of ATen
calls sets the cost) BN's own training kernel then runs with the folded weight and bias; above,
the moments come from the native group-norm kernel (one group per channel, merged exactly over
the batch) or, for other layouts, from ``batch_norm_update_stats``, and the output is one
per-channel affine pass x·A + B. Measured on the project's 2-core CPU (fp32, (32, 64, 32, 32),
training, forward + backward): 0.8-1.0x ``torch.nn.BatchNorm2d(64)`` and 5-8x faster than the
eager composition (benchmarks/eager/batch_renorm.py). Only x and per-channel statistics are
saved for backward; double backward runs through ATen's derivative of BN's backward kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.backends import cudnn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import Moments, accumulation_dtype
from normlab.core.running import Factor, update_running_
from normlab.errors import ConfigError
from normlab.norms._base import (
    Norm,
    channel_scale_shift,
    check_set_size,
    from_channels_first,
    kernel_params,
    normalize_by_moments,
    to_channels_first,
)
from normlab.norms._per_instance import SMALL_INPUT as _SMALL
from normlab.norms._per_instance import batch_moments
from normlab.norms._training import TrainingHooks
from normlab.norms.batch_norm import _batch_norm

# -- errors raised here ----------------------------------------------------------------------------


def check_rmax(rmax: object) -> float:
    """r_max of Batch Renorm: a finite number >= 1 (r is clipped to [1/r_max, r_max])."""
    return errors.check_at_least(
        "rmax", rmax, 1, "r = σ_B/σ is clipped to [1/rmax, rmax], so rmax < 1 would be an empty "
        "range; rmax=1 turns the correction off (plain BN) and the paper ends its schedule at "
        "rmax=3.")


def check_dmax(dmax: object) -> float:
    """d_max of Batch Renorm: a finite number >= 0 (d is clipped to [-d_max, d_max])."""
    return errors.check_at_least(
        "dmax", dmax, 0, "d = (μ_B − μ)/σ is clipped to [-dmax, dmax]; dmax=0 turns the shift off "
        "(plain BN) and the paper ends its schedule at dmax=5.")


def check_renorm_schedule(
    warmup_steps: object, rmax_ramp_end: object, dmax_ramp_end: object
) -> tuple[int, int, int]:
    """Step counts of Batch Renorm's clip schedule: ints >= 0, each ramp ending after warm-up."""
    given = {"warmup_steps": warmup_steps, "rmax_ramp_end": rmax_ramp_end,
             "dmax_ramp_end": dmax_ramp_end}
    steps: dict[str, int] = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{name} must be an int >= 0 (a number of training steps); got {value!r}. "
                "Pass warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0 to clip with the final "
                "rmax and dmax from the first step."
            )
        steps[name] = int(value)
    for name in ("rmax_ramp_end", "dmax_ramp_end"):
        if steps[name] < steps["warmup_steps"]:
            raise ConfigError(
                f"{name} ({steps[name]}) must be >= warmup_steps ({steps['warmup_steps']}): the "
                "ramp starts when the warm-up ends, so the schedule would not be monotone. Raise "
                f"{name} or lower warmup_steps (the paper: warmup_steps=5000, then "
                "rmax_ramp_end=40000, dmax_ramp_end=25000)."
            )
    return steps["warmup_steps"], steps["rmax_ramp_end"], steps["dmax_ramp_end"]


Limit = float | Tensor  # a clip limit: a Python number, or a 0-dim tensor (scheduled)
# -- the correction -------------------------------------------------------------------------------


@torch.no_grad()
def renorm_correction(
    batch: Moments, running_mean: Tensor, running_var: Tensor, rmax: Limit, dmax: Limit, eps: float
) -> tuple[Tensor, Tensor]:
    """The paper's r and d (Alg. 1), computed without gradient.

    r = clip(σ_B/σ, 1/r_max, r_max), d = clip((μ_B − μ)/σ, −d_max, d_max), with σ_B =
    sqrt(Var_b + ε) and the moving σ = sqrt(running_var + ε), μ = running_mean.
    """
    dtype = batch.mean.dtype
    sigma = running_var.to(dtype).add(eps).sqrt_()
    sigma_b = batch.var.add(eps).sqrt_()
    r = sigma_b.div_(sigma)
    d = batch.mean.sub(running_mean.to(dtype)).div_(sigma)
    if isinstance(rmax, Tensor):
        r = torch.clamp(r, rmax.reciprocal(), rmax)
        d = torch.clamp(d, -dmax, dmax)
    else:
        r = r.clamp_(1.0 / rmax, rmax)
        d = d.clamp_(-dmax, dmax)
    return r, d


def _folded_affine(
    weight: Tensor | None, bias: Tensor | None, r: Tensor, d: Tensor
) -> tuple[Tensor, Tensor]:
    """BN's weight and bias that give Batch Renorm's output: γr and γd + β."""
    scale = r if weight is None else weight * r
    shift = d if weight is None else weight * d
    return scale, shift if bias is None else shift + bias


class _RenormAffine(torch.autograd.Function):
    """y = x·A + B with A = γr/σ_B, B = β + γd − μ_B·A; backward = BN's with weight γr."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        invstd: Tensor,
        r: Tensor,
        d: Tensor,
        eps: float,
    ) -> Tensor:
        # weight / bias arrive in the statistics' dtype (kernel_params); None when affine=False
        scale, shift = _folded_affine(weight, bias, r, d)
        a = scale * invstd
        b = shift - mean * a
        y = channel_scale_shift(x, a, b)
        ctx.eps = eps
        ctx.save_for_backward(x, weight, mean, invstd, r, d)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd, r, d = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # With create_graph=True grad mode is on here, and ATen differentiates its own
        # batch-norm backward kernel (batchnorm_double_backward): x, weight and dy carry
        # history, the statistics and r, d are constants, as in the first-order pass.
        scale = r if weight is None else weight * r
        dx, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, x, scale, None, None, mean, invstd, True, ctx.eps,
            [need_x, need_w, need_w or need_b],
        )
        # ∂y/∂γ = r·x̂ + d, ∂y/∂β = 1
        dw = sum_dy_xhat * r + sum_dy * d if need_w else None
        db = sum_dy if need_b else None
        return dx if need_x else None, dw, db, None, None, None, None, None


def _renorm_train(
    x: Tensor, batch: Moments, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
    bias: Tensor | None, rmax: Limit, dmax: Limit, eps: float,
) -> Tensor:
    """Training-mode Batch Renorm of a channels-first ``x`` with its batch moments."""
    r, d = renorm_correction(batch, running_mean, running_var, rmax, dmax, eps)
    weight, bias = kernel_params(x, weight, bias, x.shape[1])
    if x.numel() <= _SMALL and batch.mean.dtype == x.dtype:
        # Small input: the call count, not the passes, sets the cost. BN's own training
        # kernel with weight γr and bias γd + β is the same function (it recomputes μ_B, σ_B
        # bitwise as batch_norm_update_stats did) and autograd gives the same gradients
        # (r, d constants) without a Python backward.
        scale, shift = _folded_affine(weight, bias, r, d)
        return torch.batch_norm(x, scale, shift, None, None, True, 0.0, eps, cudnn.enabled)
    invstd = batch.var.add(eps).rsqrt()
    y = _RenormAffine.apply(x, weight, bias, batch.mean, invstd, r, d, eps)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _renorm_composed(
    x: Tensor, batch: Moments, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
    bias: Tensor | None, rmax: Limit, dmax: Limit, eps: float,
) -> Tensor:
    """`_renorm_train` in plain autograd ops, for batch moments that carry history (the
    cross-replica moments of `normlab.sync`, through whose merge gradients flow): BN with the
    given moments, weight γr and bias γd + β (r and d constants)."""
    r, d = renorm_correction(batch, running_mean, running_var, rmax, dmax, eps)
    return normalize_by_moments(x, batch, *_folded_affine(weight, bias, r, d), eps)


# -- the moving statistics ------------------------------------------------------------------------


def update_renorm_stats_(
    running_mean: Tensor, running_var: Tensor, num_batches_tracked: Tensor, batch: Moments,
    momentum: float | None, eps: float,
) -> None:
    """The paper's moving-average update, in place: μ ← μ + α(μ_B − μ), σ ← σ + α(σ_B − σ).

    σ is the moving *std including ε*, σ_B = sqrt(Var_b + ε) the batch's (no Bessel correction).
    It is stored as ``running_var`` = σ² − ε (BN's buffer; σ = sqrt(running_var + ε) is exactly
    what BN's inference divides by). The new value is evaluated without cancellation,

        σ'² − ε = (1 − α)²·v + α²·v_B + 2α(1 − α)·(v·v_B + ε(v + v_B)) / (σσ_B + ε),

    v = running_var, v_B = Var_b: every term is >= 0, so tiny variances (v ≪ ε) neither drift
    nor turn negative. α = momentum (weight of the new batch), or 1/t with ``momentum=None``
    (equal-weight average of the batch σ_B). A batch with non-finite statistics changes nothing,
    ``num_batches_tracked`` included (the rule of :mod:`normlab.core.running`).
    """
    acc = accumulation_dtype(running_var.dtype)

    def law(factor: Factor) -> tuple[Tensor, Tensor]:
        v = running_var.to(acc)
        vb = batch.var.to(acc)
        # the same expression as the docstring's, in fewer (fused, in-place) calls
        num = torch.addcmul(torch.add(v, vb).mul_(eps), v, vb)  # v·v_B + ε(v + v_B)
        den = torch.add(v, eps).sqrt_().mul_(torch.add(vb, eps).sqrt_()).add_(eps)  # σσ_B + ε
        keep = 1 - factor
        new_var = torch.add(v * (keep * keep), vb * (factor * factor))
        cross = num.div_(den)
        if isinstance(factor, Tensor):  # 1/t on an accelerator: no alpha= for a tensor
            new_var = new_var + cross * (2 * factor * keep)
        else:
            new_var.add_(cross, alpha=2 * factor * keep)
        new_mean = torch.lerp(running_mean, batch.mean.to(running_mean.dtype), factor)
        return new_mean, new_var.to(running_var.dtype)

    update_running_(
        (running_mean, running_var), num_batches_tracked, momentum, law,
        watch=(batch.mean, batch.var),
    )


def clip_schedule(
    step: Tensor | int,
    rmax: float,
    dmax: float,
    warmup_steps: int,
    rmax_ramp_end: int,
    dmax_ramp_end: int,
) -> tuple[Limit, Limit]:
    """(r_max, d_max) at training step ``step`` (0-based: the number of steps already taken).

    r_max = 1 and d_max = 0 for the first ``warmup_steps`` steps, then each rises linearly to
    its final value, reached at ``rmax_ramp_end`` / ``dmax_ramp_end`` and kept after that. A
    ramp that ends when the warm-up does is a step. Returns Python floats when the schedule is
    already complete at step 0 or ``step`` is an int (the same float64 operations), else 0-dim
    tensors (no device sync, no graph break).
    """
    if rmax_ramp_end == 0 and dmax_ramp_end == 0:
        return rmax, dmax
    if isinstance(step, int):
        def now(end: int) -> float:
            w = warmup_steps
            return min(max((step - w) / (end - w), 0.0), 1.0) if end > w else float(step >= w)

        return now(rmax_ramp_end) * (rmax - 1) + 1, now(dmax_ramp_end) * dmax
    t = torch.as_tensor(step)
    t = t.to(torch.float32 if t.device.type == "mps" else torch.float64)  # exact step counts

    def ramp(end: int) -> Tensor:
        if end > warmup_steps:
            return ((t - warmup_steps) / (end - warmup_steps)).clamp_(0, 1)
        return (t >= warmup_steps).to(t.dtype)

    return ramp(rmax_ramp_end).mul_(rmax - 1).add_(1), ramp(dmax_ramp_end).mul_(dmax)


# -- functional -----------------------------------------------------------------------------------


def batch_renorm(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    rmax: Limit = 3.0,
    dmax: Limit = 5.0,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Batch Renormalization; pure: returns y and never updates ``running_mean`` / ``running_var``.

    y = γ((x − μ_B)/σ_B · r + d) + β, r and d clipped as in :class:`BatchRenorm` (its equation);
    μ_B, σ_B = sqrt(Var_b + ε) over (N, *S), one per channel; μ = ``running_mean``, σ =
    sqrt(``running_var`` + ε); r and d are constants for autograd. With ``training=False``:
    y = γ(x − μ)/σ + β. ``rmax`` / ``dmax`` are the limits for this step (Python numbers, or
    0-dim tensors such as :meth:`BatchRenorm.clip_limits` returns); the module's schedule and
    its moving-average update are not part of the function.

    Args:
        rmax: r's clipping limit, r ∈ [1/rmax, rmax], for this step (a number or a 0-dim
            tensor).
        dmax: d's clipping limit, d ∈ [−dmax, dmax], for this step.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> batch_renorm(x, torch.zeros(1), torch.ones(1), training=True, eps=1e-12)
        tensor([[1.],
                [3.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    eps = errors.check_eps(eps)
    rmax = rmax if isinstance(rmax, Tensor) else check_rmax(rmax)
    dmax = dmax if isinstance(dmax, Tensor) else check_dmax(dmax)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(t, Tensor) or t.dim() != 1:
            raise errors.InputError(
                f"batch_renorm: {name} must be a 1-D tensor with one value per channel; got "
                f"{t!r}. Batch Renorm corrects the batch statistics toward the moving ones, so "
                "it needs both; use batch_norm for batch statistics alone."
            )
    errors.check_input("batch_renorm", x, running_mean.shape[0], channel_dim)
    xc = to_channels_first(x, channel_dim)
    if training and xc.numel():
        check_set_size("batch_renorm", axes_lib.BATCH, xc, 1)
    y = _forward(xc, running_mean, running_var, weight, bias, training, rmax, dmax, eps)[0]
    return from_channels_first(y, channel_dim)


def _forward(
    xc: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
    bias: Tensor | None, training: bool, rmax: Limit, dmax: Limit, eps: float,
) -> tuple[Tensor, Moments | None]:
    """Batch Renorm of a checked channels-first ``xc``, and the batch moments it trained with
    (None in eval or on empty input: BN's inference with the moving statistics)."""
    if not training or xc.numel() == 0:
        return _batch_norm(xc, running_mean, running_var, weight, bias, False, eps), None
    batch = batch_moments(xc, eps)
    # r and d come from the buffers as they are before this step's update
    return _renorm_train(xc, batch, running_mean, running_var, weight, bias, rmax, dmax, eps), batch


# -- module ---------------------------------------------------------------------------------------


class BatchRenorm(Norm):
    r"""Batch Renormalization: batch statistics corrected toward the moving ones.

    $$ y = \gamma \left( \frac{x - \mu_B}{\sigma_B} r + d \right) + \beta, \quad
       r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}\!\left(\frac{\sigma_B}{\sigma}\right), \quad
       d = \mathrm{clip}_{[-d_{max},\, d_{max}]}\!\left(\frac{\mu_B - \mu}{\sigma}\right) $$

    μ_B and σ_B = sqrt(Var_b + ε) over (N, *S), one per channel (ε inside σ_B, biased
    variance); μ, σ are the moving mean and moving std, taken *before* this step's update; r
    and d are stop-gradient constants, so gradients flow through μ_B and σ_B exactly as in BN
    (paper Alg. 1). Then μ ← μ + α(μ_B − μ), σ ← σ + α(σ_B − σ) with α = ``momentum``. Eval:
    y = γ(x − μ)/σ + β, which equals the training output whenever r and d are not clipped.

    The moving std is stored as ``running_var`` = σ² − ε (σ = sqrt(running_var + ε)): BN's
    buffers and meaning, so eval is BN's eval, BN state_dicts load unchanged and fold / convert
    need no special case; the update law is the paper's on σ (:func:`update_renorm_stats_`), not
    BN's on the unbiased variance. ``momentum=None`` averages σ_B and μ_B with equal weights.
    ``num_batches_tracked`` counts training steps and drives the clip schedule (a loaded BN
    checkpoint brings its count along; set it to 0 to replay the warm-up). Under
    `normlab.sync`, μ_B, σ_B (so r, d and the moving-average update) are those of every
    replica's concatenated batch.

    Clip schedule (paper, ImageNet: 50 × 32 images per step): r_max = 1 and d_max = 0, i.e.
    plain BN, for the first ``warmup_steps`` = 5000 steps, then "gradually relaxed" to r_max = 3
    at step 40k and d_max = 5 at step 25k. The paper does not state the ramp's shape; the
    linear ramp used here is the common choice. ``warmup_steps=0, rmax_ramp_end=0,
    dmax_ramp_end=0`` clips with ``rmax`` / ``dmax`` from the first step.

    Args:
        num_features: C, the number of channels.
        rmax: final r_max (>= 1); r is clipped to [1/r_max, r_max].
        dmax: final d_max (>= 0); d is clipped to [−d_max, d_max].
        momentum: α, the weight of the new batch (PyTorch convention; the paper's α = 0.01 is
            TF's ``renorm_momentum=0.99``), or None for an equal-weight average.
        warmup_steps: steps with r_max = 1, d_max = 0 (plain BN).
        rmax_ramp_end: step at which r_max reaches ``rmax`` (linear from ``warmup_steps``).
        dmax_ramp_end: step at which d_max reaches ``dmax`` (linear from ``warmup_steps``).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> brn = BatchRenorm(1, rmax=2.0, dmax=0.5, warmup_steps=0, rmax_ramp_end=0,
        ...                   dmax_ramp_end=0, eps=1e-12)
        >>> brn(torch.tensor([[4.0], [8.0]]))  # σ_B = 2 → r = 2, μ_B = 6 → d = 0.5
        tensor([[-1.5000],
                [ 2.5000]], grad_fn=<NativeBatchNormBackward0>)
        >>> brn.running_mean, brn.running_var  # μ: 0.01·6, σ: 1 + 0.01·(2 − 1)
        (tensor([0.0600]), tensor([1.0201]))

    References:
        Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
        Batch-Normalized Models", NeurIPS 2017, arXiv:1702.03275.
    """

    _repr_keys = (
        "eps", "momentum", "affine", "rmax", "dmax", "warmup_steps", "rmax_ramp_end",
        "dmax_ramp_end",
    )
    axes = axes_lib.BATCH
    running_stats = "batch_biased"  # μ and σ² − ε with σ the moving std: its own law
    eval_is_batch_norm = True
    supports_sync = True
    training_reads_running_stats = True

    # The paper's schedule (warm-up 5k, d_max at 25k, r_max at 40k of ~125k steps), scaled to a run
    training_hooks = TrainingHooks(
        step_schedule={"warmup_steps": 0.04, "dmax_ramp_end": 0.2, "rmax_ramp_end": 0.32}
    )

    def __init__(
        self,
        num_features: int,
        *,
        rmax: float = 3.0,
        dmax: float = 5.0,
        eps: float = 1e-5,
        momentum: float | None = 0.01,
        affine: bool = True,
        warmup_steps: int = 5000,
        rmax_ramp_end: int = 40000,
        dmax_ramp_end: int = 25000,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.rmax = check_rmax(rmax)
        self.dmax = check_dmax(dmax)
        self.warmup_steps, self.rmax_ramp_end, self.dmax_ramp_end = (
            check_renorm_schedule(warmup_steps, rmax_ramp_end, dmax_ramp_end)
        )
        self._init_running_stats(True, momentum, device, dtype)
        self.reset_parameters()

    eps: float  # never None here (checked above)
    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def clip_limits(self) -> tuple[Limit, Limit]:
        """(r_max, d_max) that the next training step clips with (see :func:`clip_schedule`)."""
        step: Tensor | int = self.num_batches_tracked  # on the CPU in eager mode, reading it
        if step.is_cpu and not torch.compiler.is_compiling():  # costs less than 0-dim tensor ops
            step = int(step)
        return clip_schedule(
            step, self.rmax, self.dmax, self.warmup_steps, self.rmax_ramp_end, self.dmax_ramp_end
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        training = self.training
        synced = training and self.moments_reducer is not None
        if training and xc.numel() and not synced:
            self._check_set_size(x)
        rmax, dmax = self.clip_limits() if training else (self.rmax, self.dmax)
        state = (self.running_mean, self.running_var, self.weight, self.bias)
        batch: Moments | None
        if synced:  # every replica's batch moments (an empty replica still joins the merge)
            batch = moments = self._synced_batch_moments(xc)
            y = _renorm_composed(xc, moments, *state, rmax, dmax, self.eps)
        else:
            y, batch = _forward(xc, *state, training, rmax, dmax, self.eps)
        if batch is not None and batch.count:
            update_renorm_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked, batch,
                self.momentum, self.eps,
            )
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "batch_renorm",
        BatchRenorm,
        "Ioffe 2017, arXiv:1702.03275",
        aliases=("brn", "batchrenorm"),
        functional=(batch_renorm,),
    ),
)
