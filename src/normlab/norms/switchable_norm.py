"""Switchable Normalization (Luo, Ren, Peng, Zhang & Li, ICLR 2019, arXiv:1806.10779).

Reference code: ``switchablenorms/Switchable-Normalization``, ``devkit/ops/switchable_norm.py``
(SwitchNorm1d/2d/3d) and ``models/switchable_norm.py``.

Fast path: the IN, LN and BN statistics all come from ONE read of the input. The native
group-norm kernel gives the mean and biased variance of every (sample, channel) slice; the LN and
BN statistics are their exact merges over channels and over the batch (Chan et al.),

    μ_G = mean_i μ_i,   σ²_G = mean_i σ²_i + mean_i (μ_i − μ_G)²    (equal counts),

computed on the tiny (N, C) tensors; the output is one per-(sample, channel) affine pass
y = x·A + B (`normlab.norms._instance_affine`), whose backward reads x and dy once more. The
function (μ_IN, σ²_IN, λ, λ', γ, β) -> (A, B) has a hand-written VJP (an
`AnalyticCoefficients`, as Batch-Instance Norm's): autograd through its couple of dozen tiny
operations would cost more Python time than the data passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import Moments, merge_equal_counts
from normlab.core.running import update_running_stats_
from normlab.norms._analytic_coefficients import AnalyticCoefficients
from normlab.norms._base import Norm, check_set_size, from_channels_first, to_channels_first
from normlab.norms._instance_affine import (
    apply_coefficients,
    centered_affine,
    instance_moments_autograd,
)

# -- errors raised by this method ------------------------------------------------------------


def check_branches(branches: object, known: Sequence[str]) -> tuple[str, ...]:
    """A non-empty, repeat-free subset of ``known``, returned in ``known``'s order."""
    items: tuple[object, ...] = ()
    if not isinstance(branches, str) and isinstance(branches, Iterable):
        items = tuple(branches)
    if (
        not items
        or any(b not in known for b in items)
        or len(set(items)) != len(items)
    ):
        raise errors.ConfigError(
            f"branches must be a non-empty tuple of distinct names among {tuple(known)}; got "
            f"{branches!r}. For a single branch write a tuple, e.g. branches=('bn',)."
        )
    return tuple(b for b in known if b in items)


def instance_branch_needs_positions(layer: str, shape: Sequence[int]) -> errors.InputError:
    return errors.InputError(
        f"{layer}: the IN branch computes each statistic over the positions *S, and input of "
        f"shape {tuple(shape)} has 1 position per (sample, channel), so instance statistics "
        "are undefined. For (N, C) input drop the IN branch: branches=('ln', 'bn') (what the "
        "reference's SwitchNorm1d uses)."
    )


BRANCHES: tuple[str, ...] = ("in", "ln", "bn")
"""The statistics Switchable Norm mixes, in the reference's order (IN, LN, BN)."""

_BRANCH_AXES = {"in": axes_lib.INSTANCE, "ln": axes_lib.LAYER, "bn": axes_lib.BATCH}


@dataclass(frozen=True)
class _Config:
    """What the coefficient function computes: the branches in use and the optional inputs."""

    use_in: bool
    use_ln: bool
    use_bn: bool
    eps: float
    has_weight: bool
    has_bias: bool
    running: bool  # the BN branch reads running statistics (eval)


def _forward_parts(
    cfg: _Config, mean: Tensor, var: Tensor, params: tuple[Tensor, ...]
) -> dict[str, Any]:
    """A, B and the intermediates the backward needs; all (N, C), (C,) or (K,) tensors.

    μ = Σ_k w_k μ_k, σ² = Σ_k w'_k σ²_k, r = (σ² + ε)^(-1/2), A = γ r, B = β − μ A; the LN and BN
    moments are merged from the instance moments (`normlab.core.moments.merge_equal_counts`).
    """
    dtype = mean.dtype
    mean_logits, var_logits, *rest = params
    parts: dict[str, Any] = {"mean": mean}
    means: list[Tensor] = []
    variances: list[Tensor] = []
    if cfg.use_in:
        means.append(mean)
        variances.append(var)
    if cfg.use_ln:  # over the C channels of each sample
        mu, sigma2, parts["dev_ln"] = merge_equal_counts(mean, var, 1)
        means.append(mu)
        variances.append(sigma2)
    if cfg.use_bn:
        if cfg.running:  # eval: the running estimates (unbiased variance, as torch BN uses)
            means.append(rest[-2].to(dtype))
            variances.append(rest[-1].to(dtype))
        else:  # over the N samples of each channel
            mu, sigma2, parts["dev_bn"] = merge_equal_counts(mean, var, 0)
            parts["batch"] = (mu, sigma2)
            means.append(mu)
            variances.append(sigma2)
    w_mean = torch.softmax(mean_logits, 0, dtype=dtype)
    w_var = torch.softmax(var_logits, 0, dtype=dtype)
    wm, wv = w_mean.unbind(), w_var.unbind()
    mu = wm[0] * means[0]
    sigma2 = wv[0] * variances[0]
    for k in range(1, len(means)):
        mu = torch.addcmul(mu, wm[k], means[k])
        sigma2 = torch.addcmul(sigma2, wv[k], variances[k])
    r = (sigma2 + cfg.eps).rsqrt()
    scale = r * rest[0].to(dtype) if cfg.has_weight else r
    if cfg.has_bias:
        shift = torch.addcmul(rest[int(cfg.has_weight)].to(dtype), mu, scale, value=-1)
    else:
        shift = -(mu * scale)
    if scale.shape != mean.shape:  # a single branch without per-(n, c) statistics
        scale, shift = scale.expand_as(mean), shift.expand_as(mean)
    parts.update(
        w_mean=w_mean, w_var=w_var, wm=wm, wv=wv, means=means, variances=variances, mu=mu,
        r=r, scale=scale, shift=shift,
    )
    return parts


def _backward_parts(
    cfg: _Config, parts: dict[str, Any], params: tuple[Tensor, ...], g_scale: Tensor,
    g_shift: Tensor,
) -> list[Tensor | None]:
    """The VJP of (A, B) for (μ_IN, σ²_IN, λ, λ', [γ], [β]) at the cotangents (Σ dy·x, Σ dy).

    ∂L/∂μ = −A ∂L/∂B; ∂L/∂A including B's dependence: g = ∂L/∂A − μ ∂L/∂B; ∂L/∂γ = Σ_n g r,
    ∂L/∂σ² = −½ r³ γ g = −½ (g r) A r; then the softmax mixes (∂L/∂λ = w ⊙ (g − ⟨w, g⟩), ATen's
    softmax backward) and the merges (∂μ_G/∂μ_i = ∂σ²_G/∂σ²_i = 1/n, ∂σ²_G/∂μ_i =
    2(μ_i − μ_G)/n). Every ATen call counts on small maps (issue 9), hence the grouping.
    """
    mean, mu, r, scale = parts["mean"], parts["mu"], parts["r"], parts["scale"]
    n, c = mean.shape
    g_r = torch.addcmul(g_scale, mu, g_shift, value=-1).mul_(r)  # g·r
    g_mu = torch.mul(scale, g_shift).neg_()
    g_gamma = g_r.sum(0) if cfg.has_weight else None
    g_sigma2 = torch.mul(g_r, scale * r).mul_(-0.5)
    w_mean, w_var, wm, wv = parts["w_mean"], parts["w_var"], parts["wm"], parts["wv"]
    g_w_mean = torch.stack([g_mu * m for m in parts["means"]]).sum((1, 2))
    g_w_var = torch.stack([g_sigma2 * v for v in parts["variances"]]).sum((1, 2))
    g_mean_logits = torch._softmax_backward_data(g_w_mean, w_mean, 0, w_mean.dtype)
    g_var_logits = torch._softmax_backward_data(g_w_var, w_var, 0, w_var.dtype)
    if cfg.use_in:
        g_mean, g_var, k = wm[0] * g_mu, wv[0] * g_sigma2, 1
    else:
        g_mean, g_var, k = torch.zeros_like(mean), torch.zeros_like(mean), 0
    for dim, size, key, used in ((1, c, "dev_ln", cfg.use_ln), (0, n, "dev_bn", cfg.use_bn)):
        if not used:
            continue
        if key in parts:  # merged from the instance moments (not the running statistics)
            g_mu_k = g_mu.sum(dim, keepdim=True)
            g_var_k = g_sigma2.sum(dim, keepdim=True)
            g_mean = torch.addcmul(g_mean, wm[k], g_mu_k, value=1 / size)
            g_mean = torch.addcmul(g_mean, wv[k], g_var_k * parts[key], value=2 / size)
            g_var = torch.addcmul(g_var, wv[k], g_var_k, value=1 / size)
        k += 1
    grads: list[Tensor | None] = [g_mean, g_var, g_mean_logits, g_var_logits]
    if cfg.has_weight:
        grads.append(g_gamma)
    if cfg.has_bias:
        grads.append(g_shift.sum(0))
    return grads


def _check_sets(
    layer: str, x: Tensor, branches: tuple[str, ...], batch_stats: bool, channel_dim: int
) -> None:
    """Every statistic in use must cover more than one value (policy of normlab's norms)."""
    if not x.numel():
        return
    n, c = x.shape[0], x.shape[channel_dim]
    positions = x.numel() // (n * c)
    sizes = {"in": positions, "ln": c * positions, "bn": n * positions}
    if "in" in branches and positions == 1:
        raise instance_branch_needs_positions(layer, x.shape)
    for branch in branches:
        if sizes[branch] == 1 and (branch != "bn" or batch_stats):
            check_set_size(layer, _BRANCH_AXES[branch], x, channel_dim)  # raises


def _switchable_norm(
    x: Tensor,
    branches: tuple[str, ...],
    mean_weight: Tensor,
    var_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running: tuple[Tensor, Tensor] | None,
    eps: float,
    channel_dim: int,
) -> tuple[Tensor, Moments | None]:
    """The output and, when computed, the BN branch's batch moments (x non-empty)."""
    params = [mean_weight, var_weight, *(p for p in (weight, bias) if p is not None)]
    if running is not None:
        params.extend(running)
    use_in, use_ln, use_bn = (b in branches for b in BRANCHES)
    cfg = _Config(use_in, use_ln, use_bn, eps, weight is not None, bias is not None,
                  running is not None)
    coefficients = AnalyticCoefficients(_forward_parts, _backward_parts, cfg)
    return apply_coefficients(x, coefficients, params, eps, channel_dim)


def switchable_norm(
    x: Tensor,
    mean_weight: Tensor,
    var_weight: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    branches: Sequence[str] = BRANCHES,
    training: bool = False,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Switchable normalization; pure (never writes ``running_mean`` / ``running_var``).

    $$ y = \gamma \frac{x - \sum_k w_k \mu_k}{\sqrt{\sum_k w'_k \sigma^2_k + \epsilon}} + \beta,
       \quad w = \mathrm{softmax}(\lambda),\ w' = \mathrm{softmax}(\lambda') $$

    k runs over ``branches`` (IN: over *S per (sample, channel); LN: over (C, *S) per sample;
    BN: over (N, *S) per channel), in the order IN, LN, BN; ``mean_weight`` = λ and
    ``var_weight`` = λ' hold one logit per branch. Variances are biased. The BN branch uses
    the batch's statistics when ``training`` or when no running statistics are given, else
    ``running_mean`` / ``running_var``.

    Args:
        mean_weight: λ, one logit per branch (the softmax weights the branch means).
        var_weight: λ', one logit per branch (the softmax weights the branch variances).
        branches: the statistics mixed, among ``"in"``, ``"ln"``, ``"bn"``.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
        >>> w = torch.tensor([1e4, 0.0, 0.0])  # all weight on IN
        >>> switchable_norm(x, w, w, training=True, eps=1e-12)
        tensor([[[-1.,  1.],
                 [-1.,  1.]]])
    """
    branches = check_branches(branches, BRANCHES)
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("switchable_norm", x, errors.channels_of(running_mean, weight, bias),
                       channel_dim)
    for name, logits in (("mean_weight", mean_weight), ("var_weight", var_weight)):
        if not isinstance(logits, Tensor) or logits.shape != (len(branches),):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise errors.InputError(
                f"switchable_norm: {name} must hold one logit per branch, shape "
                f"({len(branches)},) for branches={branches}; got {shape}."
            )
    if (running_mean is None) != (running_var is None):
        raise errors.InputError(
            "switchable_norm: pass both running_mean and running_var, or neither; got only "
            f"{'running_mean' if running_var is None else 'running_var'}."
        )
    use_running = not training and running_mean is not None and "bn" in branches
    _check_sets("switchable_norm", x, branches, not use_running, channel_dim)
    if x.numel() == 0:
        return x.clone()
    running = None
    if use_running and running_mean is not None and running_var is not None:
        running = (running_mean, running_var)
    y, _ = _switchable_norm(
        x, branches, mean_weight, var_weight, weight, bias, running, eps, channel_dim
    )
    return y


class SwitchableNorm(Norm):
    r"""Switchable Normalization: a learned softmax mix of IN, LN and BN statistics.

    $$ y = \gamma \frac{x - \sum_k w_k \mu_k}{\sqrt{\sum_k w'_k \sigma^2_k + \epsilon}} + \beta,
       \quad w = \mathrm{softmax}(\lambda),\ w' = \mathrm{softmax}(\lambda'),\
       k \in \{\mathrm{IN}, \mathrm{LN}, \mathrm{BN}\} $$

    μ_IN, σ²_IN over *S per (sample, channel); μ_LN, σ²_LN over (C, *S) per sample; μ_BN, σ²_BN
    over (N, *S) per channel. All three come from one pass over the input: LN and BN moments are
    exact merges of the instance moments. λ = ``mean_weight`` and λ' = ``var_weight`` are
    separate importance logits for the means and the variances, initialized to 1 (uniform
    weights 1/3), as in the paper and reference code.

    Documented choices (differences from the reference code):

    * **Biased variances everywhere.** The reference computes σ²_IN with the unbiased estimator,
      which makes its LN/BN merges slightly inexact and its one-hot layers differ from IN/LN/BN.
      normlab uses biased variances, so one-hot weights reproduce BN (train and eval), IN and
      LN exactly (paper, testable claim 1; METHODS.md Appendix A.4).
    * **Momentum in PyTorch's convention** (weight of the new batch, default 0.1). The
      reference's ``momentum`` m is the weight of the OLD value (TF style): its SwitchNorm2d
      default m = 0.9 is ``momentum=0.1`` here; its SwitchNorm1d/3d default 0.997 is
      ``momentum=0.003``. ``momentum=None`` is a cumulative average.
    * **Running statistics like torch BatchNorm**: ``running_mean`` starts at 0 and
      ``running_var`` at 1 (the reference starts both at 0) and stores the unbiased batch
      variance, so the statistics of a ``torch.nn.BatchNorm2d`` / ``normlab.BatchNorm``
      checkpoint load as they are (``load_state_dict(bn_state, strict=False)``; the importance
      logits keep their values). Eval uses them for the BN branch only; IN and LN always use
      the input's statistics. With ``track_running_stats=False`` the BN branch uses the batch's
      statistics in eval too. A batch whose statistics are not finite leaves the buffers as
      they are.
    * The reference's **batch-average** inference mode (``using_moving_average=False``:
      re-estimate the BN statistics over ~200 training batches after training; the paper's
      preferred option) is precise-BN recalibration, provided by normlab's surgery tools
      rather than by the layer.
    * (N, C) input (one position per instance): the IN statistics are undefined, so a layer
      with the IN branch raises an InputError; use ``branches=("ln", "bn")``, the reference's
      SwitchNorm1d.
    * **Across replicas** (`normlab.sync`, training): μ_BN, σ²_BN are the moments of every
      replica's batch (merged exactly, `normlab.core.cross_replica`) and the running buffers
      move toward them (global count: identical on every replica); IN and LN stay per sample.
      Output and gradients equal one process's on the concatenated batch.

    Args:
        num_features: C, the number of channels.
        branches: the statistics to mix, any non-empty subset of ``("in", "ln", "bn")``
            (kept in that order; ``mean_weight`` / ``var_weight`` have one entry per branch).
            The reference's ``using_bn=False`` is ``branches=("in", "ln")``. Without "bn"
            there are no running buffers.
        last_gamma: initialize γ to 0 instead of 1 (the reference's option for the last
            norm of each residual block).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> sn = SwitchableNorm(2)
        >>> torch.softmax(sn.mean_weight, 0)
        tensor([0.3333, 0.3333, 0.3333], grad_fn=<SoftmaxBackward0>)
        >>> y = sn(torch.tensor([[[0.0, 2.0], [4.0, 6.0]], [[1.0, 1.0], [3.0, 5.0]]]))
        >>> sn.running_mean
        tensor([0.1000, 0.4500])

    References:
        Luo, Ren, Peng, Zhang & Li, "Differentiable Learning-to-Normalize via Switchable
        Normalization", ICLR 2019, arXiv:1806.10779. Reference code:
        https://github.com/switchablenorms/Switchable-Normalization
    """

    _repr_keys = ("eps", "momentum", "affine", "track_running_stats", "branches")
    running_stats = "batch"  # the BN branch's
    supports_sync = True  # the BN branch's moments (see the class docstring)
    statistics = "a softmax mix of IN (over *S), LN (over (C, *S)) and BN (over (N, *S)) moments"
    mean_weight: nn.Parameter
    var_weight: nn.Parameter

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        branches: Sequence[str] = BRANCHES,
        last_gamma: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.branches = check_branches(branches, BRANCHES)
        self.last_gamma = bool(last_gamma)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.mean_weight = nn.Parameter(torch.empty(len(self.branches), **factory))
        self.var_weight = nn.Parameter(torch.empty(len(self.branches), **factory))
        tracking = bool(track_running_stats) and "bn" in self.branches
        self._init_running_stats(tracking, momentum, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1 (0 with ``last_gamma``), β = 0, importance logits 1, fresh running stats."""
        super().reset_parameters()
        nn.init.ones_(self.mean_weight)
        nn.init.ones_(self.var_weight)
        if self.weight is not None and self.last_gamma:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training and self.moments_reducer is not None and "bn" in self.branches:
            # shape checks only (an empty replica must still join the collective; the BN set
            # spans every replica's batch)
            probe = x if x.shape[0] else x.new_empty((1, *x.shape[1:]))
            _check_sets(self._name(), probe, self.branches, False, self.channel_dim)
            xc = to_channels_first(x, self.channel_dim)
            return from_channels_first(self._forward_synced(xc), self.channel_dim)
        use_running = not self.training and self.running_mean is not None
        _check_sets(self._name(), x, self.branches, not use_running, self.channel_dim)
        if x.numel() == 0:
            return x.clone()
        running = (self.running_mean, self.running_var) if use_running else None
        y, batch = _switchable_norm(
            x, self.branches, self.mean_weight, self.var_weight, self.weight, self.bias,
            running, self.eps, self.channel_dim,
        )
        if self.training and self.running_mean is not None and batch is not None:
            update_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked, batch,
                self.momentum,
            )
        return y

    def _forward_synced(self, xc: Tensor) -> Tensor:
        """Training with the BN branch's moments merged across replicas (one collective each
        way), composed from autograd operations so that gradients flow through the merge."""
        mean, var = instance_moments_autograd(xc)
        means, variances = [], []
        if "in" in self.branches:
            means.append(mean)
            variances.append(var)
        if "ln" in self.branches:
            mu, sigma2, _ = merge_equal_counts(mean, var, 1)
            means.append(mu)
            variances.append(sigma2)
        batch = self._synced_batch_moments(xc)
        means.append(batch.mean)
        variances.append(batch.var)
        w_mean = torch.softmax(self.mean_weight, 0, dtype=mean.dtype)
        w_var = torch.softmax(self.var_weight, 0, dtype=mean.dtype)
        wm, wv = w_mean.unbind(), w_var.unbind()
        mu, sigma2 = wm[0] * means[0], wv[0] * variances[0]
        for k in range(1, len(means)):
            mu, sigma2 = mu + wm[k] * means[k], sigma2 + wv[k] * variances[k]
        scale = (sigma2 + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight.to(scale.dtype)
        y = centered_affine(xc, ((mu, scale),), self.bias)
        if self.running_mean is not None and batch.count:  # all replicas empty: nothing to learn
            update_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked, batch,
                self.momentum,
            )
        return y

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        k = len(self.branches)
        for key in ("mean_weight", "var_weight"):
            value = state_dict.get(prefix + key)
            if not isinstance(value, Tensor):
                continue
            if value.shape != (k,):
                raise errors.invalid_parameter_state(
                    self._name(), key,
                    f"shape {tuple(value.shape)}, expected ({k},) for branches={self.branches}",
                    "The checkpoint was written with other branches; construct the layer with "
                    "the branches it was trained with (one logit per branch, order IN, LN, BN).",
                )
            if not torch.isfinite(value).all():
                raise errors.invalid_parameter_state(
                    self._name(), key, f"non-finite importance logits {value.tolist()}",
                    "The checkpoint is corrupted (training diverged?); load a valid state or "
                    "call reset_parameters().",
                )
        super()._validate_state(state_dict, prefix)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (", last_gamma=True" if self.last_gamma else "")


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "switchable_norm",
        SwitchableNorm,
        "Luo et al. 2019, arXiv:1806.10779",
        aliases=("sn", "switchnorm"),
        functional=(switchable_norm,),
    ),
)
