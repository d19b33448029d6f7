"""One training run: a pure function of its `RunConfig` (deterministic on CPU).

Protocol (the sweep's report states it): SGD with Nesterov-free momentum 0.9 and weight decay
5e-4 (none on norm parameters and biases), a one-cycle learning-rate schedule (Smith & Topin
2019; 25 % warm-up, cosine anneal), cross-entropy loss. With ``lr_scaling="linear"`` the peak
rate is ``lr · B / base_batch_size`` (Goyal et al. 2017); ``"none"`` uses ``lr`` at every batch
size. ``epochs`` fixes the examples seen (equal epochs: a batch of 2 takes 16x the steps of a
batch of 32); ``steps`` fixes the number of updates instead. The last partial batch of an
epoch is dropped, so BN never sees a batch of one.

Methods that need more than a layer swap get what their papers prescribe: Virtual BN takes a
fixed reference batch (64 training examples drawn once per run) through the current weights
before every step and before evaluation; Batch-Instance Norm's gates get the reference's
learning rate x10, no weight decay, and are clipped to [0, 1] after every step; Batch Renorm's
schedule (warm-up 5k, d_max at 25k, r_max at 40k steps in the paper) is scaled to the run's
length: warm-up 4 %, d_max at 20 %, r_max at 32 % of its steps.

A loss that is not finite stops the run; it is recorded as diverged, not raised.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from normlab.lab.data import DataSet
from normlab.lab.models import build_model, resolve_norm
from normlab.lab.sampling import batch_indices

REFERENCE_SIZE = 64
EVAL_BATCH = 1024
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Batch Renorm's schedule as fractions of the run: the paper's 5k / 25k / 40k of ~125k steps.
RENORM_SCHEDULE = {"warmup_steps": 0.04, "dmax_ramp_end": 0.2, "rmax_ramp_end": 0.32}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on; two equal configs give the same numbers."""

    data: str
    model: str
    norm: str
    batch_size: int
    seed: int
    epochs: int | None = 4
    steps: int | None = None
    lr: float = 0.1
    lr_scaling: str = "linear"
    base_batch_size: int = 32
    order: str = "iid"
    width: int | None = None
    max_train: int | None = None

    @property
    def run_id(self) -> str:
        """The key a finished run is recorded under; a sweep varies only these three."""
        return f"norm={self.norm}|batch_size={self.batch_size}|seed={self.seed}"

    def peak_lr(self) -> float:
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / self.base_batch_size
        return self.lr

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * (n_train // self.batch_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """What a run reports after each evaluation (for the sweep's progress bar)."""

    run_id: str
    steps_done: int
    steps_total: int
    train_loss: float


ProgressFn = Callable[[Progress], None]


def _param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not on norm parameters, gates or biases)."""
    gates = {id(p) for p in normlab.norms.batch_instance_norm.gate_parameters(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in gates:
            continue
        (decay if p.dim() > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if gates:
        gate_group = normlab.gate_param_groups(model, lr)[1]
        groups.append(gate_group)
    return [g for g in groups if g["params"]]


def uses_reference(model: nn.Module) -> bool:
    """Whether ``model`` has Virtual BN layers, which need a reference pass before a forward."""
    return any(isinstance(m, normlab.VirtualBatchNorm) for m in model.modules())


def _norm_kwargs(norm: str, total_steps: int) -> dict[str, object]:
    if norm.partition(":")[0] != "batch_renorm":
        return {}
    return {key: max(1, round(frac * total_steps)) for key, frac in RENORM_SCHEDULE.items()}


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


def train_run(
    config: RunConfig, data: DataSet, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train one model and return its record (see ``store``): curve, test error, status."""
    started = time.perf_counter()
    n_train = len(data.x_train)
    total = config.total_steps(n_train)
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
        optimizer = torch.optim.SGD(_param_groups(model, config.peak_lr()), lr=config.peak_lr(),
                                    momentum=MOMENTUM)
        normlab.clamp_gates_after_step(optimizer, model)
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
    return {
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
