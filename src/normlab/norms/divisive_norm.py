"""Divisive Normalization (Ren, Liao, Urtasun, Sinz & Zemel, ICLR 2017, arXiv:1611.04520).

The paper's unified form: center each unit over a summation field A_j, divide by the root mean
square of the centered values over a suppression field B_j smoothed by σ. Fields are boxes
within one sample: a window of neighbouring channels (or all of them) times a window of
neighbouring positions (or all of them), clipped at the borders and averaged over the units
that exist (the paper's 1/|A_j|). The reference TF code (``renmengye/div-norm``,
``divnorm.py``) instead zero-pads with 'SAME' convolutions, divides by the full window area
and normalizes the suppression sum by the *summation* window's area; those quirks are not
replicated (they only differ at borders, or when the two windows differ).

Every box mean is separable (a box is a product of intervals, and so is its count), computed
along each windowed dim from a cumulative sum: differences of ``cumsum`` save nothing for the
backward pass, unlike pooling, which saves its input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.core.tracing import compiling
from normlab.norms import _divisive_fast as fast
from normlab.norms._base import Norm, from_channels_first, to_channels_first
from normlab.norms._double_backward import recomputed_grads

Window = int | tuple[int, ...] | None


def _check_window(name: str, window: object) -> Window:
    sizes = window if isinstance(window, tuple) else (window,)
    for k in sizes:
        if k is None and window is None:
            continue
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise errors.ConfigError(
                f"{name} must be an odd positive int (a centered window), a tuple of them (one "
                f"per spatial dim) or None (the whole extent); got {window!r}. The reference "
                "uses 3, 5 or 7."
            )
    return window  # type: ignore[return-value]  # checked above


def _check_channel_window(name: str, window: object, num_features: int) -> int | None:
    if window is None:
        return None
    _check_window(name, window if isinstance(window, int) else -1)
    assert isinstance(window, int)
    if window > num_features:
        raise errors.ConfigError(
            f"{name}={window} is a divisive field larger than the input's {num_features} "
            f"channels; pass at most {num_features}, or None for all channels."
        )
    return window


def _box_mean(t: Tensor, dim: int, k: int) -> Tensor:
    """Mean over a centered window of ``k`` along ``dim``, clipped at the borders (divided by
    the number of values inside)."""
    length, half = t.shape[dim], k // 2
    cum = torch.cat([torch.zeros_like(t.narrow(dim, 0, 1)), t.cumsum(dim)], dim)
    idx = torch.arange(length, device=t.device)
    hi, lo = (idx + half).clamp(max=length - 1) + 1, (idx - half).clamp(min=0)
    count = (hi - lo).to(t.dtype).view(-1, *([1] * (t.dim() - 1 - dim % t.dim())))
    return (cum.index_select(dim, hi) - cum.index_select(dim, lo)) / count


def _sizes(window: Window, shape: tuple[int, ...], layer: str, name: str) -> tuple[int, ...] | None:
    """One window size per spatial dim of a channels-first ``shape`` (None: all positions),
    checked against the input."""
    spatial = len(shape) - 2
    if window is None:
        return None
    sizes = window if isinstance(window, tuple) else (window,) * spatial
    if len(sizes) != spatial:
        raise errors.InputError(
            f"{layer}: {name}={window!r} gives {len(sizes)} spatial sizes for input with "
            f"{spatial} spatial dims {tuple(shape[2:])}; pass an int (every dim) or one size "
            "per dim."
        )
    for d, k in enumerate(sizes):
        if k > shape[2 + d]:
            raise errors.InputError(
                f"{layer}: {name}={window!r} is a divisive field larger than the input: size "
                f"{k} along spatial dim {d} of extent {shape[2 + d]} (input positions "
                f"{tuple(shape[2:])}). Use a window of at most the input's extent, or None "
                "for all positions."
            )
    return sizes


def _field_mean(t: Tensor, channels: int | None, window: Window, layer: str, name: str) -> Tensor:
    """Mean of a channels-first ``t`` over each unit's field: ``channels`` neighbouring
    channels (None: all) times ``window`` neighbouring positions (None: all)."""
    t = t.mean(1, keepdim=True) if channels is None else _box_mean(t, 1, channels)
    spatial = t.dim() - 2
    sizes = _sizes(window, tuple(t.shape), layer, name)
    if sizes is None:
        return t.mean(tuple(range(2, t.dim())), keepdim=True) if spatial else t
    for d, k in enumerate(sizes):
        if k > 1:
            t = _box_mean(t, 2 + d, k)
    return t


def _centered(xs: Tensor, channels: int | None, window: Window, center: bool, layer: str) -> Tensor:
    """v = z − mean over the summation field (z itself without centering)."""
    if not center:
        return xs
    return xs - _field_mean(xs, channels, window, layer, "sum_window")


class _Recomputed(torch.autograd.Function):
    """y = f(x, *params) saving only x and the parameters; the backward differentiates a
    recomputation (`recomputed_grads`, which also serves double backward). Used when a field
    spans neighbouring channels (the energy is then full-size) or with γ (y·γ saves y):
    autograd would save that besides v, 2x the input."""

    @staticmethod
    def forward(ctx: Any, fn: Any, x: Tensor, *params: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.fn = fn
        ctx.save_for_backward(x, *params)
        with torch.no_grad():
            return fn(x, *params)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, *params = ctx.saved_tensors
        grads = recomputed_grads(ctx.fn, [x, *params], ctx.needs_input_grad[1:], grad)
        return (None, *grads)


def _divisive_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    sigma2: Tensor | float,
    *,
    sum_window: Window,
    sup_window: Window,
    sum_channels: int | None,
    sup_channels: int | None,
    center: bool,
    channel_dim: int,
    layer: str,
) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    fields: dict[str, Any] = {
        "sum_window": sum_window,
        "sup_window": sup_window,
        "sum_channels": sum_channels,
        "sup_channels": sup_channels,
        "center": center,
        "channel_dim": channel_dim,
        "layer": layer,
    }
    if sum_channels is None and sup_channels is None and not isinstance(sigma2, Tensor):
        shape = tuple(to_channels_first(x, channel_dim).shape)
        sum_sizes = _sizes(sum_window, shape, layer, "sum_window") if center else None
        sup_sizes = _sizes(sup_window, shape, layer, "sup_window")
        whole = (len(shape) == 2 or (sum_window is None and sup_window is None)) and center
        if whole and fast.supported(x):  # fields = the whole sample: a LayerNorm
            return fast.whole_sample(x, weight, bias, float(sigma2), channel_dim)
        if weight is None and bias is None and fast.supported(x):

            def eager(x: Tensor) -> Tensor:
                return _divisive_eager(x, None, None, sigma2, **fields)

            return fast.divisive_all_channels(
                x, float(sigma2), sum_sizes, sup_sizes, center, channel_dim, eager
            )
    if sum_channels is None and sup_channels is None and weight is None:
        return _divisive_eager(x, weight, bias, sigma2, **fields)
    s2 = sigma2 if isinstance(sigma2, Tensor) else None

    def fn(x: Tensor, weight: Tensor | None, bias: Tensor | None, s2: Tensor | None) -> Tensor:
        return _divisive_eager(x, weight, bias, sigma2 if s2 is None else s2, **fields)

    if compiling():  # graph capture differentiates the eager forward (normlab.core.tracing)
        return fn(x, weight, bias, s2)
    return _Recomputed.apply(fn, x, weight, bias, s2)  # type: ignore[no-any-return]


def _divisive_eager(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    sigma2: Tensor | float,
    *,
    sum_window: Window,
    sup_window: Window,
    sum_channels: int | None,
    sup_channels: int | None,
    center: bool,
    channel_dim: int,
    layer: str,
) -> Tensor:
    """The forward by differentiable eager operations."""
    xc = to_channels_first(x, channel_dim)
    xs = xc.to(accumulation_dtype(xc.dtype))
    v = _centered(xs, sum_channels, sum_window, center, layer)
    energy = _field_mean(v.square(), sup_channels, sup_window, layer, "sup_window")
    y = v * (energy + sigma2).rsqrt()
    view = (1, -1, *([1] * (xs.dim() - 2)))
    if weight is not None:
        y = y * weight.to(y.dtype).view(view)
    if bias is not None:
        y = y + bias.to(y.dtype).view(view)
    return from_channels_first(y.to(xc.dtype), channel_dim)


def _check_sigma2(eps: object) -> float:
    return errors.check_eps(eps)


def divisive_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    sum_window: Window = 3,
    sup_window: Window = 3,
    sum_channels: int | None = None,
    sup_channels: int | None = None,
    eps: float | Tensor = 0.25,
    center: bool = True,
    channel_dim: int = 1,
) -> Tensor:
    r"""Divisive normalization; pure.

    $$ v_j = z_j - \frac{1}{|A_j|}\sum_{i \in A_j} z_i, \qquad
       y_j = \gamma \frac{v_j}{\sqrt{\sigma^2 + \frac{1}{|B_j|}\sum_{i \in B_j} v_i^2}} + \beta $$

    A_j (summation) and B_j (suppression) are boxes around unit j within its sample:
    ``*_channels`` neighbouring channels (None: all) times ``*_window`` neighbouring positions
    (an odd int per spatial dim, a tuple, or None: all), clipped at borders. ``eps`` = σ²
    (a float, or a differentiable scalar tensor for a learned σ); ``center=False`` skips the
    centering (v = z). A field larger than the input is an error.

    Args:
        sum_window: spatial size of the summation field A: an odd int (every spatial dim), a
            tuple of them, or None (all positions).
        sup_window: the same for the suppression field B.
        sum_channels: odd number of neighbouring channels in A; None: all.
        sup_channels: the same for B.
        eps: σ², the smoothing term: a float, or a differentiable scalar tensor for a learned σ.
        center: subtract the summation-field mean (False: v = z, divisive only).

    Example:
        >>> divisive_norm(torch.tensor([[1.0, 3.0]]), sum_window=None, sup_window=None,
        ...               eps=1e-12)
        tensor([[-1.,  1.]])
    """
    layer = "divisive_norm"
    channel_dim = errors.check_channel_dim(channel_dim)
    sigma2 = eps if isinstance(eps, Tensor) else _check_sigma2(eps)
    channels = x.shape[channel_dim] if isinstance(x, Tensor) and x.dim() >= 2 else 1
    errors.check_input(layer, x, channels if weight is None else weight.shape[0], channel_dim)
    _check_window("sum_window", sum_window)
    _check_window("sup_window", sup_window)
    sum_channels = _check_channel_window("sum_channels", sum_channels, channels)
    sup_channels = _check_channel_window("sup_channels", sup_channels, channels)
    return _divisive_norm(
        x,
        weight,
        bias,
        sigma2,
        sum_window=sum_window,
        sup_window=sup_window,
        sum_channels=sum_channels,
        sup_channels=sup_channels,
        center=bool(center),
        channel_dim=channel_dim,
        layer=layer,
    )


def divisive_l1_penalty(
    x: Tensor,
    *,
    sum_window: Window = 3,
    sum_channels: int | None = None,
    channel_dim: int = 1,
) -> Tensor:
    r"""The paper's sparse L1 regularizer (the "*" variants): mean |v| over all elements.

    $$ R(z) = \frac{1}{|z|}\sum_j \Big| z_j - \frac{1}{|A_j|}\sum_{i \in A_j} z_i \Big| $$

    v is the centered pre-normalization activation of the layer's summation field (pass the
    same ``sum_window`` / ``sum_channels``). Add α·R to the loss per normalized layer; the
    reference uses α from 1e-3 to 1e-2 (5e-3 with σ = 0.5 for DN* on CIFAR-10).

    Args:
        x: z, the layer's input (pre-normalization activation).
        sum_window: the summation field's spatial size, as the layer's.
        sum_channels: the summation field's channels, as the layer's; None: all.
        channel_dim: 1, channels first; -1, channels last.

    Example:
        >>> divisive_l1_penalty(torch.tensor([[1.0, 3.0]]), sum_window=None)
        tensor(1.)
    """
    layer = "divisive_l1_penalty"
    channel_dim = errors.check_channel_dim(channel_dim)
    channels = x.shape[channel_dim] if isinstance(x, Tensor) and x.dim() >= 2 else 1
    errors.check_input(layer, x, channels, channel_dim)
    _check_window("sum_window", sum_window)
    sum_channels = _check_channel_window("sum_channels", sum_channels, channels)
    xc = to_channels_first(x, channel_dim)
    xs = xc.to(accumulation_dtype(xc.dtype))
    return _centered(xs, sum_channels, sum_window, True, layer).abs().mean().to(x.dtype)


class DivisiveNorm(Norm):
    r"""Divisive Normalization: center over a summation field, divide over a suppression field.

    $$ v_j = z_j - \frac{1}{|A_j|}\sum_{i \in A_j} z_i, \qquad
       y_j = \gamma \frac{v_j}{\sqrt{\sigma^2 + \frac{1}{|B_j|}\sum_{i \in B_j} v_i^2}} + \beta $$

    A_j, B_j: boxes around unit j within its sample (neighbouring channels × neighbouring
    positions, clipped at the borders). With both fields "all channels, all positions" it is
    LayerNorm with ε = σ²; the CNN reference uses all channels and a spatial window. Same in
    training and eval; the L1 regularizer is `divisive_l1_penalty` (or ``layer.l1_penalty``).

    Args:
        num_features: C, the number of channels.
        sum_window: spatial size of the summation field A: an odd int (every spatial dim), a
            tuple of them, or None (all positions). The reference: 3, 5 or 7.
        sup_window: the same for the suppression field B.
        sum_channels: odd number of neighbouring channels in A; None (default): all.
        sup_channels: the same for B.
        eps: σ², the smoothing term (the paper's DN default σ = 0.5: 0.25); with
            ``learn_sigma`` the initial σ² of the learned scalar σ (parameter ``sigma``).
        learn_sigma: learn σ (one scalar per layer), as the reference's ``learn_sigma``.
        center: subtract the summation-field mean (False: divisive only).
        affine: per-channel γ, β after the division; off by default (the reference's DN layers
            have none).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> layer = DivisiveNorm(2, sum_window=None, sup_window=None, eps=1e-12)
        >>> layer(torch.tensor([[1.0, 3.0]]))
        tensor([[-1.,  1.]])

    References:
        Ren, Liao, Urtasun, Sinz & Zemel, "Normalizing the Normalizers: Comparing and Extending
        Network Normalization Schemes", ICLR 2017, arXiv:1611.04520.
    """

    _repr_keys = (
        "sum_window",
        "sup_window",
        "sum_channels",
        "sup_channels",
        "eps",
        "learn_sigma",
        "center",
        "affine",
    )
    axes = axes_lib.LAYER  # the fields lie within one sample (boxes of C × *S)
    sigma: nn.Parameter | None

    def __init__(
        self,
        num_features: int,
        *,
        sum_window: Window = 3,
        sup_window: Window = 3,
        sum_channels: int | None = None,
        sup_channels: int | None = None,
        eps: float = 0.25,
        learn_sigma: bool = False,
        center: bool = True,
        affine: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=_check_sigma2(eps),
            affine=affine,
            channel_dim=channel_dim,
            device=device,
            dtype=dtype,
        )
        self.sum_window = _check_window("sum_window", sum_window)
        self.sup_window = _check_window("sup_window", sup_window)
        self.sum_channels = _check_channel_window("sum_channels", sum_channels, num_features)
        self.sup_channels = _check_channel_window("sup_channels", sup_channels, num_features)
        self.learn_sigma, self.center = bool(learn_sigma), bool(center)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        sigma = nn.Parameter(torch.empty((), **factory)) if self.learn_sigma else None
        self.register_parameter("sigma", sigma)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 and σ = sqrt(eps)."""
        super().reset_parameters()
        if self.sigma is not None:
            with torch.no_grad():
                self.sigma.fill_(self.eps**0.5)  # type: ignore[operator]  # eps is a float

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        self._check_set_size(x)
        sigma2 = self.eps if self.sigma is None else self.sigma.square()
        return _divisive_norm(
            x,
            self.weight,
            self.bias,
            sigma2,  # type: ignore[arg-type]  # eps: a float here
            sum_window=self.sum_window,
            sup_window=self.sup_window,
            sum_channels=self.sum_channels,
            sup_channels=self.sup_channels,
            center=self.center,
            channel_dim=self.channel_dim,
            layer=self._name(),
        )

    def l1_penalty(self, x: Tensor) -> Tensor:
        """`divisive_l1_penalty` of this layer's input ``x`` over its summation field."""
        return divisive_l1_penalty(
            x,
            sum_window=self.sum_window,
            sum_channels=self.sum_channels,
            channel_dim=self.channel_dim,
        )


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "divisive_norm",
        DivisiveNorm,
        "Ren, Liao, Urtasun, Sinz & Zemel 2017, arXiv:1611.04520",
        aliases=("dn", "divnorm"),
        functional=(divisive_norm,),
        exports=(divisive_l1_penalty,),
        # a drop-in norm_layer meets maps of every size, down to 1x1: spatial fields over all
        # positions (the class's 3x3 default is an error on maps smaller than the window)
        defaults={"sum_window": None, "sup_window": None},
    ),
)
