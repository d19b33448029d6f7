"""What every normalization layer shares: arguments, affine parameters, running buffers, input
checks, state loading and repr. Each method's file adds its math and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core.axes import Axes
from normlab.core.docstrings import append_shared_args
from normlab.core.moments import Moments, accumulation_dtype
from normlab.core.tracing import fx_leaf, refuse_script
from normlab.norms._arguments import guard_arguments


def to_channels_first(x: Tensor, channel_dim: int) -> Tensor:
    """A view of ``x`` with channels at dim 1 (NHWC becomes a channels_last NCHW view)."""
    return x if channel_dim == 1 else x.movedim(-1, 1)


def from_channels_first(y: Tensor, channel_dim: int) -> Tensor:
    return y if channel_dim == 1 else y.movedim(1, -1)


def kernel_params(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, channels: int
) -> tuple[Tensor | None, Tensor | None]:
    """Weight and bias to hand a native kernel along with ``x``.

    For fp16/bf16 input they are given in float32 (ones / zeros when absent), which puts the
    kernel on its mixed-precision path: mean and 1/σ stay in float32. Otherwise 1/sqrt(ε)
    overflows fp16 for ε < 4e-9 and its gradient turns into inf · 0 = NaN.
    """
    acc = accumulation_dtype(x.dtype)
    if acc == x.dtype:
        return weight, bias
    w = torch.ones(channels, dtype=acc, device=x.device) if weight is None else weight.to(acc)
    b = torch.zeros(channels, dtype=acc, device=x.device) if bias is None else bias.to(acc)
    return w, b


def layout_of(x: Tensor) -> torch.memory_format:
    """The memory format to hand outputs of ``x`` back in: channels_last / channels_last_3d
    when x has it, otherwise contiguous."""
    if not x.is_contiguous():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


def dense(x: Tensor) -> tuple[Tensor, torch.memory_format]:
    """``x`` made contiguous if it is not, and its `layout_of` to hand outputs back in."""
    if x.is_contiguous():
        return x, torch.contiguous_format
    return x.contiguous(), layout_of(x)


def in_layout(y: Tensor, layout: torch.memory_format) -> Tensor:
    """Inverse of `dense` for an output: ``y`` in ``layout``."""
    return y if layout is torch.contiguous_format else y.contiguous(memory_format=layout)


def channel_scale_shift(
    x: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None
) -> Tensor:
    """x·scale[c] + shift[c] for a channels-first ``x``, in one pass of ATen's BN-inference
    kernel (mean 0, variance 1, ε = 0). ``shift`` must be a tensor (zeros for none): without a
    bias the CPU kernel takes a path about 4x slower. ``out``: a dense buffer of x's shape,
    dtype and layout to write into (e.g. scratch memory that no longer serves: a fresh
    full-size buffer costs page faults on CPU); no autograd history then."""
    zeros, ones = torch.zeros_like(scale), torch.ones_like(scale)
    if out is None:
        return torch.batch_norm(x, scale, shift, zeros, ones, False, 0.0, 0.0, False)
    empty = scale.new_empty(0)
    return torch.ops.aten.native_batch_norm.out(
        x, scale, shift, zeros, ones, False, 0.0, 0.0, out=out, save_mean=empty,
        save_invstd=scale.new_empty(0),
    )[0]


def normalize_by_moments(
    xc: Tensor, moments: Moments, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """γ(x − μ)/sqrt(σ² + ε) + β per channel of a channels-first ``xc``, differentiable in x,
    the moments and the affine (plain autograd ops: the moments may come from other replicas).
    Computed in the moments' dtype (float32 for fp16/bf16 input), returned in ``xc``'s."""
    scale = (moments.var + eps).rsqrt()
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    shift = -moments.mean * scale
    if bias is not None:
        shift = shift + bias.to(shift.dtype)
    view = (1, -1, *([1] * (xc.dim() - 2)))
    y = torch.addcmul(shift.view(view), xc.to(scale.dtype), scale.view(view))
    return y if y.dtype == xc.dtype else y.to(xc.dtype)


def group_norm_kernel(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """ATen's native group norm of a channels-first ``x``: output, mean and 1/σ per (n, g).

    torch's CPU kernel for channels_last input computes the variance as E[x²] − E[x]² in one
    pass, which loses every digit when |μ| ≫ σ (max error 129 against float64 for a
    (4, 64, 16, 16) fp32 tensor with μ/σ = 1e4; 1e-3 for the contiguous kernel). Such input is
    therefore made contiguous first and the output handed back in the input's memory format.
    """
    n, c = x.shape[:2]
    x, layout = dense(x)
    weight, bias = kernel_params(x, weight, bias, c)
    positions = x.numel() // (n * c)
    y, mean, rstd = torch.native_group_norm(
        x, weight, bias, n, c, positions, num_groups, eps
    )
    return in_layout(y, layout), mean, rstd


def _sets_span_positions(axes: Axes, x: Tensor, channel_dim: int) -> bool:
    """The common case of `check_set_size`, decided without walking the axes: every set spans
    all spatial positions, and there are more than one (numel > N·C)."""
    return "spatial" in axes.reduce and x.numel() > x.shape[0] * x.shape[channel_dim]


def check_set_size(layer: str, axes: Axes, x: Tensor, channel_dim: int) -> None:
    """Refuse statistics computed over one value (the output would be a constant)."""
    if not x.numel() or _sets_span_positions(axes, x, channel_dim):
        return
    if axes.set_size(x.shape, channel_dim) == 1:
        over = axes.describe().split(":")[0]
        raise errors.one_value_per_statistic(layer, over, x.shape)


def _kept_counter(counter: Tensor | None) -> Tensor:
    if isinstance(counter, Tensor) and counter.device.type != "meta":
        return counter.detach().clone()
    return torch.tensor(0, dtype=torch.long)


#: The keyword arguments that the layers share, described once: `Norm.__init_subclass__` adds
#: each entry to the ``Args:`` of every layer whose ``__init__`` takes the argument and whose
#: docstring does not describe it itself (a method that gives it another meaning does).
SHARED_ARGS: dict[str, str] = {
    "eps": "ε, added to the variance (the statistic the layer divides by the square root "
    "of) for numerical stability.",
    "momentum": "weight of the current batch in the running statistics' update, running = "
    "(1 − momentum)·running + momentum·batch (PyTorch's convention; Flax's and Keras's "
    "momentum is 1 − this one). None: a cumulative average, the k-th batch weighted 1/k "
    "(k = ``num_batches_tracked``). Ignored without ``track_running_stats``.",
    "affine": "apply a learned per-channel affine after normalizing: ``weight`` γ "
    "(initialized to 1) and ``bias`` β (initialized to 0; a method without a shift, such "
    "as RMSNorm, has γ only). False: neither, and both attributes are None.",
    "track_running_stats": "keep running statistics in buffers (``running_mean`` and/or "
    "``running_var``, and ``num_batches_tracked``): updated by each forward in training "
    "mode, used for normalization in eval mode. False: no buffers, and eval mode "
    "normalizes with the input's own statistics, as training does.",
    "channel_dim": "where the channels are: 1, channels first, input (N, C, *S); -1, "
    "channels last, (N, *S, C) (NHWC images, (N, L, C) token sequences). Parameters and "
    "statistics are the same either way.",
    "bias": "with ``affine``, also a learned shift β (``bias``); False: γ only.",
    "device": "device of the parameters and buffers (torch.nn's factory argument).",
    "dtype": "floating-point dtype of the parameters and buffers (torch.nn's factory "
    "argument); None: torch's default dtype.",
}


class Norm(nn.Module):
    """Base class of normlab's activation-normalization layers.

    Subclasses set ``axes`` and implement ``forward``; shared keyword arguments are validated
    here once, at construction, and documented once, in `SHARED_ARGS` (which this class adds
    to each subclass's docstring).

    Args:
        num_features: C, the number of channels.
    """

    _version = 2  # torch.nn BatchNorm's state-dict version: checkpoints load unchanged
    _repr_keys: ClassVar[tuple[str, ...]] = ("eps", "affine")
    #: What the running buffers mean, when the layer keeps them (read by the surgery tools,
    #: which therefore list no classes): ``"batch"``, per channel over (N, *S), the mean and
    #: the unbiased variance under PyTorch's EMA law (`normlab.core.running`);
    #: ``"batch_biased"``, over (N, *S) too but the biased variance under the method's own
    #: law (Batch Renorm's moving σ, EvoNorm-B0's variance; the momentum means something
    #: else); ``"instance"``, torch.nn's InstanceNorm rule (the average over samples of the
    #: per-(n, c) mean and unbiased variance); None, no running statistics.
    running_stats: ClassVar[str | None] = None
    #: True when the statistics are fixed on purpose (FrozenBatchNorm): recalibrate leaves
    #: them alone and convert carries no momentum from the layer.
    frozen_stats: ClassVar[bool] = False
    #: True when the layer's inference function is BN's eval, y = γ(x − running_mean) /
    #: sqrt(running_var + eps) + β (read by fold and FrozenBatchNorm.from_batch_norm).
    eval_is_batch_norm: ClassVar[bool] = False
    #: True when the layer's training forward honours ``moments_reducer`` (`normlab.sync`).
    supports_sync: ClassVar[bool] = False
    #: True when the training output reads the running statistics (Batch Renorm's r and d,
    #: StreamingNorm's long-term mix). Under ``torch.utils.checkpoint`` the recomputed forward
    #: then sees the statistics after this step's update (every layer updates them once, see
    #: `normlab.core.running.recomputing`), so its gradients are those of the next step's
    #: function: a difference of order momentum. Checkpoint such layers outside the segment.
    training_reads_running_stats: ClassVar[bool] = False
    #: Set by `normlab.sync`: merges this replica's batch moments with the other replicas'
    #: (exactly, differentiably); None computes them from the local batch alone.
    moments_reducer: Callable[[Moments], Moments] | None = None
    axes: Axes
    weight: nn.Parameter | None
    bias: nn.Parameter | None

    # runs at class creation (import), before mutmut switches a mutant on: its mutants cannot
    # be killed (test_api_docs, test_argument_errors and test_tracing check what it does)
    def __init_subclass__(cls, **kwargs: Any) -> None:  # pragma: no mutate block
        super().__init_subclass__(**kwargs)
        append_shared_args(cls, SHARED_ARGS)
        guard_arguments(cls)  # torch.nn's argument order -> an error naming the normlab call
        fx_leaf(cls)  # every layer is an FX leaf, as torch.nn's norms are (normlab.core.tracing)

    __prepare_scriptable__ = refuse_script  # torch.jit.script: a clear error naming the way out

    def __init__(
        self,
        num_features: int,
        *,
        eps: float | None,
        affine: bool,
        channel_dim: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_features = errors.check_num_features(num_features)
        self.eps = errors.check_optional_eps(eps)
        self.affine = bool(affine)
        self.channel_dim = errors.check_channel_dim(channel_dim)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        # registered even when None, like torch.nn, so surgery finds the names
        weight = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.register_parameter("weight", weight)
        shift = nn.Parameter(torch.empty(num_features, **factory)) if affine and bias else None
        self.register_parameter("bias", shift)

    # running statistics -------------------------------------------------------------------
    def _init_running_stats(
        self,
        track_running_stats: bool,
        momentum: float | None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        *,
        mean: bool = True,
    ) -> None:
        """Running mean (unless ``mean=False``: a variance-only layer has no such buffer),
        running variance and ``num_batches_tracked``; all None when not tracking."""
        self.momentum = errors.check_momentum(momentum)
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            factory: dict[str, Any] = {"device": device, "dtype": dtype}
            if mean:
                self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self.register_buffer("running_var", torch.ones(self.num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            names = ("running_var", "num_batches_tracked")
            for name in ("running_mean", *names) if mean else names:
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if getattr(self, "running_var", None) is not None:
            if getattr(self, "running_mean", None) is not None:
                self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Weight 1, bias 0, and fresh running statistics."""
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # forward helpers -------------------------------------------------------------------------
    def _name(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def _check_input(self, x: Tensor) -> None:
        # the common case in a few attribute reads; the full check (and its message) otherwise
        if not (
            isinstance(x, Tensor) and x.dim() >= 2 and x.is_floating_point()
            and x.shape[self.channel_dim] == self.num_features
        ):
            errors.check_input(self._name(), x, self.num_features, self.channel_dim)

    def _synced_batch_moments(self, xc: Tensor) -> Moments:
        """Moments over (N, *S) of a channels-first ``xc``, merged across the replicas of
        `normlab.sync` (``moments_reducer``): differentiable, float32 for fp16/bf16."""
        assert self.moments_reducer is not None
        dims = (0, *range(2, xc.dim()))
        return self.moments_reducer(Moments.of_batch(xc, dims))

    def _check_set_size(self, x: Tensor, axes: Axes | None = None) -> None:
        axes = axes or self.axes
        if not _sets_span_positions(axes, x, self.channel_dim):  # else: no name to build
            check_set_size(self._name(), axes, x, self.channel_dim)

    # state ------------------------------------------------------------------------------------
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        counter = self._buffers.get("num_batches_tracked")
        if counter is not None:  # any tracked layer (EvoNorm-B0 keeps a variance alone)
            key = prefix + "num_batches_tracked"
            if key not in state_dict and (local_metadata.get("version") or 0) < 2:
                # checkpoints written before torch 0.4.1 have no counter: keep the layer's,
                # as torch.nn's BatchNorm does (0 on a fresh layer)
                state_dict[key] = _kept_counter(counter)
        self._validate_state(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._loaded()

    def _loaded(self) -> None:
        """Run after a state is loaded: subclasses refresh what they derive from buffers."""

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Raise a ConfigError before anything is copied if a value to load is invalid.

        Subclasses with more state extend this (calling ``super()``) instead of overriding
        ``_load_from_state_dict``.
        """
        if getattr(self, "running_var", None) is not None:
            self._validate_loaded_stats(state_dict, prefix)

    def _validate_loaded_stats(self, state_dict: dict[str, Any], prefix: str) -> None:
        self._validate_moments(state_dict, prefix, "running", errors.invalid_state)
        self._validate_count(state_dict, prefix, "num_batches_tracked", errors.invalid_state)

    def _validate_count(
        self, state_dict: dict[str, Any], prefix: str, key: str,
        invalid: Callable[[str, str, str], errors.ConfigError], integer: bool = False,
    ) -> None:
        """``key`` to load, when a tensor: not negative; with ``integer``, an integer scalar."""
        count = state_dict.get(prefix + key)
        if not isinstance(count, Tensor):
            return
        if integer and (count.numel() != 1 or count.is_floating_point() or count.is_complex()):
            raise invalid(self._name(), key, f"expected an integer scalar, got {count.dtype} "
                          f"of shape {tuple(count.shape)}")
        if count.numel() == 1 and count.item() < 0:
            raise invalid(self._name(), key, f"negative ({count.item()})")

    def _validate_moments(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        kind: str,
        invalid: Callable[[str, str, str], errors.ConfigError],
    ) -> None:
        """``{kind}_mean`` / ``{kind}_var`` to load: shape (C,), finite, variance >= 0."""
        name = self._name()
        for key in (f"{kind}_mean", f"{kind}_var"):
            value = state_dict.get(prefix + key)
            if not isinstance(value, Tensor):
                continue
            if value.shape != (self.num_features,):
                raise invalid(
                    name, key, f"shape {tuple(value.shape)}, expected ({self.num_features},)"
                )
            if not torch.isfinite(value).all():
                raise invalid(name, key, "it holds NaN or Inf values")
            if key.endswith("_var") and (value < 0).any():
                raise invalid(name, key, f"negative variance {value.min().item()}")

    def extra_repr(self) -> str:
        parts = [str(self.num_features)]
        for key in self._repr_keys:
            parts.append(f"{key}={getattr(self, key)}")
        if self.channel_dim != 1:
            parts.append(f"channel_dim={self.channel_dim}")
        return ", ".join(parts)


append_shared_args(Norm, SHARED_ARGS)

#: The arguments that the functional forms of the layers share, described once (`Entry` adds
#: them to each functional form's docstring, as `SHARED_ARGS` for the classes).
FUNCTIONAL_ARGS: dict[str, str] = {
    "x": "the input, (N, C, *S), or (N, *S, C) with ``channel_dim=-1``.",
    "weight": "per-channel scale γ, shape (C,); None: no scale.",
    "bias": "per-channel shift β, shape (C,); None: no shift.",
    "running_mean": "running (population) mean, shape (C,), used in place of the batch's "
    "outside training; only read: the functional forms never update a tensor.",
    "running_var": "running (population) variance, shape (C,), as ``running_mean``.",
    "training": "True: normalize with the statistics of the input batch (the layer's "
    "training mode); False: with the running statistics passed in, or the batch's when none "
    "are.",
    "eps": "ε, added to the variance (the statistic divided by its square root) for "
    "numerical stability.",
    "channel_dim": "where the channels are: 1, channels first; -1, channels last.",
}


def affine_params(weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, ...]:
    """γ and β where present, in that order: the affine arguments of a coefficient function."""
    return tuple(t for t in (weight, bias) if t is not None)


def finfo_eps(eps: float | None, x: Tensor) -> float:
    """``eps``, or the input dtype's machine epsilon when it is None (torch RMSNorm's rule)."""
    return torch.finfo(x.dtype).eps if eps is None else eps
