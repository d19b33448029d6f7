"""Rank functions for the cross-replica tests (run by tests/distributed_harness.py in spawned
processes, so they live in an importable module), and the single-process reference they are
compared with: the same layer trained on the concatenated batch.

A run: ``steps`` training steps of one layer built by ``make(spec, kwargs)``, each on the
batch of sample sizes ``sizes`` (one entry per rank; 0 = an empty rank), float64; the loss of
a step is Σ y·g with a fixed random g, so input and parameter gradients are exact to compare.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import normlab

C = 3
SPATIAL = (4, 3)


def make(spec: Any, kwargs: dict[str, Any]) -> nn.Module:
    """The layer: a registry spec, or "torch_bn" for torch.nn.BatchNorm2d."""
    torch.manual_seed(1)
    if spec == "torch_bn":
        layer: nn.Module = nn.BatchNorm2d(C, dtype=torch.float64, **kwargs)
    else:
        layer = normlab.create(spec, C, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    return layer


def batches(sizes: list[int], steps: int) -> list[tuple[Tensor, Tensor]]:
    """The full (x, g) of every step; rank r's part is rows sum(sizes[:r]) : sum(sizes[:r+1])."""
    gen = torch.Generator().manual_seed(7)
    n = sum(sizes)
    out = []
    for step in range(steps):
        x = torch.randn(n, C, *SPATIAL, generator=gen, dtype=torch.float64) * (step + 1) + 3
        g = torch.randn(n, C, *SPATIAL, generator=gen, dtype=torch.float64)
        out.append((x, g))
    return out


def _train(layer: nn.Module, data: list[tuple[Tensor, Tensor]]) -> dict[str, Any]:
    layer.train()
    ys, gxs, param_grads = [], [], []
    for x, g in data:
        x = x.clone().requires_grad_(True)
        y = layer(x)
        params = [p for p in layer.parameters() if p.requires_grad]
        grads = torch.autograd.grad((y * g).sum(), [x, *params], allow_unused=True)
        ys.append(y.detach())
        gxs.append(grads[0])
        param_grads.append(
            [
                gp if gp is not None else torch.zeros_like(p)
                for gp, p in zip(grads[1:], params, strict=True)
            ]
        )
    buffers = {
        k: v.clone()
        for k, v in layer.state_dict().items()
        if k not in dict(layer.named_parameters())
    }
    return {"y": ys, "gx": gxs, "param_grads": param_grads, "buffers": buffers}


def reference(spec: Any, kwargs: dict[str, Any], sizes: list[int], steps: int) -> dict[str, Any]:
    """Single process, the concatenated batch."""
    return _train(make(spec, kwargs), batches(sizes, steps))


def synced_rank(
    rank: int, world: int, spec: Any, kwargs: dict[str, Any], sizes: list[int], steps: int
) -> dict[str, Any]:
    """Rank ``rank``'s part of the run, with `normlab.sync`."""
    assert len(sizes) == world
    start = sum(sizes[:rank])
    stop = start + sizes[rank]
    data = [(x[start:stop], g[start:stop]) for x, g in batches(sizes, steps)]
    layer = normlab.sync(make(spec, kwargs))
    result = _train(layer, data)
    layer.eval()  # eval runs no collective: a rank may evaluate alone
    result["eval"] = layer(batches(sizes, 1)[0][0][:2]).detach()
    return result


def compare(results: list[dict[str, Any]], ref: dict[str, Any], tol: float = 1e-10) -> None:
    """Outputs and input gradients (concatenated), summed parameter gradients, buffers (equal
    to the reference, and bitwise equal across ranks)."""
    steps = len(ref["y"])
    for step in range(steps):
        y = torch.cat([r["y"][step] for r in results])
        gx = torch.cat([r["gx"][step] for r in results])
        torch.testing.assert_close(y, ref["y"][step], rtol=tol, atol=tol, msg=f"y, step {step}")
        torch.testing.assert_close(
            gx, ref["gx"][step], rtol=tol, atol=tol, msg=f"input gradient, step {step}"
        )
        for i, expected in enumerate(ref["param_grads"][step]):
            total = sum(r["param_grads"][step][i] for r in results)
            torch.testing.assert_close(
                total, expected, rtol=tol, atol=tol, msg=f"parameter {i} gradient, step {step}"
            )
    for name, expected in ref["buffers"].items():
        for rank, r in enumerate(results):
            torch.testing.assert_close(
                r["buffers"][name].to(expected.dtype),
                expected,
                rtol=tol,
                atol=tol,
                msg=f"{name}, rank {rank}",
            )
            assert torch.equal(r["buffers"][name], results[0]["buffers"][name]), (name, rank)
