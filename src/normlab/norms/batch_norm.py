"""Batch Normalization (Ioffe & Szegedy 2015, arXiv:1502.03167).

Fast paths (training: `batch_norm_train_`):

* large contiguous channels-first input on the CPU (at least 2^19 elements and 32 positions per
  (sample, channel) slice, `normlab.norms._batch_norm_composed`): per-(n, c) moments from the
  native group-norm kernel merged exactly over the batch, one affine pass, and a backward that
  reads x and dy once for its sums; 0.55-0.6x ``torch.nn.BatchNorm2d``'s time on (32, 64, 32,
  32) and (32, 64, 16, 16) (benchmarks/results/issue14_batch_norm.md);
* otherwise ATen's native batch-norm kernel, on a channels-first view of the input (an NHWC
  tensor becomes a channels_last NCHW view, which the kernel reads without a copy). In training
  on the CPU the kernel also applies the running-statistics EMA, under the guard and counter of
  `normlab.core.running.update_by_kernel_`: 23 ATen calls per forward + backward against
  ``torch.nn.BatchNorm2d``'s 20 (benchmarks/bench_per_call.py --ops). Elsewhere (accelerators,
  torch.compile, low-precision buffers) the kernel writes the batch mean and unbiased variance
  into fresh buffers and `update_running_ema_` folds them in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.backends import cudnn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.running import native_ema_eligible, update_by_kernel_, update_running_ema_
from normlab.norms import _batch_norm_composed as composed
from normlab.norms._base import (
    Norm,
    check_set_size,
    from_channels_first,
    kernel_params,
    normalize_by_moments,
    to_channels_first,
)
from normlab.norms._torch_types import TorchBatchNorm


def batch_norm_and_stats(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """Training-mode BN of a channels-first ``x``; a (2, C) tensor holding the batch mean and
    the *unbiased* batch variance (what the running buffers move toward), and its two rows.

    The lean form of `_per_instance.batch_norm_with_moments` for BatchNorm's per-call path:
    one allocation and no arithmetic besides the kernel. ``weight`` and ``bias`` come from
    `kernel_params`."""
    stats = torch.zeros(
        2, x.shape[1], dtype=x.dtype if weight is None else weight.dtype, device=x.device
    )  # x.dtype is the accumulation dtype whenever weight is None (see kernel_params)
    mean, unbiased = stats.unbind(0)
    y = torch.batch_norm(x, weight, bias, mean, unbiased, True, 1.0, eps, cudnn.enabled)
    return y, stats, (mean, unbiased)


def _batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_batch_stats: bool,
    eps: float,
) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    if use_batch_stats and composed.applies(x, weight, bias):
        done = composed.batch_norm_composed(x, weight, bias, eps)
        if done is not None:
            return done[0]
    weight, bias = kernel_params(x, weight, bias, x.shape[1])
    if use_batch_stats:
        return torch.batch_norm(x, weight, bias, None, None, True, 0.0, eps, cudnn.enabled)
    if weight is not None and running_mean is not None and running_var is not None:
        running_mean, running_var = running_mean.to(weight.dtype), running_var.to(weight.dtype)
    return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Batch normalization; pure (never writes ``running_mean`` / ``running_var``).

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (N, *S), one per channel: the batch's (biased variance) when ``training`` or
    when no running statistics are given, else ``running_mean`` / ``running_var``.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> batch_norm(x, training=True, eps=1e-12)
        tensor([[-1.],
                [ 1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("batch_norm", x, errors.channels_of(running_mean, weight, bias),
                       channel_dim)
    if (running_mean is None) != (running_var is None):
        raise errors.InputError(
            "batch_norm: pass both running_mean and running_var, or neither; got only "
            f"{'running_mean' if running_var is None else 'running_var'}."
        )
    use_batch = training or running_mean is None
    xc = to_channels_first(x, channel_dim)
    if use_batch:
        check_set_size("batch_norm", axes_lib.BATCH, xc, 1)
    y = _batch_norm(xc, running_mean, running_var, weight, bias, use_batch, eps)
    return from_channels_first(y, channel_dim)


def batch_norm_train_(
    xc: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor,
    running_var: Tensor, num_batches_tracked: Tensor | None, momentum: float | None, eps: float,
) -> Tensor:
    """Training-mode BN of a non-empty channels-first ``xc`` that moves the running buffers
    toward the batch statistics in place (through `normlab.core.running`, their one writer).

    Large contiguous input takes the per-(n, c)-kernel composition
    (`normlab.norms._batch_norm_composed`); otherwise, on the CPU in eager mode, ATen's kernel
    applies the EMA itself under the guard of `update_by_kernel_`; elsewhere the kernel writes
    the batch statistics into fresh buffers that `update_running_ema_` folds in."""
    if composed.applies(xc, weight, bias):
        done = composed.batch_norm_composed(xc, weight, bias, eps)
        if done is not None:  # else torch's kernel (it owns the non-finite rule)
            y, batch = done
            update_running_ema_(
                (running_mean, running_var), (batch.mean, batch.unbiased_var),
                num_batches_tracked, momentum, watch=batch.var,
            )
            return y
    weight, bias = kernel_params(xc, weight, bias, xc.shape[1])
    if native_ema_eligible((running_var,)) and running_var.dtype == (
        xc.dtype if weight is None else weight.dtype
    ):  # ATen's kernel applies the EMA; core.running guards and counts
        return update_by_kernel_(
            (running_mean, running_var), num_batches_tracked, momentum,
            lambda f: torch.batch_norm(xc, weight, bias, running_mean, running_var, True, f, eps,
                                       False),
        )
    y, stats, rows = batch_norm_and_stats(xc, weight, bias, eps)
    update_running_ema_((running_mean, running_var), rows, num_batches_tracked, momentum,
                        watch=stats)
    return y


class BatchNorm(Norm, TorchBatchNorm):
    r"""Batch Normalization for inputs of any rank (replaces BatchNorm1d/2d/3d).

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (N, *S), one per channel. Training: the batch's mean and biased variance, and
    the running buffers are updated (see :mod:`normlab.core.running`: PyTorch's momentum
    convention, unbiased variance stored, ``momentum=None`` = cumulative average). Eval: the
    running statistics (the batch's when ``track_running_stats=False``).

    A ``torch.nn.BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d`` by type (normlab's code
    first; see :mod:`normlab.norms._torch_types`), so tools that find BN layers by
    ``isinstance`` treat it as one: ``torch.optim.swa_utils.update_bn``,
    ``SyncBatchNorm.convert_sync_batchnorm``, timm's ``freeze``, detectron2's and mmengine's
    norm parameter groups; ``torch.ao.quantization.fuse_modules`` fuses it after a conv or
    linear layer.

    Args:
        num_features: C, the number of channels.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> bn = BatchNorm(2)
        >>> y = bn(torch.tensor([[0.0, 2.0], [2.0, 6.0]]))
        >>> bn.running_mean
        tensor([0.1000, 0.4000])

    References:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
        Internal Covariate Shift", ICML 2015, arXiv:1502.03167.
    """

    _repr_keys = ("eps", "momentum", "affine", "track_running_stats")
    axes = axes_lib.BATCH
    running_stats = "batch"
    eval_is_batch_norm = True
    supports_sync = True

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self._init_running_stats(track_running_stats, momentum, device, dtype)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        cd = self.channel_dim
        xc = to_channels_first(x, cd)
        params, buffers = self._parameters, self._buffers  # one dict read each, not __getattr__
        running_mean = buffers["running_mean"]
        if self.training and self.moments_reducer is not None:
            return from_channels_first(self._forward_synced(xc), cd)
        if self.training or running_mean is None:
            if x.numel() == self.num_features:  # the only way to get 1 value per channel
                self._check_set_size(x)
            if self.training and running_mean is not None and xc.numel():
                y = batch_norm_train_(
                    xc, params["weight"], params["bias"], running_mean, buffers["running_var"],
                    buffers["num_batches_tracked"], self.momentum, self.eps,
                )
                return from_channels_first(y, cd)
        y = _batch_norm(
            xc, running_mean, buffers["running_var"], params["weight"], params["bias"],
            self.training or running_mean is None, self.eps,
        )
        return from_channels_first(y, cd)


    def _forward_synced(self, xc: Tensor) -> Tensor:
        """Training with the batch moments of every replica (`normlab.sync`): one collective
        in the forward, one in the backward; the running buffers move toward the global mean
        and the global unbiased variance (global count), identically on every replica."""
        batch = self._synced_batch_moments(xc)
        y = normalize_by_moments(xc, batch, self.weight, self.bias, self.eps)
        running_mean = self.running_mean
        if running_mean is not None and batch.count:  # all replicas empty: nothing to learn
            update_running_ema_(
                (running_mean, self.running_var), (batch.mean, batch.unbiased_var),
                self.num_batches_tracked, self.momentum,
            )
        return y


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "batch_norm",
        BatchNorm,
        "Ioffe & Szegedy 2015, arXiv:1502.03167",
        aliases=("bn", "batchnorm"),
        functional=(batch_norm,),
    ),
)
