"""What a method needs from a training loop beyond swapping the layer in, declared by the method.

A layer class states it in a class attribute ``training_hooks`` (a `TrainingHooks`); a training
loop reads it with `hooks_of` (for a class, before the model is built) or `model_hooks` (for every
layer of a model), and never recognises a method by its name or class.

Example:
    >>> import normlab
    >>> hooks_of(normlab.VirtualBatchNorm).reference_pass
    True
    >>> hooks_of(normlab.BatchRenorm).schedule_kwargs(total_steps=1000)
    {'warmup_steps': 40, 'dmax_ramp_end': 200, 'rmax_ramp_end': 320}
    >>> hooks_of(torch.nn.BatchNorm2d) is NO_HOOKS
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["NO_HOOKS", "TrainingHooks", "hooks_of", "model_hooks"]


@dataclass(frozen=True, eq=False)
class TrainingHooks:
    """A method's needs in training; the defaults need nothing (a plain layer swap)."""

    reference_pass: bool = False
    """Every forward needs the statistics of a fixed reference batch, set before every step and
    before evaluation by ``with normlab.reference_pass(model): model(x_ref)`` (Virtual BN)."""

    param_groups: Callable[[nn.Module, float], list[dict[str, Any]]] | None = None
    """``(model, lr) -> groups``: optimizer parameter groups with their own settings, for the
    loop to add beside its own (which then leave those parameters out); e.g. Batch-Instance
    Norm's gates with lr x 10 and no weight decay."""

    after_step: Callable[[torch.optim.Optimizer, nn.Module], object] | None = None
    """``(optimizer, model) -> handle``: registers what must follow every optimizer step; e.g.
    clipping Batch-Instance Norm's gates into [0, 1]."""

    step_schedule: Mapping[str, float] = field(default_factory=dict)
    """Constructor arguments that count training steps, as fractions of the run's length; e.g.
    Batch Renorm's warm-up and clip ramps."""

    def schedule_kwargs(self, total_steps: int) -> dict[str, int]:
        """``step_schedule`` for a run of ``total_steps`` updates (each at least 1 step)."""
        return {key: max(1, round(frac * total_steps)) for key, frac in self.step_schedule.items()}


NO_HOOKS = TrainingHooks()


def hooks_of(cls: type) -> TrainingHooks:
    """The hooks a layer class declares; `NO_HOOKS` for any other class (e.g. torch.nn's)."""
    hooks = getattr(cls, "training_hooks", NO_HOOKS)
    return hooks if isinstance(hooks, TrainingHooks) else NO_HOOKS


def model_hooks(model: nn.Module) -> list[TrainingHooks]:
    """The distinct hooks of the layers in ``model`` other than `NO_HOOKS`, in module order."""
    found = {id(h): h for h in (hooks_of(type(m)) for m in model.modules()) if h is not NO_HOOKS}
    return list(found.values())
