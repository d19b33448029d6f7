"""Frozen Batch Normalization: BN with fixed statistics (and, by default, a fixed affine).

The layer torchvision (``torchvision.ops.FrozenBatchNorm2d``) and detectron2
(``detectron2.layers.FrozenBatchNorm2d``) use to fine-tune detection backbones with the
statistics of the data set the backbone was pre-trained on: the forward pass is always BN's
inference function, whatever ``.train()`` says, and nothing is ever updated.

Fast path. Forward: ATen's native batch-norm *inference* kernel, the very call
``torch.nn.BatchNorm2d`` makes in eval mode, so the output is bitwise equal to
``BatchNorm2d.eval()`` on the same state (torchvision's scale/shift formulation x·s + t with
s = w·(rv + ε)^-½ computed outside the kernel rounds differently, and once dropped ε altogether:
pytorch/vision#2169, PR #2190). Backward, when γ and β are frozen: dx = dy·a with
a = γ/sqrt(σ̂² + ε), one per-channel affine pass of the same kernel over dy, and nothing but a
saved for it. ATen's own eval-mode backward computes the same product as (dy·(σ̂² + ε)^-½)·γ
(so the two differ by at most an ulp or two) in a per-channel serial loop that costs several
times more than the forward on CPU (on small maps, up to ``_SMALL`` elements, the call count
sets the cost, and that plain autograd path is the faster one: it is taken there). With a
trainable γ, β (``trainable_affine=True``, or parameters that require grad handed to the
functional) the layer is exactly torch's ``F.batch_norm(training=False)``, autograd included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.core.tracing import compiling
from normlab.errors import ConfigError
from normlab.norms._base import (
    Norm,
    channel_scale_shift,
    from_channels_first,
    to_channels_first,
)
from normlab.norms.batch_norm import _batch_norm

__all__ = ["FrozenBatchNorm", "frozen_batch_norm"]


# -- errors raised here ----------------------------------------------------------------------------


def nothing_to_freeze(source: str, problem: str) -> ConfigError:
    return ConfigError(
        f"FrozenBatchNorm.from_batch_norm: cannot freeze {source}: {problem}. Pass a BatchNorm "
        "with running statistics (track_running_stats=True), e.g. torch.nn.BatchNorm2d or "
        "normlab.BatchNorm, or build FrozenBatchNorm(num_features) and load a state_dict."
    )


def frozen_eps_not_positive(source: str, eps: object) -> ConfigError:
    return ConfigError(
        f"FrozenBatchNorm.from_batch_norm: cannot freeze {source}: its eps is {eps!r}, and a "
        "frozen BN needs eps > 0 (with eps=0 a running_var that is 0, e.g. underflowed in fp16, "
        "gives inf/NaN). Set a positive eps on the source first (e.g. bn.eps = 1e-5, which "
        "changes its output slightly) or build FrozenBatchNorm(num_features, eps=...) and load "
        "its state_dict."
    )


# Up to this many elements a call's cost is its number of ATen calls, not its passes over
# memory: plain autograd through ATen's eval kernel (no Python backward; it saves x) beats
# `_FrozenInference`. Measured (1 thread, fp32, fwd + bwd, x nn.BatchNorm2d in training, load
# 8.5): (2, 64, 4, 4) 0.55 vs 1.51, (16, 64, 8, 8) 0.34 vs 0.59, (16, 64, 16, 16) 0.51 vs 0.63,
# (32, 64, 16, 16) 0.64 vs 0.33 (benchmarks/results/issue9_smallmaps.md).
_SMALL = 1 << 18


class _FrozenInference(torch.autograd.Function):
    """BN inference on a channels-first ``x`` with constant statistics and affine."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
    ) -> Tensor:
        y = _batch_norm(x, running_mean, running_var, weight, bias, False, eps)
        acc = accumulation_dtype(x.dtype)
        scale = running_var.to(acc).add(eps).rsqrt_()
        if weight is not None:
            scale = scale * weight.to(acc)
        ctx.save_for_backward(scale)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        (scale,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: a differentiable (linear) map of dy
            view = (1, -1) + (1,) * (dy.dim() - 2)
            dx = (dy * scale.view(view)).to(dy.dtype)
        else:  # dy·a + 0 in one pass
            dx = channel_scale_shift(dy, scale, torch.zeros_like(scale))
        return dx, None, None, None, None, None


def _frozen(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """BN inference of a channels-first ``x``; the fast backward when the affine is constant."""
    if (x.numel() <= _SMALL or compiling()
            or any(t is not None and t.requires_grad for t in (weight, bias))):
        return _batch_norm(x, running_mean, running_var, weight, bias, False, eps)
    return _FrozenInference.apply(x, running_mean, running_var, weight, bias, eps)


def frozen_batch_norm(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Batch normalization with fixed statistics (BN's inference function); pure.

    $$ y = \gamma \frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta $$

    μ̂ = ``running_mean``, σ̂² = ``running_var``: per-channel statistics given by the caller
    (typically a pre-trained BN's running statistics), never updated. Bitwise equal to
    ``torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training=False,
    eps=eps)``; gradients flow to ``x``, ``weight`` and ``bias`` (not to the statistics).

    Args:
        running_mean: μ̂, shape (C,); only read.
        running_var: σ̂², shape (C,); only read.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> frozen_batch_norm(x, torch.tensor([1.0]), torch.tensor([4.0]), eps=1e-12)
        tensor([[0.],
                [1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    eps = errors.check_eps(eps)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(t, Tensor):
            raise errors.InputError(
                f"frozen_batch_norm: {name} must be a tensor of per-channel statistics; got "
                f"{type(t).__name__}. Pass the running statistics of a trained BatchNorm."
            )
    errors.check_input("frozen_batch_norm", x, running_mean.shape[0], channel_dim)
    xc = to_channels_first(x, channel_dim)
    y = _frozen(xc, running_mean.detach(), running_var.detach(), weight, bias, eps)
    return from_channels_first(y, channel_dim)


def _is_batch_norm(module: nn.Module) -> bool:
    """torch.nn BatchNorm*d / SyncBatchNorm, or a normlab layer whose eval is BN eval."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or (
        isinstance(module, Norm) and module.eval_is_batch_norm
    )


class FrozenBatchNorm(Norm):
    r"""Batch normalization with frozen statistics and (by default) a frozen affine.

    $$ y = \gamma \frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta $$

    μ̂ = ``running_mean``, σ̂² = ``running_var``: fixed per-channel statistics, one per channel
    (over (N, *S) of the data the source BN was trained on). The forward pass is always BN's
    inference function, bitwise equal to ``torch.nn.BatchNorm2d.eval()`` with the same state,
    in training mode too: ``.train()`` changes nothing and no buffer is ever written.

    Buffers and parameters keep torch.nn BatchNorm's names (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``), so the layer loads the
    ``state_dict`` of any ``torch.nn.BatchNorm*d`` or ``normlab.BatchNorm`` and its own
    ``state_dict`` loads back into them; ``num_batches_tracked`` is kept unchanged, and a
    checkpoint without it (torchvision's / detectron2's FrozenBatchNorm2d) loads too. Use
    `FrozenBatchNorm.from_batch_norm` to freeze an existing layer (ε and every value copied
    bitwise). γ and β are buffers (no gradient, invisible to optimizers), as in torchvision's
    ``FrozenBatchNorm2d``, unless ``trainable_affine=True`` keeps them ``nn.Parameter``s.
    Not a ``torch.nn`` BatchNorm by type, like torchvision's: ``update_bn`` would reset the
    fixed statistics (see :mod:`normlab.norms._torch_types`).

    ε must be positive: with ε = 0 an fp16 running variance that underflowed to 0 gives
    inf/NaN (pytorch/vision#2599), and BN eval with ε differs from torchvision's old
    ε-less FrozenBatchNorm2d (pytorch/vision#2169). Loading never rewrites values (no
    ε-subtracting migration, cf. facebookresearch/detectron2 PR #3160).

    Args:
        num_features: C, the number of channels.
        affine: keep the source's per-channel ``weight`` γ and ``bias`` β (frozen buffers
            unless ``trainable_affine``); False: neither.
        trainable_affine: keep ``weight`` and ``bias`` as trainable ``nn.Parameter``s
            (fine-tune γ and β, statistics still frozen). Default False: frozen buffers.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> bn = torch.nn.BatchNorm2d(3).eval()
        >>> frozen = FrozenBatchNorm.from_batch_norm(bn).train()
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.equal(frozen(x), bn(x)), [name for name, _ in frozen.named_parameters()]
        (True, [])

    References:
        Ioffe & Szegedy, "Batch Normalization", ICML 2015, arXiv:1502.03167 (the inference
        transform); torchvision ``ops.misc.FrozenBatchNorm2d``; detectron2
        ``layers.batch_norm.FrozenBatchNorm2d``.
    """

    _repr_keys = ("eps", "affine", "trainable_affine")
    statistics = "none: fixed per-channel statistics (a BN checkpoint's running mean and variance)"
    axes = axes_lib.BATCH
    running_stats = "batch"
    frozen_stats = True
    eval_is_batch_norm = True
    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        affine: bool = True,
        trainable_affine: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        eps = errors.check_eps(eps)
        super().__init__(
            num_features, eps=eps, affine=False, channel_dim=channel_dim, device=device,
            dtype=dtype,
        )
        self.affine = bool(affine)
        self.trainable_affine = bool(trainable_affine)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        del self._parameters["weight"], self._parameters["bias"]
        for name in ("weight", "bias"):
            value = torch.empty(num_features, **factory) if self.affine else None
            if self.trainable_affine:
                self.register_parameter(name, None if value is None else nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.momentum = None  # never used: nothing is updated (attribute kept for surgery)
        self.track_running_stats = True
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )
        for name in ("weight", "bias"):
            # None buffers last: torch.export (2.13, non-strict) numbers the buffers of the
            # root module counting the None ones and runs off its list when one comes first
            if name in self._buffers and self._buffers[name] is None:
                self._buffers[name] = self._buffers.pop(name)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        y = _frozen(xc, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        return from_channels_first(y, self.channel_dim)

    @classmethod
    def from_batch_norm(cls, bn: nn.Module, *, trainable_affine: bool = False) -> FrozenBatchNorm:
        """A FrozenBatchNorm with ``bn``'s ε, statistics and affine, copied bitwise.

        ``bn``: a ``torch.nn.BatchNorm1d/2d/3d`` or ``SyncBatchNorm``, or a normlab
        ``BatchNorm``, ``GhostBatchNorm``, ``BatchRenorm`` or ``FrozenBatchNorm`` (layers whose
        inference function is BN's), with running statistics. Dtypes, device, ``channel_dim``,
        ``num_batches_tracked`` and the training flag are kept; the result equals
        ``bn.eval()`` bitwise. ``bn`` itself is not modified.
        """
        source = f"{type(bn).__name__}"
        if not isinstance(bn, nn.Module) or not _is_batch_norm(bn):
            raise nothing_to_freeze(
                source, "it is not a BatchNorm layer whose inference function is BN's"
            )
        # every BN-eval layer has these attributes (None when it keeps no statistics / affine)
        mean, var = bn.running_mean, bn.running_var
        if not isinstance(mean, Tensor) or not isinstance(var, Tensor):
            raise nothing_to_freeze(
                source, "it keeps no running statistics (track_running_stats=False)"
            )
        if isinstance(mean, nn.parameter.UninitializedBuffer):
            raise nothing_to_freeze(source, "it is a lazy layer that has not seen input")
        eps = bn.eps
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise frozen_eps_not_positive(source, eps)
        weight, bias = bn.weight, bn.bias
        frozen = cls(
            mean.shape[0], eps=float(eps), affine=weight is not None,
            trainable_affine=trainable_affine, channel_dim=getattr(bn, "channel_dim", 1),
            device=mean.device, dtype=mean.dtype,
        )
        with torch.no_grad():
            frozen.running_mean = mean.detach().clone()
            frozen.running_var = var.detach().clone()
            count = bn.num_batches_tracked
            if isinstance(count, Tensor):
                frozen.num_batches_tracked = count.detach().clone()
            for name, value in (("weight", weight), ("bias", bias)):
                if value is None:
                    continue
                copied = value.detach().clone()
                setattr(frozen, name, nn.Parameter(copied) if trainable_affine else copied)
        return frozen.train(bn.training)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *rest: Any) -> None:
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            # torchvision / detectron2 FrozenBatchNorm2d checkpoints have no counter: keep ours
            state_dict[key] = self.num_batches_tracked.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *rest)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "frozen_batch_norm",
        FrozenBatchNorm,
        "fine-tuning with the source data's statistics "
        "(torchvision / detectron2 FrozenBatchNorm2d)",
        aliases=("frozen_bn", "fbn"),
        functional=(frozen_batch_norm,),
    ),
)
