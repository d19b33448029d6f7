"""Mean-only Batch Normalization (Salimans & Kingma 2016 §4, arXiv:1602.07868).

Weight normalization's companion for CNNs: it centers each channel with the batch mean and
adds a bias, with no division by the standard deviation (the scale is weight norm's g). Its
gradient with respect to the input is the centered gradient ∂L/∂t − mean_B(∂L/∂t), which
adds less noise than full BN (the paper's argument for pairing the two).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.core.running import update_running_ema_
from normlab.norms import _batch_affine
from normlab.norms._base import (
    Norm,
    check_set_size,
    from_channels_first,
    layout_of,
    to_channels_first,
)


def _view(t: Tensor, ndim: int) -> Tensor:
    return t.view((1, -1) + (1,) * (ndim - 2))


def _center(xc: Tensor, mean: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """γ(x − μ) + b for a channels-first ``x``, in one pass over x (the shift is per channel)."""
    shift = -mean if weight is None else -mean * weight
    if bias is not None:
        shift = shift + bias
    if weight is None:
        y = xc + _view(shift.to(xc.dtype), xc.dim())
    else:
        y = torch.addcmul(_view(shift, xc.dim()), xc, _view(weight, xc.dim())).to(xc.dtype)
    # elementwise ops keep x's strides: hand a transposed x's output back dense
    return y if y.is_contiguous() else y.contiguous(memory_format=layout_of(xc))


class _CenterOnly:
    """The statistics law of `_batch_affine` that makes it mean-only BN: (μ, σ²) = (μ_B, 1),
    so with ε = 0 its scale is γ and its shift b − γμ_B; ∂μ/∂μ_B = 1, nothing depends on
    σ²_B."""

    reads_var = False

    def __call__(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        return mean, torch.ones_like(var)

    def vjp(
        self, mean_b: Tensor, var_b: Tensor, g_mean: Tensor, g_var: Tensor
    ) -> tuple[Tensor, Tensor]:
        return g_mean, torch.zeros_like(var_b)


_CENTER_ONLY = _CenterOnly()


def _batch_moments(xc: Tensor) -> tuple[Tensor, Tensor]:
    """The batch mean (differentiable) and unbiased variance per channel over (N, *S), one
    pass, accumulated in float32 for fp16 / bf16 input."""
    dims = (0, *range(2, xc.dim()))
    acc = accumulation_dtype(xc.dtype)
    var, mean = torch.var_mean(xc if acc == xc.dtype else xc.to(acc), dim=dims, correction=1)
    return mean, var


def _mean_only(
    xc: Tensor,
    running_mean: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_batch: bool,
) -> Tensor:
    if xc.numel() == 0:
        return xc.clone()
    if use_batch and _batch_affine.applies(xc, weight, bias):  # statistics in one read,
        # ∂x in one sums pass plus one dx pass, instead of a strided mean and autograd
        return _batch_affine.batch_affine(xc, weight, bias, _CENTER_ONLY, 0.0)[0]
    if use_batch:
        dims = (0, *range(2, xc.dim()))
        acc = accumulation_dtype(xc.dtype)
        mean = (xc if acc == xc.dtype else xc.to(acc)).mean(dims)
    else:
        assert running_mean is not None
        mean = running_mean
    return _center(xc, mean, weight, bias)


def mean_only_batch_norm(
    x: Tensor,
    running_mean: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    weight: Tensor | None = None,
    training: bool = False,
    channel_dim: int = 1,
) -> Tensor:
    r"""Mean-only batch normalization; pure (never writes ``running_mean``).

    $$ y = x - \mu + b \qquad (\gamma\,(x - \mu) + b \text{ with a weight}) $$

    μ over (N, *S), one per channel: the batch mean when ``training`` or when no
    ``running_mean`` is given, else ``running_mean``. No division by a standard deviation.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> mean_only_batch_norm(torch.tensor([[1.0], [3.0]]), training=True)
        tensor([[-1.],
                [ 1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("mean_only_batch_norm", x, errors.channels_of(running_mean, bias, weight),
                       channel_dim)
    use_batch = training or running_mean is None
    xc = to_channels_first(x, channel_dim)
    if use_batch:
        check_set_size("mean_only_batch_norm", axes_lib.BATCH, xc, 1)
    return from_channels_first(_mean_only(xc, running_mean, weight, bias, use_batch), channel_dim)


class MeanOnlyBatchNorm(Norm):
    r"""Mean-only Batch Normalization: subtract the batch mean, add a bias, do not rescale.

    $$ y = x - \mu + b $$

    μ over (N, *S), one per channel: the batch mean in training, ``running_mean`` in eval
    (the batch's when ``track_running_stats=False``). Meant to follow a weight-normalized
    layer (`normlab.weight_norm`), whose g sets the scale (paper §4). Its eval is *not* BN's
    eval (nothing is divided by sqrt(running_var + eps)), so fold and FrozenBatchNorm treat
    it as a norm of its own.

    Running statistics follow BatchNorm's law (`normlab.core.running`: momentum 0.1 means
    new = 0.9·old + 0.1·batch, ``momentum=None`` a cumulative average). ``running_var`` (the
    unbiased batch variance, as in BN) is tracked though the forward never reads it: it keeps
    the layer's state interchangeable with BatchNorm's (`normlab.convert` and
    `normlab.recalibrate` carry and re-estimate both), and reports each channel's scale,
    which weight norm's data-dependent init sets to 1.

    Under `normlab.sync`, μ (and the running statistics) come from the concatenated batch of
    every replica.

    Args:
        num_features: C, the number of channels.
        bias: a learnable per-channel bias b (the paper's layer; initialized to 0).
        affine: also a per-channel scale γ, y = γ(x − μ) + b. Off by default: with weight
            norm, g is the scale.
        eps: unused by this layer's forward (it divides by nothing); stored so that a
            conversion to BatchNorm and back keeps its ε.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = MeanOnlyBatchNorm(2)
        >>> norm(torch.tensor([[0.0, 2.0], [2.0, 6.0]])).detach()
        tensor([[-1., -2.],
                [ 1.,  2.]])
        >>> norm.running_mean
        tensor([0.1000, 0.4000])

    References:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to Accelerate
        Training of Deep Neural Networks", NeurIPS 2016, arXiv:1602.07868, §4.
    """

    _repr_keys = ("eps", "momentum", "affine", "track_running_stats")
    axes = axes_lib.BATCH
    running_stats = "batch"
    eval_is_batch_norm = False  # eval is x − running_mean + b: no division
    supports_sync = True

    def __init__(
        self,
        num_features: int,
        *,
        bias: bool = True,
        affine: bool = False,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            affine=affine,
            channel_dim=channel_dim,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        if bias and not self.affine:  # the paper's layer: a bias without a scale
            self.bias = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
        self._init_running_stats(track_running_stats, momentum, device, dtype)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        cd = self.channel_dim
        xc = to_channels_first(x, cd)
        running_mean = self._buffers["running_mean"]
        if self.training and self.moments_reducer is not None:
            return from_channels_first(self._forward_synced(xc), cd)
        use_batch = self.training or running_mean is None
        if use_batch and x.numel() == self.num_features:
            self._check_set_size(x)
        if self.training and running_mean is not None and xc.numel():
            if _batch_affine.applies(xc, self.weight, self.bias, running_mean):
                y, batch = _batch_affine.batch_affine(
                    xc, self.weight, self.bias, _CENTER_ONLY, 0.0)
                mean, var = batch.mean, batch.unbiased_var
            else:
                mean, var = _batch_moments(xc)
                y = _center(xc, mean, self.weight, self.bias)
            update_running_ema_(
                (running_mean, self._buffers["running_var"]),
                (mean, var),
                self._buffers["num_batches_tracked"],
                self.momentum,
            )
            return from_channels_first(y, cd)
        y = _mean_only(xc, running_mean, self.weight, self.bias, use_batch)
        return from_channels_first(y, cd)

    def _forward_synced(self, xc: Tensor) -> Tensor:
        """Training with the batch mean of every replica (`normlab.sync`): one collective in
        the forward, one in the backward (the input gradient is centered with the global
        mean of ∂L/∂t); the running buffers move toward the global mean and unbiased variance
        (global count), identically on every replica."""
        batch = self._synced_batch_moments(xc)
        y = _center(xc, batch.mean, self.weight, self.bias)
        if self.running_mean is not None and batch.count:  # all replicas empty: no update
            update_running_ema_(
                (self.running_mean, self.running_var),
                (batch.mean, batch.unbiased_var),
                self.num_batches_tracked,
                self.momentum,
            )
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.bias is not None else ", bias=False")


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "mean_only_batch_norm",
        MeanOnlyBatchNorm,
        "Salimans & Kingma 2016, arXiv:1602.07868",
        aliases=("mean_only_bn", "mobn"),
        functional=(mean_only_batch_norm,),
    ),
)
