"""A small training loop for the claims whose experiments need the trained model itself.

The lab's runner (`normlab.claims.training`) returns a record, not the model; the claims that
read a trained model (BIN's gates, AdaBN's recalibration, fine-tuning a pretrained network) or
train a model the lab does not build (an LSTM over a sequence) use `fit` instead: minibatch
cross-entropy with Adam (or SGD with momentum 0.9), batches drawn i.i.d. from a seeded
generator, constant learning rate. `deterministic` makes a measurement a pure function of its
seed; `error` is the classification error in percent in eval mode.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deterministic", "error", "fit", "mean_loss"]

EVAL_BATCH = 1024


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """One intra-op thread and ``torch.manual_seed(seed)`` inside; the thread count and torch's
    global random state are restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    param_groups: list[dict[str, Any]] | None = None,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Train ``model`` in train mode for ``steps`` updates; returns the loss of every step.

    Each step draws ``batch_size`` examples without replacement from ``x`` (a generator seeded
    with ``seed``). ``optimizer``: ``"adam"`` or ``"sgd"`` (momentum 0.9); ``param_groups``
    replaces ``model.parameters()`` (e.g. BIN's gate groups); ``after_step`` runs after every
    update. A loss that is not finite stops the run: the list then ends with ``nan``.
    """
    params: Any = param_groups if param_groups is not None else model.parameters()
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"fit: optimizer={optimizer!r} is not known; use 'adam' or 'sgd'")
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=g)[:batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        value = loss.item()
        if not math.isfinite(value):
            losses.append(math.nan)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(value)
    return losses


def error(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Classification error of ``model`` in eval mode, in percent (model left in eval mode)."""
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            wrong += int((logits.argmax(1) != y[start : start + EVAL_BATCH]).sum())
    return round(100.0 * wrong / len(x), 4)


def mean_loss(losses: list[float], start: int, stop: int) -> float | None:
    """The mean of ``losses[start:stop]``; None when the run diverged before ``stop``."""
    window = losses[start:stop]
    if len(window) < stop - start or not all(math.isfinite(v) for v in window):
        return None
    return sum(window) / len(window)
