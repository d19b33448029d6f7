"""Virtual Batch Normalization (Salimans et al. 2016, "Improved Techniques for Training GANs",
arXiv:1606.03498; reference code: openai/improved-gan, imagenet/, classes VBN / VBNL / VBNLP).

A reference batch R of N_R examples is fixed once. R is normalized with its own statistics
only; every other example x with the statistics of R ∪ {x}, weighted by examples:

    μ(x) = w·μ_x + (1 − w)·μ_R,   m2(x) = w·m2_x + (1 − w)·m2_R,   w = 1/(N_R + 1),

where μ_x, m2_x are x's own per-channel mean and mean of squares over the positions *S. The
variance m2(x) − μ(x)² is computed in the algebraically identical merged form
w·σ²_x + (1 − w)·σ²_R + w(1 − w)(μ_x − μ_R)², free of the E[x²] − E[x]² cancellation.

Fast path: the per-(sample, channel) moments from ATen's group-norm kernel, the merge above on
the (N, C) statistics, one affine pass (`normlab.norms._instance_affine`). The reference
statistics enter it as differentiable parameters: after a reference pass (`reference_pass`)
gradients flow through them into the network that produced R, as in the reference TF graph.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import Moments, merge_equal_counts
from normlab.norms._base import Norm, affine_params, normalize_by_moments
from normlab.norms._instance_affine import (
    ChannelMoments,
    contiguous_channels_first,
    instance_affine,
    normalize_and_apply,
    restore_layout,
)
from normlab.norms._per_instance import normalize_instances
from normlab.norms._training import TrainingHooks
from normlab.norms._virtual_coefficients import mixed_coefficients

# -- errors raised by this method ------------------------------------------------------------


def missing_reference(layer: str) -> errors.ConfigError:
    return errors.ConfigError(
        f"{layer} has no reference batch: virtual batch norm normalizes every example with the "
        "statistics of a fixed reference batch R merged with its own. Set R first, either with "
        "layer.set_reference(x_ref) (x_ref = this layer's input for R) or, for a whole model, "
        "with `with normlab.norms.virtual_batch_norm.reference_pass(model): model(x_ref)` "
        "(the paper repeats that pass every training step); or load a state_dict that holds "
        "reference_mean / reference_var / reference_size."
    )


def bad_reference(layer: str, problem: str, fix: str) -> errors.InputError:
    return errors.InputError(f"{layer}: invalid reference batch x_ref: {problem}. {fix}")


def invalid_reference_state(layer: str, key: str, problem: str) -> errors.ConfigError:
    return errors.ConfigError(
        f"{layer}: cannot load {key!r}: {problem}. The checkpoint is corrupted or belongs to "
        "another layer; load a valid state, or call reset_reference() and set_reference(x_ref)."
    )


# -- reference statistics --------------------------------------------------------------------------


def _reference_forward(
    xc: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, name: str,
    reducer: Callable[[Moments], Moments] | None = None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """(y_R, μ_R, σ²_R, N_R) of a contiguous channels-first reference batch; checks it first.

    μ_R, σ²_R carry autograd history when ``xc`` does. With a ``reducer`` (`normlab.sync`) R is
    all replicas' ``xc`` (merged moments); checks see global values, so all replicas raise alike.
    """
    size, count, where = xc.shape[0], xc.numel() // xc.shape[1], f"(shape {tuple(xc.shape)})"
    if reducer is not None:
        ref = reducer(Moments.of_batch(xc, (0, *range(2, xc.dim()))))
        count, positions = ref.count, math.prod(xc.shape[2:])
        size, where = count // max(positions, 1), f"in every replica (here {tuple(xc.shape)})"
    if size == 0:
        raise bad_reference(
            name, f"it is empty {where}",
            "Pass the fixed batch of reference examples R (at least one example).",
        )
    if count == 1:
        raise bad_reference(
            name, f"it gives 1 value per channel {where}, so R would normalize to a constant",
            "Use at least 2 reference examples (or positions per example).",
        )
    if reducer is not None:
        ref_mean, ref_var = ref.mean, ref.var
    else:
        x_hat, *moments, rstd = normalize_instances(xc, eps)
        if torch.is_grad_enabled() and xc.requires_grad:
            ref_mean, ref_var = ChannelMoments.apply(xc, *moments)
        else:
            ref_mean, ref_var, _ = merge_equal_counts(*moments, 0, keepdim=False)
    if not bool(torch.isfinite(ref_mean).all() & torch.isfinite(ref_var).all()):
        raise bad_reference(
            name, "its mean or variance is not finite (NaN or Inf in x_ref, or overflow)",
            "Check the reference inputs and the layers before this one; the stored "
            "reference statistics were left unchanged.",
        )
    if reducer is not None:
        return normalize_by_moments(xc, ref, weight, bias, eps), ref_mean, ref_var, size
    coefficients = mixed_coefficients(eps, weight is not None, bias is not None, False)
    y = instance_affine(
        xc, coefficients, ref_mean, ref_var, *affine_params(weight, bias),
        moments=(moments[0], moments[1]), normalized=(x_hat, rstd),
    )
    return y, ref_mean, ref_var, size


# -- functional ------------------------------------------------------------------------------------


def _virtual_batch_norm(
    xc: Tensor, reference_mean: Tensor, reference_var: Tensor, reference_size: int,
    weight: Tensor | None, bias: Tensor | None, eps: float,
) -> Tensor:
    """VBN of a contiguous channels-first ``xc`` (no checks)."""
    if xc.numel() == 0:
        return xc.clone()
    coefficients = mixed_coefficients(eps, weight is not None, bias is not None).at(
        1.0 / (reference_size + 1)
    )
    return normalize_and_apply(
        xc, coefficients, reference_mean, reference_var, *affine_params(weight, bias), eps=eps
    )


def virtual_batch_norm(
    x: Tensor, reference_mean: Tensor, reference_var: Tensor, reference_size: int | Tensor,
    weight: Tensor | None = None, bias: Tensor | None = None, *, eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Virtual batch normalization with given reference statistics; pure.

    $$ y = \gamma \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \beta,\quad
       \mu(x) = w\mu_x + (1 - w)\mu_R,\quad
       \sigma^2(x) = w\sigma^2_x + (1 - w)\sigma^2_R + w(1 - w)(\mu_x - \mu_R)^2 $$

    with w = 1/(N_R + 1); μ_x, σ²_x over (*S), one per (sample, channel); μ_R, σ²_R, N_R given
    (over (N_R, *S) of the reference batch, one per channel). Each output depends on its own
    example only. Gradients flow into ``reference_mean`` / ``reference_var`` when they require
    grad (the paper's graph, where they are computed from the current network).

    Args:
        reference_mean: μ_R, shape (C,).
        reference_var: σ²_R (biased), shape (C,).
        reference_size: N_R >= 1, the number of examples in the reference batch: an int, or a
            1-element integer tensor (read with ``.item()``, a device sync on GPU).

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]]])
        >>> virtual_batch_norm(x, torch.tensor([1.0]), torch.tensor([1.0]), 1, eps=0.0)
        tensor([[[-1.0000,  1.0000]],
        <BLANKLINE>
                [[ 0.4472,  1.3416]]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    if not isinstance(reference_mean, Tensor) or not isinstance(reference_var, Tensor):
        raise errors.InputError(
            "virtual_batch_norm: reference_mean and reference_var must be tensors of shape "
            f"(C,); got {type(reference_mean).__name__} and {type(reference_var).__name__}."
        )
    c = reference_mean.shape[0] if reference_mean.dim() == 1 else None  # x is checked against it
    errors.check_input("virtual_batch_norm", x, c, channel_dim)
    c = x.shape[channel_dim]
    for key, t in (("reference_mean", reference_mean), ("reference_var", reference_var)):
        if t.shape != (c,):  # one statistic per channel, e.g. from VirtualBatchNorm.set_reference
            raise errors.per_channel_shape("virtual_batch_norm", key, t.shape, c)
    size = reference_size
    if isinstance(size, Tensor) and size.numel() == 1 and not (
            size.is_floating_point() or size.is_complex()):
        size = int(size.item())
    if not errors.is_positive_int(size):
        raise errors.InputError(
            "virtual_batch_norm: reference_size must be an int >= 1 (N_R, the number of "
            f"examples in the reference batch) or a 1-element integer tensor; got {size!r}. "
            "Pass the module's reference_size buffer, or the batch size of x_ref."
        )
    xc, layout = contiguous_channels_first(x, channel_dim)
    y = _virtual_batch_norm(xc, reference_mean, reference_var, size, weight, bias, eps)
    return restore_layout(y, layout, channel_dim)


@contextlib.contextmanager
def reference_pass(model: nn.Module) -> Iterator[None]:
    """Within the block, every `VirtualBatchNorm` in ``model`` takes its input as the reference.

    Run the reference batch through the model inside it: each layer then calls
    `VirtualBatchNorm.set_reference` on its own input (R's activations at that layer, computed
    by the current parameters) and returns R normalized with its own statistics. The paper
    repeats this every training step before the minibatch's forward pass (see the class
    docstring's example). Statistics with autograd history from an earlier pass are released on
    entry. A layer used several times inside the block keeps the reference of its last call.
    Raises `normlab.errors.ConfigError` when ``model`` holds no VirtualBatchNorm.

    Args:
        model: the model (or the part of it) holding the `VirtualBatchNorm` layers.
    """
    layers = [m for m in model.modules() if isinstance(m, VirtualBatchNorm)]
    if not layers:
        raise errors.ConfigError(
            f"reference_pass(model): {type(model).__name__} holds no VirtualBatchNorm layer, so "
            "there is no reference to set. Pass the model (or the part of it) that contains the "
            "VirtualBatchNorm layers."
        )
    previous = [m._in_reference_pass for m in layers]
    for m in layers:
        m._live = None
        m._in_reference_pass = True
    try:
        yield
    finally:
        for m, flag in zip(layers, previous, strict=True):
            m._in_reference_pass = flag


# -- module ----------------------------------------------------------------------------------------


class VirtualBatchNorm(Norm):
    r"""Virtual Batch Normalization: each example with the statistics of a fixed reference batch.

    $$ y = \gamma \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \beta,\quad
       \mu(x) = \frac{\mu_x + N_R\,\mu_R}{N_R + 1},\quad
       \sigma^2(x) = \frac{m2_x + N_R\,m2_R}{N_R + 1} - \mu(x)^2 $$

    μ_R and m2_R (mean and mean of squares) over (N_R, *S) of the reference batch R, one per
    channel; μ_x and m2_x over (*S) of the example, one per (sample, channel): the weights count
    examples, not elements. The variance is computed in the equivalent merged form
    w·σ²_x + (1 − w)·σ²_R + w(1 − w)(μ_x − μ_R)², w = 1/(N_R + 1). R itself is normalized with
    μ_R and σ²_R only. An example's output never depends on its batch mates; training and eval
    compute the same function (no running statistics).

    **Setting R.** A layer has no reference at first; calling it raises an error that says how
    to set one (the first batch is *not* silently taken as R). R changes only through:

    * ``layer.set_reference(x_ref)``: μ_R, σ²_R and N_R of ``x_ref`` (this layer's input for R)
      into the buffers ``reference_mean``, ``reference_var`` (biased) and ``reference_size``
      (in the ``state_dict``); returns R normalized with its own statistics.
    * ``with reference_pass(model): model(x_ref)``: the same for every VirtualBatchNorm in a
      model. The paper runs this pass **every training step**, through the current parameters,
      and back-propagates through R's statistics: in training mode with grad enabled, each layer
      keeps them *with their autograd graph* for the following forward calls, so the step's
      gradients flow through μ_R, σ²_R into the layers below (as in the reference TF graph).
      They are released when the backward pass reaches them, at the next reference pass, on
      ``.eval()`` and on copies; afterwards (and in eval or under ``torch.no_grad()``) the
      buffered, detached values are used (the same numbers, rounded to the buffers' dtype).
      With gradient accumulation, run the pass before each micro-batch. A pass run once and
      never again freezes R's statistics at that network: a different method (what some
      third-party ports do).

    **Across replicas** (`normlab.sync`), each passing its shard R_r of R: in training
    ``set_reference`` / ``reference_pass`` take R = ∪_r R_r, μ_R and σ²_R merged exactly (one
    collective each way; gradients reach every R_r), N_R = Σ_r N_R,r. Every replica then holds
    the same buffers and computes on its examples and R_r what one process computes on the
    concatenated R and minibatch (shards may be empty); the per-example forward runs no
    collective, eval's ``set_reference`` is local. If every replica holds all of R, keep this
    layer out of sync (``skip=``): N_R would count R once per replica.

    γ, β start at 1, 0 (normlab's convention); the reference code draws γ ~ N(1, 0.02)
    (``nn.init.normal_(layer.weight, 1.0, 0.02)``).

    Args:
        num_features: C, the number of channels.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape. Rank 2
        works too (each example's statistics are then one value per channel).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> vbn = VirtualBatchNorm(3)
        >>> y_ref = vbn.set_reference(torch.randn(16, 3, 8, 8))  # R: 16 examples
        >>> int(vbn.reference_size)
        16
        >>> x = torch.randn(4, 3, 8, 8)
        >>> torch.allclose(vbn(x)[:1], vbn(x[:1]))  # independent of the batch mates
        True

        Every step, as in the paper (``z_ref`` fixed once)::

            with reference_pass(generator):
                generator(z_ref)
            loss = criterion(generator(z))
            loss.backward()  # reaches the parameters through R's statistics too

    References:
        Salimans, Goodfellow, Zaremba, Cheung, Radford & Chen, "Improved Techniques for Training
        GANs", NeurIPS 2016, arXiv:1606.03498.
    """

    axes = axes_lib.INSTANCE  # the example's own statistics; R's are over (N_R, *S)
    statistics = (
        "a fixed reference batch R over (N_R, *S) per channel, merged with each example's own "
        "*S per (sample, channel), weights N_R/(N_R+1) and 1/(N_R+1)"
    )
    reference_mean: Tensor
    reference_var: Tensor
    reference_size: Tensor
    reference_pass = staticmethod(reference_pass)  # also reachable as a method of the class

    training_hooks = TrainingHooks(reference_pass=True)  # the paper's per-step reference pass
    supports_sync = True  # R's statistics (see the class docstring)

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, affine: bool = True, channel_dim: int = 1,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("reference_mean", torch.zeros(num_features, **factory))
        self.register_buffer("reference_var", torch.ones(num_features, **factory))
        self.register_buffer("reference_size", torch.tensor(0, dtype=torch.long, device=device))
        # N_R on the host (0: none), kept equal to reference_size: no device sync per forward
        self._reference_count = 0
        self._in_reference_pass = False
        # (μ_R, σ²_R, token) with autograd history, from the last reference pass
        self._live: tuple[Tensor, Tensor, object] | None = None
        self.reset_parameters()

    # reference --------------------------------------------------------------------------------
    def reset_reference(self) -> None:
        """Forget R: ``reference_mean`` 0, ``reference_var`` 1, ``reference_size`` 0."""
        self.reference_mean.zero_()
        self.reference_var.fill_(1)
        self.reference_size.zero_()
        self._reference_count = 0
        self._live = None

    def reset_parameters(self) -> None:
        """Weight 1, bias 0, and no reference batch."""
        super().reset_parameters()
        self.reset_reference()

    def set_reference(self, x_ref: Tensor) -> Tensor:
        """Make ``x_ref`` (this layer's input for the reference batch R) the reference.

        Stores μ_R, σ²_R (over (N_R, *S), one per channel) and N_R in the buffers and returns
        ``x_ref`` normalized with them (and γ, β); in training mode with grad enabled, keeps the
        graph-carrying statistics for the next forward calls (see the class docstring). Raises
        `normlab.errors.InputError` (stored reference unchanged) for a reference with the wrong
        channel count, no examples, one value per channel or non-finite statistics.
        """
        name = f"{self._name()}.set_reference"
        errors.check_input(name, x_ref, self.num_features, self.channel_dim)
        xc, layout = contiguous_channels_first(x_ref, self.channel_dim)
        y, ref_mean, ref_var, size = _reference_forward(
            xc, self.weight, self.bias, self.eps, name,
            self.moments_reducer if self.training else None,
        )
        with torch.no_grad():
            self.reference_mean.copy_(ref_mean)
            self.reference_var.copy_(ref_var)
            self.reference_size.fill_(size)
        self._reference_count = size
        self._live = None
        if self.training and ref_mean.requires_grad:
            self._keep_live(ref_mean, ref_var)
        return restore_layout(y, layout, self.channel_dim)

    def _keep_live(self, ref_mean: Tensor, ref_var: Tensor) -> None:
        """Keep the graph-carrying statistics until the backward pass reaches them."""
        token = object()
        self._live = (ref_mean, ref_var, token)
        layer = weakref.ref(self)

        def release(grad: Tensor) -> None:
            m = layer()
            if m is not None and m._live is not None and m._live[2] is token:
                m._live = None

        ref_mean.register_hook(release)
        ref_var.register_hook(release)

    # forward ----------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self._in_reference_pass:
            return self.set_reference(x)
        self._check_input(x)
        if self._reference_count < 1:
            raise missing_reference(self._name())
        if self._live is not None and self.training and torch.is_grad_enabled():
            ref_mean, ref_var = self._live[0], self._live[1]
        elif torch.is_grad_enabled():
            # copies: the graph keeps the values it used even if R is replaced before backward
            ref_mean, ref_var = self.reference_mean.clone(), self.reference_var.clone()
        else:
            ref_mean, ref_var = self.reference_mean, self.reference_var
        xc, layout = contiguous_channels_first(x, self.channel_dim)
        y = _virtual_batch_norm(
            xc, ref_mean, ref_var, self._reference_count, self.weight, self.bias, self.eps
        )
        if self.moments_reducer is not None and not y.numel() and ref_mean.requires_grad:
            # an empty replica's backward must reach the merge's collective too (`normlab.sync`)
            y = y + (ref_mean.sum() + ref_var.sum()).mul(0).to(y.dtype)
        return restore_layout(y, layout, self.channel_dim)

    # life cycle of the graph-carrying statistics ----------------------------------------------
    def train(self, mode: bool = True) -> VirtualBatchNorm:
        if not mode:
            self._live = None
        return super().train(mode)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> VirtualBatchNorm:
        self._live = None  # .to() / .double(): the kept statistics would not match
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_live": None}

    # state ------------------------------------------------------------------------------------
    def _loaded(self) -> None:
        self._live = None
        if self.reference_size.device.type != "meta":
            self._reference_count = int(self.reference_size.item())

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        super()._validate_state(state_dict, prefix)
        self._validate_moments(state_dict, prefix, "reference", invalid_reference_state)
        self._validate_count(
            state_dict, prefix, "reference_size", invalid_reference_state, integer=True
        )


__all__ = ["VirtualBatchNorm", "reference_pass", "virtual_batch_norm"]


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "virtual_batch_norm",
        VirtualBatchNorm,
        "Salimans et al. 2016, arXiv:1606.03498",
        aliases=("vbn",),
        functional=(virtual_batch_norm,),
        exports=(reference_pass,),
    ),
)
