"""One training run: a pure function of its `RunConfig` (deterministic on CPU).

Protocol (the sweep's report states it): SGD with Nesterov-free momentum 0.9 and weight decay
5e-4 (none on norm parameters and biases), a one-cycle learning-rate schedule (Smith & Topin
2019; 25 % warm-up, cosine anneal), cross-entropy loss. With ``lr_scaling="linear"`` the peak
rate is ``lr · B / base_batch_size`` (Goyal et al. 2017); ``"none"`` uses ``lr`` at every batch
size. ``epochs`` fixes the examples seen (equal epochs: a batch of 2 takes 16x the steps of a
batch of 32); ``steps`` fixes the number of updates instead. The last partial batch of an
epoch is dropped, so BN never sees a batch of one.

Methods that need more than a layer swap get what their papers prescribe, as each method declares
it (``training_hooks``, `normlab.norms._training.TrainingHooks`): Virtual BN takes a fixed
reference batch (64 training examples drawn once per run) through the current weights before
every step and before evaluation; Batch-Instance Norm's gates get the reference's learning rate
x10, no weight decay, and are clipped to [0, 1] after every step; Batch Renorm's schedule
(warm-up 5k, d_max at 25k, r_max at 40k steps in the paper) is scaled to the run's length:
warm-up 4 %, d_max at 20 %, r_max at 32 % of its steps.

A loss that is not finite stops the run; it is recorded as diverged, not raised.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from normlab import registry
from normlab.errors import ConfigError
from normlab.lab.config import RunConfig
from normlab.lab.data import DataSet
from normlab.lab.models import NO_NORM, build_model, resolve_norm
from normlab.lab.sampling import batch_indices
from normlab.norms._training import hooks_of, model_hooks

MIN_STEPS = 5  # the one-cycle schedule's warm-up needs a step: 4 updates divide by zero in torch
REFERENCE_SIZE = 64
EVAL_BATCH = 1024
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


@dataclass
class Progress:
    """What a run reports after each evaluation (for the sweep's progress bar)."""

    run_id: str
    steps_done: int
    steps_total: int
    train_loss: float


ProgressFn = Callable[[Progress], None]


def _param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not on norm parameters or biases); parameters
    that a method puts in groups of its own (e.g. Batch-Instance Norm's gates) go there."""
    special = [g for h in model_hooks(model) if h.param_groups for g in h.param_groups(model, lr)]
    taken = {id(p) for g in special for p in g["params"]}
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in taken:
            continue
        (decay if p.dim() > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
        *special,
    ]
    return [g for g in groups if g["params"]]


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD over `_param_groups`, with what the model's layers need after every step."""
    optimizer = torch.optim.SGD(_param_groups(model, lr), lr=lr, momentum=MOMENTUM)
    for hooks in model_hooks(model):
        if hooks.after_step is not None:
            hooks.after_step(optimizer, model)
    return optimizer


def uses_reference(model: nn.Module) -> bool:
    """Whether a layer of ``model`` needs a reference pass before a forward (Virtual BN)."""
    return any(h.reference_pass for h in model_hooks(model))


def _norm_kwargs(norm: str, total_steps: int) -> dict[str, object]:
    """The step-counting constructor arguments the norm declares, scaled to the run."""
    if norm == NO_NORM:
        return {}
    cls = registry.lookup(norm.partition(":")[0]).cls
    return dict(hooks_of(cls).schedule_kwargs(total_steps))


@contextlib.contextmanager
def _deterministic_cpu() -> Iterator[None]:
    """One intra-op thread and deterministic algorithms; these and torch's global random
    state are restored afterwards, so a run leaves its caller's process as it found it."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _test_error(model: nn.Module, data: DataSet, x_ref: Tensor | None) -> float:
    model.eval()
    wrong = 0
    with torch.no_grad():
        if x_ref is not None:
            with normlab.reference_pass(model):
                model(x_ref)
        for start in range(0, len(data.x_test), EVAL_BATCH):
            logits = model(data.x_test[start : start + EVAL_BATCH])
            wrong += int((logits.argmax(1) != data.y_test[start : start + EVAL_BATCH]).sum())
    model.train()
    return wrong / len(data.x_test)


def _batches(config: RunConfig, data: DataSet, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches for ``total_steps`` updates: whole epochs, reshuffled each time."""
    while True:
        yield from batch_indices(
            data.y_train, config.batch_size, generator=generator, order=config.order
        )


def check_run_length(config: RunConfig, n_train: int) -> int:
    """The run's number of updates; an error naming the fix when it is under `MIN_STEPS`."""
    total = config.total_steps(n_train)
    if total < MIN_STEPS:
        how = (
            f"--steps {config.steps}" if config.steps is not None
            else f"{config.epochs} epoch(s) of {n_train // config.batch_size} batches of "
            f"{config.batch_size} from {n_train} training examples"
        )
        raise ConfigError(
            f"{how} gives {total} updates, but the one-cycle learning-rate schedule needs at "
            f"least {MIN_STEPS}. Use --steps {MIN_STEPS} or more, more --epochs or --max-train, "
            "or a smaller batch size."
        )
    return total


def train_run(
    config: RunConfig, data: DataSet, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train one model and return its record (see ``store``): curve, test error, status."""
    return train_model(config, data, progress)[0]


def train_model(
    config: RunConfig, data: DataSet, progress: ProgressFn | None = None
) -> tuple[dict[str, Any], nn.Module]:
    """`train_run`, also returning the trained model (what the claims ledger inspects)."""
    started = time.perf_counter()
    n_train = len(data.x_train)
    total = check_run_length(config, n_train)
    per_epoch = n_train // config.batch_size
    eval_every = per_epoch if config.steps is None else max(1, math.ceil(total / 8))
    norm = resolve_norm(config.norm)
    with _deterministic_cpu():
        torch.manual_seed(config.seed)
        model = build_model(
            config.model, norm, data.input_shape, data.num_classes,
            width=config.width, norm_kwargs=_norm_kwargs(norm, total),
        )
        generator = torch.Generator().manual_seed(config.seed)
        x_ref = None
        if uses_reference(model):
            pick = torch.randperm(n_train, generator=generator)[:REFERENCE_SIZE]
            x_ref = data.x_train[pick]
        optimizer = _optimizer(model, config.peak_lr())
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=0.25,
        )
        curve: list[dict[str, Any]] = []
        status, diverged_at = "ok", None
        loss_sum, loss_count = 0.0, 0
        model.train()
        batches = _batches(config, data, generator)
        for step in range(1, total + 1):
            idx = next(batches)
            if x_ref is not None:
                with normlab.reference_pass(model):
                    model(x_ref)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            value = loss.item()
            if not math.isfinite(value):
                status, diverged_at = "diverged", step
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += value
            loss_count += 1
            if step % eval_every == 0 or step == total:
                mean_loss = loss_sum / loss_count
                curve.append({
                    "epoch": round(step * config.batch_size / n_train, 4),
                    "step": step,
                    "train_loss": mean_loss,
                    "test_error": _test_error(model, data, x_ref),
                })
                loss_sum, loss_count = 0.0, 0
                if progress is not None:
                    progress(Progress(config.run_id, step, total, mean_loss))
        test_error = curve[-1]["test_error"] if status == "ok" else None
    record = {
        "id": config.run_id,
        "config": config.as_dict(),
        "resolved_norm": norm,
        "status": status,
        "curve": curve,
        "test_error": test_error,
        "steps": total if diverged_at is None else diverged_at - 1,
        "time_s": round(time.perf_counter() - started, 3),
        "diverged_at_step": diverged_at,
    }
    return record, model
