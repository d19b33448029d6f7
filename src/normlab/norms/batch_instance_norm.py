"""Batch-Instance Normalization (Nam & Kim, NeurIPS 2018, arXiv:1805.07925).

Reference code: ``hyeonseobnam/Batch-Instance-Normalization`` (also ``hyseob/...``),
``models/batchinstancenorm.py`` (the layer) and ``main.py`` (gate clipping, parameter groups).

Fast path: one read of the input gives the mean and biased variance of every (sample, channel)
slice (native group-norm kernel); the batch statistics are their exact merge over the batch
(Chan et al.), computed on the tiny (N, C) tensors. Both normalizations and the shared affine
then collapse into one per-(sample, channel) affine pass y = x·A + B with

    A = γ(ρ r_B + (1 − ρ) r_I),   B = β − γ(ρ μ_B r_B + (1 − ρ) μ_I r_I),   r = 1/sqrt(σ² + ε),

(`normlab.norms._instance_affine`), instead of the reference's two full normalizations. The
function (μ_I, σ²_I, ρ, γ, β) -> (A, B) on the tiny tensors has a hand-written VJP
(`normlab.norms._analytic_coefficients.AnalyticCoefficients`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

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
from normlab.norms._training import TrainingHooks

# -- errors raised by this method ------------------------------------------------------------


def gate_out_of_range(layer: str, problem: str) -> errors.ConfigError:
    return errors.ConfigError(
        f"{layer}: cannot load 'gate': {problem}. The gate ρ must lie in [0, 1] (the paper "
        "clips it after every optimizer step). Clamp it before loading "
        "(state['gate'].clamp_(0, 1)) and train with "
        "normlab.norms.batch_instance_norm.clamp_gates_after_step(optimizer, model)."
    )


@dataclass(frozen=True)
class _Config:
    """What the coefficient function computes: ε and the optional inputs."""

    eps: float
    has_weight: bool
    has_bias: bool
    running: bool  # x̂_B uses the running statistics (eval)


def _forward_parts(
    cfg: _Config, mean: Tensor, var: Tensor, params: tuple[Tensor, ...]
) -> dict[str, Any]:
    """A, B and the intermediates the backward needs; all (N, C) or (C,) tensors.

    A = w_B r_B + w_I r_I and B = β − A μ_I + w_B r_B (μ_I − μ_B) (= β − w_B r_B μ_B −
    w_I r_I μ_I, written around the instance means: the backward's combination of Σ dy·x and
    Σ dy then cancels less in float32), w_B = γρ, w_I = γ(1 − ρ), r = (σ² + ε)^(-1/2).
    """
    dtype = mean.dtype
    gate, *rest = params
    parts: dict[str, Any] = {"mean": mean}
    if cfg.running:  # eval: the running estimates (unbiased variance, as torch BN uses)
        mu_b, var_b = rest[-2].to(dtype), rest[-1].to(dtype)
        dev = mean - mu_b
    else:  # the batch's moments, merged from the N instance moments of each channel
        mu_b, var_b, dev = merge_equal_counts(mean, var, 0)
        parts["batch"] = (mu_b, var_b)  # (1, C): not views, for torch.compile's sake
        mu_b, var_b = mu_b.view(-1), var_b.view(-1)
    rho = gate.to(dtype)
    if cfg.has_weight:  # γρ and γ(1 − ρ): the reference's BN and IN weights
        gamma = rest[0].to(dtype)
        w_b = gamma * rho
        w_i = gamma - w_b
    else:
        w_b, w_i = rho, 1 - rho
    r_b = (var_b + cfg.eps).rsqrt()  # (C,)
    r_i = (var + cfg.eps).rsqrt()  # (N, C)
    a_b = w_b * r_b
    scale = torch.addcmul(a_b, w_i, r_i)
    bias = rest[int(cfg.has_weight)].to(dtype) if cfg.has_bias else torch.zeros_like(a_b)
    shift = torch.addcmul(torch.addcmul(bias, scale, mean, value=-1), a_b, dev)
    parts.update(
        rho=rho, w_b=w_b, w_i=w_i, r_b=r_b, r_i=r_i, a_b=a_b, dev=dev, scale=scale, shift=shift
    )
    return parts


def _backward_parts(
    cfg: _Config, parts: dict[str, Any], params: tuple[Tensor, ...], g_scale: Tensor,
    g_shift: Tensor,
) -> list[Tensor | None]:
    """The VJP of (A, B) for (μ_I, σ²_I, ρ, [γ], [β]) at the cotangents (Σ dy·x, Σ dy)."""
    mean, dev, r_i, r_b = parts["mean"], parts["dev"], parts["r_i"], parts["r_b"]
    n = mean.shape[0]
    g_bias = g_shift.sum(0)
    g_total = torch.addcmul(g_scale, mean, g_shift, value=-1)  # ∂L/∂A, B's dependence included
    g_a_b = torch.addcmul(g_total, g_shift, dev).sum(0)
    g_r_i = g_total * r_i
    g_w_i = g_r_i.sum(0)
    g_var = torch.mul(g_r_i, r_i * r_i).mul_(parts["w_i"] * -0.5)  # −½ w_I r_I³ g
    # ∂B/∂μ_I = −A + a_B = −w_I r_I
    g_mean = torch.addcmul(parts["a_b"] * g_shift, parts["scale"], g_shift, value=-1)
    g_w_b = g_a_b * r_b
    if not cfg.running:  # through the merged batch moments μ_B, σ²_B
        g_var_b = (g_w_b * parts["w_b"]).mul_(r_b * r_b).mul_(-0.5)
        g_mean = torch.addcmul(g_mean, g_var_b, dev, value=2 / n).addcmul_(
            parts["a_b"], g_bias, value=-1 / n)
        g_var = g_var.add_(g_var_b, alpha=1 / n)
    g_diff = g_w_b - g_w_i
    grads: list[Tensor | None] = [g_mean, g_var]
    if cfg.has_weight:
        gamma = params[1].to(mean.dtype)
        grads += [g_diff * gamma, torch.addcmul(g_w_i, g_diff, parts["rho"])]
    else:
        grads.append(g_diff)
    if cfg.has_bias:
        grads.append(g_bias)
    return grads


def _batch_instance_norm(
    x: Tensor,
    gate: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running: tuple[Tensor, Tensor] | None,
    eps: float,
    channel_dim: int,
) -> tuple[Tensor, Moments | None]:
    """The output and, in training, the batch moments it normalized with (x non-empty)."""
    params = [gate, *(p for p in (weight, bias) if p is not None)]
    if running is not None:
        params.extend(running)
    cfg = _Config(eps, weight is not None, bias is not None, running is not None)
    coefficients = AnalyticCoefficients(_forward_parts, _backward_parts, cfg)
    return apply_coefficients(x, coefficients, params, eps, channel_dim)


def batch_instance_norm(
    x: Tensor,
    gate: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Batch-instance normalization; pure (never writes ``running_mean`` / ``running_var``).

    $$ y = \left(\rho\,\hat x^{(B)} + (1 - \rho)\,\hat x^{(I)}\right)\gamma + \beta,\quad
       \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} $$

    x̂^(B): μ, σ² over (N, *S) per channel — the batch's (biased variance) when ``training``
    or when no running statistics are given, else ``running_mean`` / ``running_var``.
    x̂^(I): μ, σ² over *S per (sample, channel), always the input's. ``gate`` = ρ has one entry
    per channel and is used as given (see `BatchInstanceNorm` for values outside [0, 1]).

    Args:
        gate: ρ, shape (C,): the weight of the batch-normalized term per channel, used as given.

    Shape:
        x: (N, C, *S), or (N, *S, C) with ``channel_dim=-1``; output: same shape.

    Example:
        >>> x = torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]]])
        >>> batch_instance_norm(x, torch.tensor([0.5]), training=True, eps=1e-12).squeeze(1)
        tensor([[-1.1708,  0.2764],
                [-0.2764,  1.1708]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    if not isinstance(gate, Tensor) or gate.dim() != 1:
        raise errors.InputError(
            "batch_instance_norm: gate must be a 1-D tensor with one value per channel; got "
            f"{tuple(gate.shape) if isinstance(gate, Tensor) else type(gate).__name__}."
        )
    errors.check_input("batch_instance_norm", x, gate.shape[0], channel_dim)
    if (running_mean is None) != (running_var is None):
        raise errors.InputError(
            "batch_instance_norm: pass both running_mean and running_var, or neither; got only "
            f"{'running_mean' if running_var is None else 'running_var'}."
        )
    use_batch = training or running_mean is None
    if use_batch:
        check_set_size("batch_instance_norm", axes_lib.BATCH, x, channel_dim)
    if x.numel() == 0:
        return x.clone()
    running = None
    if not use_batch and running_mean is not None and running_var is not None:
        running = (running_mean, running_var)
    return _batch_instance_norm(x, gate, weight, bias, running, eps, channel_dim)[0]


class BatchInstanceNorm(Norm):
    r"""Batch-Instance Normalization: a learned per-channel gate between BN and IN.

    $$ y = \left(\rho\,\hat x^{(B)} + (1 - \rho)\,\hat x^{(I)}\right)\gamma + \beta,\quad
       \rho \in [0, 1]^C $$

    x̂^(B) is batch-normalized: μ, σ² over (N, *S) per channel, the batch's in training (the
    running buffers are updated as in `normlab.BatchNorm`: PyTorch momentum convention, the
    unbiased variance stored, ``momentum=None`` = cumulative average) and the running ones in
    eval (the batch's when ``track_running_stats=False``). x̂^(I) is instance-normalized: μ, σ²
    over *S per (sample, channel), always the input's, in training and eval. γ and β are
    shared by both terms (the reference runs BN with weight γρ and bias β plus IN with weight
    γ(1 − ρ) — the same function). ``gate`` = ρ starts at 1, so the layer starts as pure BN.

    **Keeping ρ in [0, 1].** The paper clips ρ after every update, ρ ← clip(ρ − η∆ρ, 0, 1),
    and the reference clamps after each optimizer step. Use `clamp_gates_after_step`
    (an optimizer step post-hook; or call `clamp_gates_` / `clamp_gate_` yourself) and
    `gate_param_groups` for the reference's optimizer settings (gate LR × 10, weight decay 0:
    weight decay would pull ρ toward 0, i.e. toward IN). The forward uses ρ as stored, like the
    reference: if the clipping is forgotten, ρ outside [0, 1] extrapolates beyond BN or IN
    (y is still the equation above) and gradients keep flowing. Loading a state whose gate is
    outside [0, 1] or not finite raises a ConfigError naming ``gate``.

    (N, C) input — one position per instance, where the reference fails — is accepted: x̂^(I)
    is exactly 0 there (x equals its instance mean), so the layer is BN with weight γρ.

    **Across replicas** (`normlab.sync`, training): x̂^(B) uses the moments of every replica's
    batch (merged exactly, `normlab.core.cross_replica`) and the running buffers move toward
    them (global count, so they stay identical on every replica); x̂^(I) stays per sample.
    The output, input and parameter gradients equal one process's on the concatenated batch.

    Args:
        num_features: C, the number of channels.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> bin_ = BatchInstanceNorm(1)
        >>> bin_.gate
        Parameter containing:
        tensor([1.], requires_grad=True)
        >>> y = bin_(torch.tensor([[[0.0, 2.0]], [[4.0, 6.0]]]))
        >>> bin_.running_mean
        tensor([0.3000])

    References:
        Nam & Kim, "Batch-Instance Normalization for Adaptively Style-Invariant Neural
        Networks", NeurIPS 2018, arXiv:1805.07925. Reference code:
        https://github.com/hyeonseobnam/Batch-Instance-Normalization
    """

    _repr_keys = ("eps", "momentum", "affine", "track_running_stats")
    axes = axes_lib.BATCH  # the batch-normalized term (the instance term: *S per (n, c))
    running_stats = "batch"
    supports_sync = True  # the BN term's moments (see the class docstring)
    statistics = "BN (over (N, *S)) and IN (over *S), mixed per channel by the gate ρ"
    gate: nn.Parameter

    training_hooks = TrainingHooks(  # the reference's gate settings, clipped after every step
        param_groups=lambda model, lr: gate_param_groups(model, lr)[1:],
        after_step=lambda optimizer, model: clamp_gates_after_step(optimizer, model),
    )

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
        self.gate = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
        self._init_running_stats(track_running_stats, momentum, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0, ρ = 1 (pure BN, as in the reference), fresh running statistics."""
        super().reset_parameters()
        nn.init.ones_(self.gate)

    @torch.no_grad()
    def clamp_gate_(self) -> BatchInstanceNorm:
        """Clip ρ into [0, 1] in place (the paper's projection after each update)."""
        self.gate.clamp_(0.0, 1.0)
        return self

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training and self.moments_reducer is not None:
            xc = to_channels_first(x, self.channel_dim)
            return from_channels_first(self._forward_synced(xc), self.channel_dim)
        use_batch = self.training or self.running_mean is None
        if use_batch:
            self._check_set_size(x)
        if x.numel() == 0:
            return x.clone()
        running = None if use_batch else (self.running_mean, self.running_var)
        y, batch = _batch_instance_norm(
            x, self.gate, self.weight, self.bias, running, self.eps, self.channel_dim
        )
        if self.training and self.running_mean is not None and batch is not None:
            update_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked, batch,
                self.momentum,
            )
        return y

    def _forward_synced(self, xc: Tensor) -> Tensor:
        """Training with the BN term's moments merged across replicas (one collective each
        way), composed from autograd operations so that gradients flow through the merge:
        y = (x − μ_B)·γρ r_B + (x − μ_I)·γ(1 − ρ) r_I + β, r = (σ² + ε)^(-1/2). An empty
        replica joins the collectives and returns its empty output."""
        batch = self._synced_batch_moments(xc)
        mean, var = instance_moments_autograd(xc)
        rho = self.gate.to(mean.dtype)
        w_b, w_i = rho, 1 - rho
        if self.weight is not None:
            gamma = self.weight.to(mean.dtype)
            w_b, w_i = gamma * rho, gamma * w_i
        a_b = w_b * (batch.var + self.eps).rsqrt()
        a_i = w_i * (var + self.eps).rsqrt()
        y = centered_affine(xc, ((batch.mean, a_b), (mean, a_i)), self.bias)
        if self.running_mean is not None and batch.count:  # all replicas empty: nothing to learn
            update_running_stats_(
                self.running_mean, self.running_var, self.num_batches_tracked, batch,
                self.momentum,
            )
        return y

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        super()._validate_state(state_dict, prefix)  # running statistics first, then the gate
        gate = state_dict.get(prefix + "gate")
        if isinstance(gate, Tensor):
            name = self._name()
            if gate.shape != (self.num_features,):
                raise errors.invalid_parameter_state(
                    name, "gate", f"shape {tuple(gate.shape)}, expected ({self.num_features},)",
                    "The checkpoint belongs to a layer with another number of channels.",
                )
            finite = torch.isfinite(gate)
            if not finite.all():
                raise gate_out_of_range(
                    name, f"it holds non-finite values {gate[~finite].tolist()}"
                )
            outside = (gate < 0) | (gate > 1)
            if outside.any():
                raise gate_out_of_range(
                    name,
                    f"values outside [0, 1]: {gate[outside].tolist()} at channels "
                    f"{outside.nonzero().flatten().tolist()}",
                )


# -- gate clipping and optimizer settings (paper section 3; reference main.py) ---------------------


def _layers(model: nn.Module) -> Iterator[BatchInstanceNorm]:
    return (m for m in model.modules() if isinstance(m, BatchInstanceNorm))


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The gates ρ of every `BatchInstanceNorm` in ``model`` (each parameter once)."""
    seen: dict[int, nn.Parameter] = {}
    for layer in _layers(model):
        seen.setdefault(id(layer.gate), layer.gate)
    return list(seen.values())


@torch.no_grad()
def clamp_gates_(model: nn.Module) -> int:
    """Clip every `BatchInstanceNorm` gate in ``model`` into [0, 1]; returns how many layers."""
    count = 0
    for layer in _layers(model):
        layer.clamp_gate_()
        count += 1
    return count


def clamp_gates_after_step(optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
    """Clip the gates of ``model`` into [0, 1] after every ``optimizer.step()``.

    The paper's projected update ρ ← clip(ρ − η∆ρ, 0, 1); the reference clamps the gates after
    each optimizer step. Returns the hook's handle (``handle.remove()`` stops the clipping).

    Args:
        optimizer: the optimizer whose ``step()`` is followed by the clipping.
        model: the model whose `BatchInstanceNorm` gates are clipped.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), BatchInstanceNorm(4))
        >>> opt = torch.optim.SGD(gate_param_groups(model, lr=0.1), lr=0.1, momentum=0.9)
        >>> handle = clamp_gates_after_step(opt, model)
    """

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        clamp_gates_(model)

    return optimizer.register_step_post_hook(hook)


def gate_param_groups(
    model: nn.Module,
    lr: float,
    *,
    gate_lr_multiplier: float = 10.0,
    gate_weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with the reference's settings for the gates.

    Two groups: every other parameter of ``model`` (optimizer defaults), and the gates with
    learning rate ``lr · gate_lr_multiplier`` and weight decay ``gate_weight_decay`` — the
    reference uses ×10 (``--bin-lr 10``) and no weight decay (which would pull ρ toward IN).
    A learning-rate schedule that scales every group keeps the ×10 ratio, as in the reference.

    Args:
        model: the model whose parameters are grouped.
        lr: the base learning rate (of the gates' group before the multiplier).
        gate_lr_multiplier: the gates' learning rate over ``lr``.
        gate_weight_decay: the gates' weight decay.
    """
    gates = gate_parameters(model)
    ids = {id(p) for p in gates}
    others = [p for p in model.parameters() if id(p) not in ids]
    return [
        {"params": others},
        {"params": gates, "lr": lr * gate_lr_multiplier, "weight_decay": gate_weight_decay},
    ]


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "batch_instance_norm",
        BatchInstanceNorm,
        "Nam & Kim 2018, arXiv:1805.07925",
        aliases=("bin",),
        functional=(batch_instance_norm,),
        exports=(clamp_gates_after_step, gate_param_groups),
    ),
)
