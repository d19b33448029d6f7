"""Streaming Normalization (Liao, Kawaguchi & Poggio 2016, arXiv:1610.06160, CBMM Memo 057).

Normalization statistics ("NormStats") are collected online from every sample seen so far
instead of from the current batch alone, so the layer trains at batch size 1 and normalizes
with the same statistics in training and inference. Two accumulators, per channel over
(N, *S):

* short-term: the equal-weight average of the per-step statistics of the current window of
  ``window`` steps (the paper's statistics "since the last weight update", its Decoupled
  Accumulation and Update with k = ``window``);
* long-term: an EMA of every step's statistics (``running_mean`` / ``running_var``, the
  biased variance, PyTorch's momentum convention; ``momentum=None`` averages all steps).

The layer normalizes with the mixture α·long + (1 − α)·short. The paper's details are
unverified (METHODS.md §12); the choices made here, each documented on `StreamingNorm`: the
mixture is of distributions (means mixed, the variance by the law of total variance); in
training both accumulators include the current batch, so eval (the buffers as the step left
them) normalizes that batch exactly as training did; gradients flow through the current
batch's share of the statistics only (the history is a constant: the "streaming gradient"
without back-propagation through past steps).

Every buffer is written by `normlab.core.running` (non-finite guard, counters).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import Moments
from normlab.core.running import update_running_, update_running_ema_
from normlab.norms import _batch_affine
from normlab.norms._base import (
    Norm,
    from_channels_first,
    normalize_by_moments,
    to_channels_first,
)


def check_alpha(alpha: object) -> float:
    if not errors.is_finite_number(alpha) or not 0.0 <= alpha <= 1.0:  # type: ignore[operator]
        raise errors.ConfigError(
            f"alpha must be in [0, 1]; got {alpha!r}. It is the weight of the long-term "
            "statistics in the mixture (1 - alpha goes to the short-term ones); 0.5 weighs "
            "them equally."
        )
    return float(alpha)


def check_window(window: object) -> int:
    if not errors.is_positive_int(window):
        raise errors.ConfigError(
            f"window must be a positive int; got {window!r}. It is the number of training "
            "steps the short-term statistics average before they fold into the long-term "
            "ones (e.g. the steps between two weight updates); 1 folds every step."
        )
    return window


def _mix(
    alpha: float, long_mean: Tensor, long_var: Tensor, short_mean: Tensor, short_var: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and variance of the mixture α·long + (1 − α)·short (law of total variance)."""
    beta = 1.0 - alpha
    mean = alpha * long_mean + beta * short_mean
    var = alpha * long_var + beta * short_var + alpha * beta * (long_mean - short_mean).square()
    return mean, var


def _join(
    short_mean: Tensor, short_var: Tensor, batch_mean: Tensor, batch_var: Tensor, f: Any
) -> tuple[Tensor, Tensor]:
    """The short-term statistics with one more step of weight f = 1/j (j steps in all)."""
    delta = batch_mean - short_mean
    mean = short_mean + f * delta
    var = (1 - f) * short_var + f * batch_var + f * (1 - f) * delta.square()
    return mean, var


def streaming_statistics(
    running_mean: Tensor,
    running_var: Tensor,
    short_mean: Tensor,
    short_var: Tensor,
    short_steps: Tensor,
    num_batches_tracked: Tensor,
    batch: Moments | None,
    *,
    alpha: float,
    momentum: float | None,
    window: int,
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and variance to normalize with; differentiable in ``batch`` (the
    current batch's moments in training, None in eval: the buffers as they are)."""
    dtype = running_mean.dtype
    if batch is None:
        one = running_mean.new_ones(())  # before any step: the long-term statistics alone
        a = torch.where(short_steps > 0, one * alpha, one)  # (alpha in the buffers' dtype)
        beta = 1 - a
        mean = a * running_mean + beta * short_mean
        spread = a * beta * (running_mean - short_mean).square()
        return mean, a * running_var + beta * short_var + spread
    m, f = _weights(short_steps, num_batches_tracked, momentum, window, dtype)
    long_mean = running_mean + m * (batch.mean - running_mean)
    long_var = running_var + m * (batch.var - running_var)
    mean, var = _join(short_mean, short_var, batch.mean, batch.var, f)
    return _mix(alpha, long_mean, long_var, mean, var)


def _weights(
    short_steps: Tensor,
    num_batches_tracked: Tensor,
    momentum: float | None,
    window: int,
    dtype: torch.dtype,
) -> tuple[Tensor | float, Tensor]:
    """(m, f): this batch's weight in the long-term EMA and in the short-term window."""
    m = (num_batches_tracked + 1).to(dtype).reciprocal() if momentum is None else momentum
    j = short_steps % window + 1  # this step is the window's j-th (a full window restarts)
    return m, j.to(dtype).reciprocal()


def streaming_norm(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    short_mean: Tensor,
    short_var: Tensor,
    short_steps: Tensor,
    num_batches_tracked: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    alpha: float = 0.5,
    momentum: float | None = 0.1,
    window: int = 8,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Streaming normalization; pure (the buffers are read, never written).

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \quad
       (\mu, \sigma^2) = \alpha\,(\mu_L, \sigma^2_L) \oplus (1 - \alpha)\,(\mu_S, \sigma^2_S) $$

    ⊕ the mixture of distributions: μ = αμ_L + (1 − α)μ_S, σ² = ασ²_L + (1 − α)σ²_S +
    α(1 − α)(μ_L − μ_S)². In training both include this batch's moments over (N, *S): the
    long-term ones as one more EMA step (weight m, or 1/t with ``momentum=None``), the
    short-term ones as one more step of the window's equal-weight average (a new window
    every ``window`` steps; ``short_steps`` counts the steps). In eval they are the buffers
    (the long-term statistics alone before any step).

    Args:
        running_mean: μ_L, the long-term mean (C,); only read.
        running_var: σ²_L, the long-term variance (C,); only read.
        short_mean: μ_S, the current window's mean (C,); only read.
        short_var: σ²_S, the current window's variance (C,); only read.
        short_steps: steps taken in the current window (a 0-dim integer tensor).
        num_batches_tracked: steps taken in all (a 0-dim integer tensor; t for
            ``momentum=None``).
        alpha: α, the weight of the long-term statistics in the mixture, in [0, 1].
        momentum: m, the weight of a step in the long-term EMA; None: 1/t, the average of all
            steps.
        window: training steps per short-term window (1: the short term is the current batch
            alone).

    Example:
        >>> z, o, n = torch.zeros(1), torch.ones(1), torch.tensor(0)
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> streaming_norm(x, z, o, z, o, n, n, training=True, momentum=1.0, eps=1e-12)
        tensor([[-1.],
                [ 1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    alpha, eps = check_alpha(alpha), errors.check_eps(eps)
    momentum, window = errors.check_momentum(momentum), check_window(window)
    errors.check_input("streaming_norm", x, running_mean.shape[0], channel_dim)
    xc = to_channels_first(x, channel_dim)
    buffers = (running_mean, running_var, short_mean, short_var, short_steps, num_batches_tracked)
    settings = {"alpha": alpha, "momentum": momentum, "window": window}
    if training and _batch_affine.applies(xc, weight, bias, running_mean, short_mean):
        stats = _BatchStats(buffers, settings)
        return from_channels_first(_batch_affine.batch_affine(xc, weight, bias, stats, eps)[0],
                                   channel_dim)
    batch = Moments.of_batch(xc, (0, *range(2, xc.dim()))) if training else None
    mean, var = streaming_statistics(*buffers, batch, **settings)
    y = normalize_by_moments(xc, Moments(mean, var, 1), weight, bias, eps)
    return from_channels_first(y, channel_dim)


class _BatchStats:
    """`streaming_statistics` as a function of the batch moments, over a copy of the buffers
    as they are now (the layer updates them after its forward; double backward reruns it),
    with its vector-Jacobian product written out (`vjp`)."""

    __slots__ = ("frozen", "settings")

    def __init__(self, buffers: tuple[Tensor, ...], settings: dict[str, Any]) -> None:
        self.frozen = tuple(t.detach().clone() for t in buffers)
        self.settings = settings

    def __call__(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        return streaming_statistics(*self.frozen, Moments(mean, var, 1), **self.settings)

    def vjp(
        self, mean_b: Tensor, var_b: Tensor, g_mean: Tensor, g_var: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(∂L/∂μ_B, ∂L/∂σ²_B) from (∂L/∂μ, ∂L/∂σ²) of the mixture. With a = αm + (1 − α)f:
        ∂μ/∂μ_B = ∂σ²/∂σ²_B = a, ∂μ/∂σ²_B = 0 and ∂σ²/∂μ_B = 2(1 − α)f(1 − f)(μ_B − μ_S) +
        2α(1 − α)(μ_L' − μ_S')(m − f) (μ_L', μ_S': long and short means with this batch)."""
        running_mean, _, short_mean, _, short_steps, num_batches_tracked = self.frozen
        alpha, beta = self.settings["alpha"], 1.0 - self.settings["alpha"]
        m, f = _weights(short_steps, num_batches_tracked, self.settings["momentum"],
                        self.settings["window"], running_mean.dtype)
        a = alpha * m + beta * f
        to_short = mean_b - short_mean
        spread = (running_mean + m * (mean_b - running_mean)) - (short_mean + f * to_short)
        d_var = (2 * beta) * (f * (1 - f) * to_short + alpha * (m - f) * spread)
        return g_mean * a + g_var * d_var, g_var * a


class StreamingNorm(Norm):
    r"""Streaming Normalization: statistics accumulated online, the same in training and eval.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \quad
       (\mu, \sigma^2) = \alpha\,(\mu_L, \sigma^2_L) \oplus (1 - \alpha)\,(\mu_S, \sigma^2_S) $$

    per channel over (N, *S) (see `streaming_norm`). Short-term (μ_S, σ²_S): the equal-weight
    average of the per-step statistics of the current window of ``window`` steps.
    Long-term (μ_L, σ²_L) = (``running_mean``, ``running_var``, biased), every step,

    $$ \mu_L \leftarrow (1 - m)\,\mu_L + m\,\mu_B, \quad
       \sigma^2_L \leftarrow (1 - m)\,\sigma^2_L + m\,\sigma^2_B. $$

    A training step normalizes with the statistics after its own update, and eval with the
    buffers: eval on the last training input reproduces that step's output exactly. Works
    at batch size 1, even on (1, C) input where BatchNorm has a single value per channel.
    Gradients reach x through the current batch's share (α·m + (1 − α)/j at the window's
    j-th step); the history is a constant.

    Args:
        num_features: C, the number of channels.
        alpha: weight of the long-term statistics in the mixture, in [0, 1] (default 0.5).
        window: training steps per short-term window (default 8; 1: the short term is the
            current batch alone).
        momentum: weight of a step in the long-term EMA; None averages all steps.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = StreamingNorm(2, window=2)
        >>> _ = norm(torch.tensor([[1.0, 2.0]]))  # batch size 1 trains
        >>> int(norm.short_steps), int(norm.num_batches_tracked)
        (1, 1)

    References:
        Liao, Kawaguchi & Poggio, "Streaming Normalization: Towards Simpler and More
        Biologically-plausible Normalizations for Online and Recurrent Learning", CBMM Memo
        057, 2016, arXiv:1610.06160.
    """

    _repr_keys = ("alpha", "window", "momentum", "eps", "affine")
    axes = axes_lib.BATCH
    #: biased variance under this method's own law (an EMA of every step's batch statistics)
    running_stats = "batch_biased"
    supports_sync = True
    training_reads_running_stats = True
    short_mean: Tensor
    short_var: Tensor
    short_steps: Tensor

    def __init__(
        self,
        num_features: int,
        *,
        alpha: float = 0.5,
        window: int = 8,
        momentum: float | None = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.alpha = check_alpha(alpha)
        self.window = check_window(window)
        self._init_running_stats(True, momentum, device, dtype)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("short_mean", torch.zeros(num_features, **factory))
        self.register_buffer("short_var", torch.ones(num_features, **factory))
        self.register_buffer("short_steps", torch.tensor(0, dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Long-term statistics (0, 1) and an empty window."""
        super().reset_running_stats()
        self.short_mean.zero_()
        self.short_var.fill_(1)
        self.short_steps.zero_()

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        super()._validate_state(state_dict, prefix)
        self._validate_moments(state_dict, prefix, "short", errors.invalid_state)
        self._validate_count(state_dict, prefix, "short_steps", errors.invalid_state, True)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        batch = None
        buffers = (self.running_mean, self.running_var, self.short_mean, self.short_var,
                   self.short_steps, self.num_batches_tracked)
        settings = {"alpha": self.alpha, "momentum": self.momentum, "window": self.window}
        if (self.training and self.moments_reducer is None
                and _batch_affine.applies(xc, self.weight, self.bias, *buffers[:4])):
            stats = _BatchStats(buffers, settings)
            y, batch = _batch_affine.batch_affine(xc, self.weight, self.bias, stats, self.eps)
            self._accumulate(batch)
            return from_channels_first(y, self.channel_dim)
        if self.training:
            if self.moments_reducer is not None:
                batch = self._synced_batch_moments(xc)
            else:
                batch = Moments.of_batch(xc, (0, *range(2, xc.dim())))
        mean, var = streaming_statistics(*buffers, batch, **settings)
        y = normalize_by_moments(xc, Moments(mean, var, 1), self.weight, self.bias, self.eps)
        if batch is not None and batch.count:
            self._accumulate(batch)
        return from_channels_first(y, self.channel_dim)

    def _accumulate(self, batch: Moments) -> None:
        """The batch joins the long-term EMA and the window (weight 1/j at its j-th step)."""
        b_mean, b_var = batch.mean.detach(), batch.var.detach()
        update_running_ema_(
            (self.running_mean, self.running_var),
            (b_mean, b_var),
            self.num_batches_tracked,
            self.momentum,
        )
        short = (self.short_mean, self.short_var)

        def law(_: object) -> tuple[Tensor, Tensor]:
            # the writer has counted this step: it is the window's j-th, weight 1/j
            j = (self.short_steps - 1) % self.window + 1
            return _join(*short, b_mean, b_var, j.to(b_mean.dtype).reciprocal())

        update_running_(short, self.short_steps, None, law, watch=(b_mean, b_var))


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "streaming_norm",
        StreamingNorm,
        "Liao, Kawaguchi & Poggio 2016, arXiv:1610.06160",
        aliases=("sn_stream", "streamingnorm"),
        functional=(streaming_norm,),
        spec_arg="window",
    ),
)
