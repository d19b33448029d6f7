"""Instance Normalization (Ulyanov, Vedaldi & Lempitsky 2016, arXiv:1607.08022).

Fast path: ATen's native group-norm kernel with one group per channel, which returns the
per-(sample, channel) moments along with the output (torch.nn.InstanceNorm instead runs batch
norm on an (1, N·C, *S) view, several times slower on CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import Moments
from normlab.core.running import update_running_stats_
from normlab.norms._base import (
    Norm,
    check_set_size,
    from_channels_first,
    group_norm_kernel,
    to_channels_first,
)
from normlab.norms._torch_types import TorchInstanceNorm
from normlab.norms.batch_norm import _batch_norm


def instance_norm_with_moments(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Moments]:
    """IN of a channels-first ``x`` and its per-(sample, channel) moments, shape (N, C)."""
    n, c = x.shape[:2]
    y, mean, rstd = group_norm_kernel(x, c, weight, bias, eps)
    var = (rstd.detach().double().pow(-2) - eps).clamp(min=0).to(rstd.dtype)
    return y, Moments(mean.detach().view(n, c), var.view(n, c), x.numel() // (n * c))


def _instance_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    use_input_stats: bool,
    eps: float,
) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    if use_input_stats:
        return group_norm_kernel(x, x.shape[1], weight, bias, eps)[0]
    # eval with running statistics is BatchNorm's eval: one per-channel affine map
    return _batch_norm(x, running_mean, running_var, weight, bias, False, eps)


def instance_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    use_input_stats: bool = True,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Instance normalization; pure.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (*S), one per (sample, channel); with ``use_input_stats=False`` the given
    ``running_mean`` / ``running_var`` (one per channel) instead.

    Args:
        running_mean: per-channel mean (C,), used when ``use_input_stats=False``; only read.
        running_var: per-channel variance (C,), as ``running_mean``.
        use_input_stats: True: each (sample, channel)'s own statistics; False: ``running_mean``
            / ``running_var``.

    Example:
        >>> instance_norm(torch.tensor([[[1.0, 3.0]]]), eps=1e-12)
        tensor([[[-1.,  1.]]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("instance_norm", x,
                       errors.channels_of(weight, bias, running_mean, running_var), channel_dim)
    if not use_input_stats and (running_mean is None or running_var is None):
        raise errors.InputError(
            "instance_norm: use_input_stats=False needs running_mean and running_var; "
            "pass both or set use_input_stats=True."
        )
    xc = to_channels_first(x, channel_dim)
    if use_input_stats:
        check_set_size("instance_norm", axes_lib.INSTANCE, xc, 1)
    y = _instance_norm(xc, weight, bias, running_mean, running_var, use_input_stats, eps)
    return from_channels_first(y, channel_dim)


class InstanceNorm(Norm, TorchInstanceNorm):
    r"""Instance Normalization for inputs of any rank (replaces InstanceNorm1d/2d/3d).

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (*S), one per (sample, channel), in training and eval alike (the paper's IN).
    With ``track_running_stats=True`` training also keeps running averages of the batch mean
    of the instance means and of the instance unbiased variances (torch.nn's convention), and
    eval uses them instead; ``num_batches_tracked`` counts the updates (torch.nn leaves it 0).

    A ``torch.nn.InstanceNorm1d/2d/3d`` by type (see :mod:`normlab.norms._torch_types`), so
    tools that find norm layers by ``isinstance`` (detectron2's and mmengine's norm parameter
    groups) treat it as one.

    Args:
        num_features: C, the number of channels.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> InstanceNorm(1, eps=1e-12)(torch.tensor([[[2.0, 4.0]]]))
        tensor([[[-1.,  1.]]])

    References:
        Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
        Stylization", arXiv:1607.08022, 2016.
    """

    _repr_keys = ("eps", "momentum", "affine", "track_running_stats")
    axes = axes_lib.INSTANCE
    running_stats = "instance"

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
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
        xc = to_channels_first(x, self.channel_dim)
        use_input = self.training or self.running_mean is None
        if use_input:
            self._check_set_size(x)
        if self.training and self.running_mean is not None and xc.numel():
            y, moments = instance_norm_with_moments(xc, self.weight, self.bias, self.eps)
            # torch.nn's rule: average the per-instance statistics over the batch
            batch = Moments(moments.mean.mean(0), moments.var.mean(0), moments.count)
            update_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked,
                batch, self.momentum,
            )
        else:
            y = _instance_norm(
                xc, self.weight, self.bias, self.running_mean, self.running_var, use_input,
                self.eps,
            )
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "instance_norm",
        InstanceNorm,
        "Ulyanov, Vedaldi & Lempitsky 2016, arXiv:1607.08022",
        aliases=("in", "instancenorm"),
        functional=(instance_norm,),
    ),
)
