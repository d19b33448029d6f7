"""Rank functions for the cross-replica tests of the mixed-statistics norms (Batch-Instance
Norm, Switchable Norm, Virtual BN), run by tests/distributed_harness.py in spawned processes,
and their single-process references: the same layer trained on the concatenated batch.

One spawn runs many `Run`s (each a layer, its per-rank sizes and ``steps`` training steps) and
returns every result, so the suite pays the ~3 s process start once per world size.

Virtual BN's step (the paper's): ``with reference_pass(layer): y_R = layer(x_R)``, then
``y = layer(x)``; the loss Σ y·g + Σ y_R·g_R reaches x_R both directly and through R's
statistics (without Σ y_R·g_R, as in a GAN generator's loss, through the statistics only).
Under sync each rank holds its shard of x_R (``ref_sizes``) and of x (``sizes``); the
reference is one process holding all of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import normlab
from distributed_cases import SPATIAL, C, _train, batches, make
from normlab.norms.virtual_batch_norm import reference_pass


@dataclass(frozen=True)
class Run:
    """One layer trained for ``steps`` steps on batches split by ``sizes`` (one per rank)."""

    spec: str
    sizes: tuple[int, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    flat: bool = False  # (N, C) input: the first position of every (n, c) slice
    ref_sizes: tuple[int, ...] = ()  # Virtual BN: the shards of the reference batch R
    ref_loss: bool = True  # Virtual BN: Σ y_R·g_R in the loss (else R reached via μ_R, σ²_R only)
    steps: int = 3

    @property
    def name(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.kwargs.items())
        shape = ",flat" if self.flat else ""
        ref = f",R={list(self.ref_sizes)}" if self.ref_sizes else ""
        ref += "" if self.ref_loss else ",no-R-loss"
        return f"{self.spec}{extra}{shape}:{list(self.sizes)}{ref}"


def _shape(t: Tensor, run: Run) -> Tensor:
    return t[:, :, 0, 0].contiguous() if run.flat else t


def _rows(t: Tensor, sizes: tuple[int, ...], rank: int | None) -> Tensor:
    """Rank ``rank``'s rows of the full batch ``t`` (all of them for None)."""
    if rank is None:
        return t
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def _reference_batches(run: Run) -> list[tuple[Tensor, Tensor]]:
    """R and its output cotangent for every step: other values than the minibatch's."""
    gen = torch.Generator().manual_seed(11)
    n = sum(run.ref_sizes)
    return [
        (
            torch.randn(n, C, *SPATIAL, generator=gen, dtype=torch.float64) * 2 - 1,
            torch.randn(n, C, *SPATIAL, generator=gen, dtype=torch.float64),
        )
        for _ in range(run.steps)
    ]


def _train_vbn(layer: nn.Module, run: Run, rank: int | None) -> dict[str, Any]:
    layer.train()
    out: dict[str, list[Any]] = {k: [] for k in ("y_ref", "gx_ref", "y", "gx", "param_grads")}
    refs = _reference_batches(run)
    for (x_ref, g_ref), (x, g) in zip(refs, batches(list(run.sizes), run.steps), strict=True):
        x_ref = _rows(x_ref, run.ref_sizes, rank).clone().requires_grad_(True)
        g_ref = _rows(g_ref, run.ref_sizes, rank)
        x = _rows(x, run.sizes, rank).clone().requires_grad_(True)
        g = _rows(g, run.sizes, rank)
        with reference_pass(layer):
            y_ref = layer(x_ref)
        y = layer(x)
        params = list(layer.parameters())
        loss = (y * g).sum() + ((y_ref * g_ref).sum() if run.ref_loss else 0)
        grads = torch.autograd.grad(loss, [x_ref, x, *params], allow_unused=True)
        filled = [
            gr if gr is not None else torch.zeros_like(t)
            for gr, t in zip(grads, [x_ref, x, *params], strict=True)
        ]
        out["y_ref"].append(y_ref.detach())
        out["y"].append(y.detach())
        out["gx_ref"].append(filled[0])
        out["gx"].append(filled[1])
        out["param_grads"].append(filled[2:])
    out["buffers"] = {
        k: v.clone()
        for k, v in layer.state_dict().items()
        if k not in dict(layer.named_parameters())
    }
    return out


def _train_run(layer: nn.Module, run: Run, rank: int | None) -> dict[str, Any]:
    if run.ref_sizes:
        return _train_vbn(layer, run, rank)
    data = [
        (_rows(_shape(x, run), run.sizes, rank), _rows(_shape(g, run), run.sizes, rank))
        for x, g in batches(list(run.sizes), run.steps)
    ]
    return _train(layer, data)


def reference_run(run: Run) -> dict[str, Any]:
    """Single process, the concatenated batch (and the whole R)."""
    return reference_run_on(make(run.spec, run.kwargs), run)


def reference_run_on(layer: nn.Module, run: Run) -> dict[str, Any]:
    """`reference_run` of a given layer."""
    return _train_run(layer, run, None)


def synced_runs(rank: int, world: int, runs: list[Run]) -> dict[str, Any]:
    """Rank ``rank``'s part of every run, with `normlab.sync`; then, in eval (no collective),
    the output of two fixed samples. Also: Virtual BN's ``set_reference`` in eval takes the
    local shard alone, and a reference empty on every rank raises the same error everywhere."""
    results: dict[str, Any] = {}
    for run in runs:
        assert len(run.sizes) == world
        layer = normlab.sync(make(run.spec, run.kwargs))
        result = _train_run(layer, run, rank)
        layer.eval()
        result["eval"] = layer(_shape(batches([2], 1)[0][0], run)).detach()
        if run.ref_sizes:
            layer.set_reference(torch.randn(rank + 2, C, *SPATIAL, dtype=torch.float64))
            result["eval_reference_size"] = int(layer.reference_size)
        results[run.name] = result
    vbn = normlab.sync(normlab.VirtualBatchNorm(C, dtype=torch.float64))
    try:
        vbn.set_reference(torch.zeros(0, C, *SPATIAL, dtype=torch.float64))
    except normlab.NormlabError as error:
        results["empty_everywhere"] = str(error)
    return results


def phases(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A Virtual BN result as two `distributed_cases.compare` inputs: R's pass, the minibatch's
    (parameter gradients and buffers are the step's, checked with each)."""
    return [
        {
            "y": result[f"y{p}"],
            "gx": result[f"gx{p}"],
            "param_grads": result["param_grads"],
            "buffers": result["buffers"],
        }
        for p in ("_ref", "")
    ]
