"""Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better",
arXiv:1705.08741; reference code: ``eladhoffer/bigBatch``, ``main_gbn.py``).

A training batch is split into consecutive chunks ("ghost batches"); each chunk is
batch-normalized with its own statistics, γ and β are shared. At inference GBN is plain BN.
The two splitting rules (``split``: chunks of ``ghost_batch_size`` samples, or the reference
code's ``x.chunk(N // g)``) are described in `ghost_plan`.

Fast paths, with no Python loop over chunks, chosen by the batch and by the number |S| of
positions per (sample, channel) slice:

* one ghost batch (N <= ``ghost_batch_size``): plain BN, `normlab.norms.batch_norm`'s path;
* |S| >= ``MIN_POSITIONS_PER_SLICE`` and over ``SMALL_MAP_VALUES`` values per channel (large
  maps), no copy of the input: the per-(sample, channel) moments of the group-norm kernel,
  merged exactly per chunk (equal counts: μ = mean_i μ_i, σ² = mean_i σ²_i + mean_i
  (μ_i − μ)²) on the tiny (N, C) tensors, and one affine pass y = x·A + B
  (`normlab.norms._instance_affine`, coefficients `_forward_parts`, their VJP
  `_backward_parts`); the backward reads x and dy once for two per-slice sums and writes dx in
  one affine pass plus one fused multiply-add;
* fewer positions ((N, C) input, short sequences) or small maps: the chunks become the
  samples of a group norm on a permuted copy, (k·g, C, *S) -> (k, C, g·|S|), one group per
  channel, and ONE native group-norm call normalizes every chunk with γ, β as they are (a
  remainder chunk is one native batch-norm call more); see `_permuted_path`.

A step's running-statistics update is one fused EMA step (`update_ghost_running_ema_`).

Measured (2-core CPU, fp32 (32, 64, 32, 32), 2 threads, fwd + bwd, ghost size 8): the second
path at 0.9-1.2x ``torch.nn.BatchNorm2d``'s time, the permuted path 1.2x (1 thread), an eager
per-chunk composition 4-5x. The second path's fp32 error grows like u·|μ|/σ (a fold
y = x·A + B; its gradient uses Σ dy·x − μ·Σ dy): at |μ|/σ = 1e3 its input gradient is about
6x less accurate than the permuted path's, about 1e-5 of its largest entry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.axes import Axes
from normlab.core.cross_replica import CrossReplicaMoments
from normlab.core.moments import accumulation_dtype
from normlab.norms._analytic_coefficients import AnalyticCoefficients
from normlab.norms._base import (
    Norm,
    affine_params,
    check_set_size,
    from_channels_first,
    kernel_params,
    layout_of,
    to_channels_first,
)
from normlab.norms._ghost_running import (
    ghost_terms,
    update_ghost_running_ema_,
    update_ghost_running_stats_,
)
from normlab.norms._instance_affine import (
    contiguous_channels_first,
    normalize_and_apply,
    restore_layout,
)
from normlab.norms._per_instance import (
    Plan,
    batch_norm_with_moments,
    cat_chunks,
    chunk_moments,
    chunk_sizes,
    chunk_sum,
    per_chunk_sample,
)
from normlab.norms.batch_norm import _batch_norm, batch_norm_train_

# -- errors raised by this method ------------------------------------------------------------


def check_ghost_batch_size(ghost_batch_size: object) -> int:
    """Samples per ghost batch of Ghost BN: a positive int."""
    if not errors.is_positive_int(ghost_batch_size):
        raise errors.ConfigError(
            f"ghost_batch_size must be a positive int; got {ghost_batch_size!r}. It is the number "
            "of samples per ghost batch, each normalized with its own statistics; the paper uses "
            "128. Pass e.g. ghost_batch_size=32 (a value >= the batch size gives plain BN)."
        )
    return ghost_batch_size  # type: ignore[return-value]  # checked above


SPLITS: tuple[str, ...] = ("size", "count")
"""The ghost-batch splitting rules, see `ghost_plan`."""


def check_split(split: object) -> str:
    """Ghost BN's ``split``: one of `SPLITS`."""
    if not isinstance(split, str) or split not in SPLITS:
        raise errors.ConfigError(
            f"split must be 'size' or 'count'; got {split!r}. It is how a training batch is cut "
            "into ghost batches: 'size' = consecutive chunks of ghost_batch_size samples (batch "
            "10, ghost size 4: 4, 4, 2), 'count' = eladhoffer/bigBatch's x.chunk(N // "
            "ghost_batch_size) (5, 5). Pass split='size' (the default) or split='count'."
        )
    return split


def ghost_plan(
    batch: int, ghost_batch_size: int, positions: int = 2, split: str = "size"
) -> Plan:
    """How a batch of ``batch`` samples is split into ghost batches of consecutive samples.

    With g = ``ghost_batch_size``, chunks of s samples and the remainder, if any, as one smaller
    last chunk, where

    * ``split="size"``: s = g (batch 10, g = 4: chunks 4, 4, 2);
    * ``split="count"``: s = ⌈N / ⌊N / g⌋⌉, what ``x.chunk(N // g)`` gives, the rule of the
      reference code ``eladhoffer/bigBatch`` (batch 10, g = 4: 5, 5; batch 13: 5, 5, 3).

    A remainder that would hold one value per statistic (one sample and ``positions`` = |S| = 1,
    e.g. (N, C) input) is merged into the previous chunk instead (batch 9, g = 4, (N, C) input:
    chunks 4, 5). ``batch <= ghost_batch_size`` is one chunk: plain BN (under both rules).

    Example:
        >>> ghost_plan(10, 4), ghost_plan(9, 4, positions=1), ghost_plan(3, 4)
        ((2, 4, 2), (1, 4, 5), (1, 3, 0))
        >>> ghost_plan(10, 4, split="count"), ghost_plan(13, 4, split="count")
        ((2, 5, 0), (2, 5, 3))
    """
    if batch <= ghost_batch_size:
        return (1, batch, 0)
    size = ghost_batch_size if split == "size" else -(-batch // (batch // ghost_batch_size))
    full, rest = divmod(batch, size)
    if rest == 0:
        return (full, size, 0)
    if rest * positions == 1:
        return (full - 1, size, size + 1)
    return (full, size, rest)


# Below this many positions per (sample, channel) slice the per-slice kernels of the instance
# path are dominated by per-slice overhead (for (N, C) input each slice is one value), and one
# native kernel call on a permuted copy is faster. Measured on the project's 2-core CPU,
# fp32, 1M elements, C = 64, ghost size 32, fwd + bwd: at |S| = 1 the instance path is ~10x
# slower than the permuted one, at |S| = 16 they are even, from |S| = 64 on the instance path
# wins (it copies nothing). 1 turns the permuted path off (how tests pin the instance path).
MIN_POSITIONS_PER_SLICE = 32

# Up to this many values per channel (N·|S|) the permuted path wins whatever |S|: on small maps
# the instance path's ~60 small ATen calls, not the copies, set the cost. Measured (1 thread,
# fp32, C = 64, ghost size 8, fwd + bwd, x nn.BatchNorm2d): (16, 64, 8, 8) 1.6 vs 3.0,
# (16, 64, 12, 12) 1.1 vs 1.8, (16, 64, 16, 16) 1.3 vs 1.1, (128, 64, 8, 8) 1.2 vs 0.9
# (benchmarks/results/issue9_smallmaps.md).
SMALL_MAP_VALUES = 3072


def _permuted(batch: int, positions: int) -> bool:
    """Whether Ghost BN's training path is the permuted one (`_permuted_path`)."""
    return MIN_POSITIONS_PER_SLICE > 1 and (
        positions < MIN_POSITIONS_PER_SLICE or batch * positions <= SMALL_MAP_VALUES
    )


def _forward_parts(
    cfg: tuple[Plan, float, bool, bool], mean: Tensor, var: Tensor, params: tuple[Tensor, ...]
) -> dict[str, Any]:
    """(μ_i, σ²_i, [γ], [β]) -> A, B of y = x·A + B, each sample with its chunk's moments (key
    "batch": the (chunks, C) μ_k, σ²_k, kept for the running statistics)."""
    plan, eps, has_weight, has_bias = cfg
    mu, sigma2 = chunk_moments(mean, var, plan)
    r = torch.rsqrt(sigma2 + eps)
    a = r * params[0].to(mean.dtype) if has_weight else r
    shift = params[-1].to(mean.dtype) - mu * a if has_bias else -mu * a
    scale, shift = per_chunk_sample(a, plan), per_chunk_sample(shift, plan)
    return {"batch": (mu, sigma2), "mean": mean, "r": r, "a": a, "scale": scale, "shift": shift}


def _backward_parts(
    cfg: tuple[Plan, float, bool, bool], parts: dict[str, Any], params: tuple[Tensor, ...],
    g_scale: Tensor, g_shift: Tensor,
) -> list[Tensor | None]:
    """The VJP of (A, B) for (μ_i, σ²_i, [γ], [β]) at the cotangents (Σ dy·x, Σ dy) per slice.

    Per chunk k of g_k samples, with x̂ the chunk-normalized input and a = γr: Σ dy·x̂ =
    r·(Σ dy·x − μ_k Σ dy), ∂L/∂σ²_k = −½ a r Σ dy·x̂, ∂L/∂μ_k = −a Σ dy (through B), ∂L/∂γ =
    Σ dy·x̂, ∂L/∂β = Σ dy; then the merge (∂μ_k/∂μ_i = ∂σ²_k/∂σ²_i = 1/g_k, ∂σ²_k/∂μ_i =
    2(μ_i − μ_k)/g_k). `instance_affine` turns these into BN's per-chunk input gradient
    dx = a·(dy − mean(dy) − x̂·mean(dy·x̂)) = A·dy + P·x + Q.
    """
    plan, _, has_weight, has_bias = cfg
    (mu, _), r, a = parts["batch"], parts["r"], parts["a"]
    s_dy, s_dy_x = chunk_sum(g_shift, plan), chunk_sum(g_scale, plan)
    s_dy_xhat = r * (s_dy_x - mu * s_dy)
    inv = 1.0 / r.new_tensor(chunk_sizes(plan)).unsqueeze(1) if plan[2] else 1.0 / plan[1]
    g_var = a * r * s_dy_xhat * (-0.5 * inv)
    g_mean = torch.addcmul(a * s_dy * -inv, mu, g_var, value=-2)
    g_var = per_chunk_sample(g_var, plan)
    grads: list[Tensor | None] = [
        torch.addcmul(per_chunk_sample(g_mean, plan), parts["mean"], g_var, value=2), g_var
    ]
    if has_weight:
        grads.append(s_dy_xhat.sum(0))
    if has_bias:
        grads.append(s_dy.sum(0))
    return grads


def _permuted_path(
    xc: Tensor, weight: Tensor | None, bias: Tensor | None, plan: Plan, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The full chunks as the samples of a group norm: (k·g, C, *S) -> (k, C, g, *S), one
    group per channel, so every group is one (ghost batch, channel) set of g·|S| values.

    ONE native group-norm call normalizes every full chunk with γ and β as they are (its
    per-channel affine is Ghost BN's) and returns the per-(chunk, channel) mean and
    1/sqrt(σ² + ε) (σ² = that⁻² − ε, clamped at 0, exact to about ulp(σ² + ε)); its backward
    (and double backward) is ATen's. A remainder chunk is one native batch-norm call on a
    copy. Costs a copy each of x, y, dy and dx (permutes), far less on small maps than the
    ATen calls it saves (benchmarks/results/issue9_smallmaps.md); saves about x's bytes.
    """
    c = xc.shape[1]
    rest = xc.shape[2:]
    full, size, tail = plan
    ys, means, variances = [], [], []
    if full:
        main = xc[: full * size] if tail else xc  # a slice's backward writes zeros first
        grouped = main.unflatten(0, (full, size)).transpose(1, 2).contiguous()
        w, b = kernel_params(xc, weight, bias, c)
        y, mean, rstd = torch.ops.aten.native_group_norm(
            grouped, w, b, full, c, grouped.numel() // (full * c), c, eps
        )
        ys.append(y.transpose(1, 2).reshape(full * size, c, *rest))
        means.append(mean.detach())  # (full, C), as are rstd and the variances
        variances.append((rstd.detach().pow(-2) - eps).clamp_min_(0.0))
    if tail:
        y, moments = batch_norm_with_moments(xc[full * size :].clone(), weight, bias, eps)
        ys.append(y)
        means.append(moments.mean.view(1, c))
        variances.append(moments.var.view(1, c))
    return cat_chunks(ys), cat_chunks(means), cat_chunks(variances)


def _ghost_train(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, ghost_batch_size: int, eps: float,
    channel_dim: int, split: str = "size",
) -> tuple[Tensor, tuple[Tensor, Tensor, Plan, int]]:
    """Training-mode GBN of ``x`` (any layout); also the detached per-chunk moments."""
    xc = to_channels_first(x, channel_dim)
    n, c = xc.shape[:2]
    positions = xc.numel() // (n * c)
    plan = ghost_plan(n, ghost_batch_size, positions, split)
    if _permuted(n, positions):
        y, mu, sigma2 = _permuted_path(xc, weight, bias, plan, eps)
        layout = layout_of(xc)  # the output keeps a channels_last input's layout
        return restore_layout(y, layout, channel_dim), (mu.detach(), sigma2.detach(), plan,
                                                        positions)
    xc, layout = contiguous_channels_first(x, channel_dim)
    cfg = (plan, eps, weight is not None, bias is not None)
    coefficients = AnalyticCoefficients(_forward_parts, _backward_parts, cfg)
    y = normalize_and_apply(xc, coefficients, *affine_params(weight, bias), eps=eps)
    mu, sigma2 = coefficients.batch  # type: ignore[misc]  # set by the forward pass
    return restore_layout(y, layout, channel_dim), (mu, sigma2, plan, positions)


def ghost_batch_norm(
    x: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    ghost_batch_size: int = 128,
    split: str = "size",
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Ghost batch normalization; pure (never writes ``running_mean`` / ``running_var``).

    $$ y = \gamma \frac{x - \mu_k}{\sqrt{\sigma^2_k + \epsilon}} + \beta $$

    With ``training=True``: μ_k, σ²_k (biased) over (ghost batch k, *S), one per (ghost batch,
    channel), each sample normalized with its own chunk's statistics (chunks of
    ``ghost_batch_size`` samples, or with ``split="count"`` the reference code's
    ``x.chunk(N // ghost_batch_size)``: see `ghost_plan`). With ``training=False``:
    ``running_mean`` / ``running_var`` (BN eval), or, when they are None, the statistics of the
    whole batch (plain BN: the batch is split into ghost batches in training only).

    Args:
        ghost_batch_size: samples per ghost batch (see ``split``).
        split: ``"size"``: consecutive chunks of ``ghost_batch_size`` samples; ``"count"``: the
            reference code's ``x.chunk(N // ghost_batch_size)`` (see `ghost_plan`).

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[0.0], [2.0], [10.0], [14.0]])
        >>> ghost_batch_norm(x, training=True, ghost_batch_size=2, eps=1e-12)
        tensor([[-1.],
                [ 1.],
                [-1.],
                [ 1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    ghost_batch_size = check_ghost_batch_size(ghost_batch_size)
    split = check_split(split)
    eps = errors.check_eps(eps)
    errors.check_input("ghost_batch_norm", x, errors.channels_of(running_mean, weight, bias),
                       channel_dim)
    if (running_mean is None) != (running_var is None):
        raise errors.InputError(
            "ghost_batch_norm: pass both running_mean and running_var, or neither; got only "
            f"{'running_mean' if running_var is None else 'running_var'}."
        )
    if training:
        axes = Axes(("batch", "spatial"), ghost_batch_size=ghost_batch_size)
        check_set_size("ghost_batch_norm", axes, x, channel_dim)
        if x.numel() == 0 or x.shape[0] <= ghost_batch_size:  # one ghost batch: plain BN
            xc = to_channels_first(x, channel_dim)
            return from_channels_first(_batch_norm(xc, None, None, weight, bias, True, eps),
                                       channel_dim)
        return _ghost_train(x, weight, bias, ghost_batch_size, eps, channel_dim, split)[0]
    use_batch = running_mean is None
    if use_batch:
        check_set_size("ghost_batch_norm", axes_lib.BATCH, x, channel_dim)
    xc = to_channels_first(x, channel_dim)
    y = _batch_norm(xc, running_mean, running_var, weight, bias, use_batch, eps)
    return from_channels_first(y, channel_dim)


class GhostBatchNorm(Norm):
    r"""Ghost Batch Normalization: BN statistics per chunk ("ghost batch") of the batch.

    $$ y = \gamma \frac{x - \mu_k}{\sqrt{\sigma^2_k + \epsilon}} + \beta $$

    Training: μ_k, σ²_k (biased) over (ghost batch k, *S), one per (ghost batch, channel). The
    batch is cut into consecutive chunks of ``ghost_batch_size`` samples (``split="size"``,
    batch 10, g = 4: 4, 4, 2) or as the reference code's ``x.chunk(N // g)`` (``split="count"``:
    5, 5); a remainder with one value per statistic is merged into the previous chunk; see
    `ghost_plan`. A batch of at most ``ghost_batch_size`` samples is one chunk: plain BN. Eval:
    the running statistics (plain BN eval); with ``track_running_stats=False``, the whole
    batch's statistics (ghost batches exist in training only).

    Running statistics, one buffer write per training step: the closed form of one PyTorch
    momentum EMA step per ghost batch, in batch order, as the reference code's per-chunk BN
    calls do: ŝ ← (1 − m)^K·ŝ + Σ_i m(1 − m)^(K−i)·s_i over the K chunks, s = μ_k and the
    unbiased σ²_k. ``momentum=None``: each step's average of its ghost-batch statistics enters an
    equal-weight cumulative average over steps. ``num_batches_tracked`` counts steps. See
    `update_ghost_running_stats_`. (TF's ``virtual_batch_size`` instead averages the ghost
    statistics and takes one EMA step with m; the two differ in the effective momentum,
    1 − (1 − m)^K here.)

    Under `normlab.sync` ghost batches are per replica, as Hoffer et al.'s are per device: each
    replica cuts its own batch and normalizes each chunk with its own statistics (outputs and
    gradients need no collective). Sync shares the running statistics: one all_gather per step,
    then every replica applies the update above to all replicas' ghost batches in rank order,
    which equals one process on the concatenated batch cut at the same places (with
    ``split="size"``, this layer's own cut when each replica's batch but the last is a multiple
    of ``ghost_batch_size``); the buffers are identical on every replica.

    Args:
        num_features: C, the number of channels.
        ghost_batch_size: samples per ghost batch, a positive int; the paper uses 128.
        split: ``"size"`` (chunks of exactly ``ghost_batch_size`` samples, plus a remainder) or
            ``"count"`` (``x.chunk(N // ghost_batch_size)``, the reference code's rule); see
            `ghost_plan`.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> gbn = GhostBatchNorm(1, ghost_batch_size=2, eps=1e-12)
        >>> gbn(torch.tensor([[0.0], [2.0], [10.0], [14.0]])).detach().flatten()
        tensor([-1.,  1., -1.,  1.])
        >>> gbn.running_mean  # 0.9·(0.9·0 + 0.1·1) + 0.1·12
        tensor([1.2900])

    References:
        Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the generalization
        gap in large batch training of neural networks", NeurIPS 2017, arXiv:1705.08741.
    """

    _repr_keys = (
        "ghost_batch_size", "split", "eps", "momentum", "affine", "track_running_stats"
    )
    running_stats = "batch"
    eval_is_batch_norm = True
    supports_sync = True

    def __init__(
        self,
        num_features: int,
        *,
        ghost_batch_size: int = 128,
        split: str = "size",
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.ghost_batch_size = check_ghost_batch_size(ghost_batch_size)
        self.split = check_split(split)
        self.axes = Axes(("batch", "spatial"), ghost_batch_size=self.ghost_batch_size)
        self._init_running_stats(track_running_stats, momentum, device, dtype)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if not self.training:
            use_batch = self.running_mean is None
            if use_batch:
                self._check_set_size(x, axes_lib.BATCH)
            xc = to_channels_first(x, self.channel_dim)
            y = _batch_norm(
                xc, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                self.eps,
            )
            return from_channels_first(y, self.channel_dim)
        if x.numel() and x.shape[0] <= self.ghost_batch_size and self.moments_reducer is None:
            if x.numel() == self.num_features:  # one ghost batch: only then 1 value per set
                self._check_set_size(x)
            return self._one_ghost_batch(x)  # plain BN: the same statistics and update
        self._check_set_size(x)
        if x.numel() == 0:  # no ghost batch (under sync, this replica still joins the gather)
            empty = x.new_zeros(0, self.num_features, dtype=accumulation_dtype(x.dtype))
            y, stats = x.clone(), (empty, empty, (0, 0, 0), 0)
        else:
            y, stats = _ghost_train(
                x, self.weight, self.bias, self.ghost_batch_size, self.eps, self.channel_dim,
                self.split,
            )
        momentum = self.momentum
        if self.running_mean is None:
            return y
        if self.moments_reducer is None and momentum is not None and momentum > 0 and x.numel():
            mu, sigma2, plan, positions = stats
            update_ghost_running_ema_(
                self.running_mean, self.running_var, self.num_batches_tracked, mu, sigma2,
                [size * positions for size in chunk_sizes(plan)], momentum,
            )
        else:
            update_ghost_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked,
                *self._step_terms(stats), self.momentum,
            )
        return y

    def _one_ghost_batch(self, x: Tensor) -> Tensor:
        """One ghost batch: BN's statistics, and BN's update (the ghost update with K = 1)."""
        xc, w, b, mean = to_channels_first(x, self.channel_dim), self.weight, self.bias, \
            self.running_mean
        y = _batch_norm(xc, None, None, w, b, True, self.eps) if mean is None else (
            batch_norm_train_(xc, w, b, mean, self.running_var, self.num_batches_tracked,
                              self.momentum, self.eps))
        return from_channels_first(y, self.channel_dim)

    def _step_terms(self, stats: tuple[Tensor, Tensor, Plan, int]) -> tuple[list[int], Tensor]:
        """(K_r, `ghost_terms`) of this step: this batch's (R = 1) or, under `normlab.sync`,
        every replica's in rank order (one all_gather; an empty replica sends K = 0)."""
        mu, sigma2, plan, positions = stats
        counts = [size * positions for size in chunk_sizes(plan)]
        k, terms = len(counts), ghost_terms(mu, sigma2, counts, self.momentum)
        reducer = self.moments_reducer
        if reducer is None:
            return [k], terms[None]
        if not isinstance(reducer, CrossReplicaMoments):  # a merge alone cannot order them
            raise errors.ConfigError(
                f"{self._name()}: moments_reducer={reducer!r} cannot gather every replica's "
                "ghost batches for the running statistics. Synchronize with normlab.sync(model)."
            )
        rows = reducer.gather(torch.cat([terms.new_full((1, terms.shape[1]), k), terms]))
        return [int(n) for n in rows[:, 0, 0].tolist()], rows[:, 1:]


__all__ = [
    "SPLITS", "GhostBatchNorm", "check_split", "chunk_moments", "ghost_batch_norm", "ghost_plan"
]


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "ghost_batch_norm",
        GhostBatchNorm,
        "Hoffer, Hubara & Soudry 2017, arXiv:1705.08741",
        aliases=("gbn", "ghost_bn"),
        functional=(ghost_batch_norm,),
        spec_arg="ghost_batch_size",
        fitting="gbn:2",
    ),
)
