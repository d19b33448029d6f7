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
import torch.nn.functional as F
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
    rank: int,
    world: int,
    spec: Any,
    kwargs: dict[str, Any],
    sizes: list[int],
    steps: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rank ``rank``'s part of the run, with `normlab.sync` (on ``device``; "cuda" is the
    rank's GPU). Results come back on the CPU."""
    assert len(sizes) == world
    start = sum(sizes[:rank])
    stop = start + sizes[rank]
    where = torch.device(f"cuda:{rank}") if device == "cuda" else torch.device(device)
    data = [(x[start:stop].to(where), g[start:stop].to(where)) for x, g in batches(sizes, steps)]
    layer = normlab.sync(make(spec, kwargs).to(where))
    result = _train(layer, data)
    layer.eval()  # eval runs no collective: a rank may evaluate alone
    result["eval"] = layer(batches(sizes, 1)[0][0][:2].to(where)).detach()
    return _to_cpu(result)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


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


def synced_cases(
    rank: int,
    world: int,
    cases: list[tuple[Any, dict[str, Any]]],
    size_sets: list[list[int]],
    steps: int,
) -> list[list[dict[str, Any]]]:
    """`synced_rank` for every (spec, kwargs) of ``cases`` on every batch split of
    ``size_sets``, in one spawn: ``result[s][c]`` is case c on split s."""
    return [
        [synced_rank(rank, world, spec, kwargs, sizes, steps) for spec, kwargs in cases]
        for sizes in size_sets
    ]


def ghost_reference(kwargs: dict[str, Any], sizes: list[int], steps: int) -> dict[str, Any]:
    """Ghost BN with per-rank ghost batches, in one process and without normlab's GBN.

    Each rank's part of the concatenated batch is cut into chunks of its own (``split="size"``:
    ``part.split(ghost_batch_size)``; ``"count"``: ``part.chunk(n // ghost_batch_size)``), each
    normalized by torch's ``F.batch_norm`` with the chunk's statistics. Running statistics: one
    EMA step per chunk, in rank order, toward the chunk's mean and unbiased variance (momentum
    m), or with ``momentum=None`` one step per training step, weight 1/t, toward the average of
    its chunks' statistics; ``num_batches_tracked`` counts the steps.
    """
    layer = make("ghost_batch_norm", kwargs)
    size, split = kwargs["ghost_batch_size"], kwargs.get("split", "size")
    momentum = kwargs.get("momentum", 0.1)
    weight, bias = layer.weight, layer.bias
    mean = torch.zeros(C, dtype=torch.float64)
    var = torch.ones(C, dtype=torch.float64)
    counted = 0
    ys, gxs, param_grads = [], [], []
    for x, g in batches(sizes, steps):
        x = x.clone().requires_grad_(True)
        chunks: list[Tensor] = []
        for part in x.split(sizes):
            n = part.shape[0]
            if n:
                cut = part.split(size) if split == "size" else part.chunk(max(n // size, 1))
                chunks.extend(cut)
        eps = layer.eps
        y = torch.cat([F.batch_norm(c, None, None, weight, bias, True, 0.0, eps) for c in chunks])
        gx, gw, gb = torch.autograd.grad((y * g).sum(), [x, weight, bias])
        ys.append(y.detach())
        gxs.append(gx)
        param_grads.append([gw, gb])
        with torch.no_grad():
            dims = (0, *range(2, x.dim()))
            stats = [(c.mean(dims), c.var(dims, correction=1)) for c in chunks]
            counted += 1
            if momentum is None:
                f = 1.0 / counted
                mean = (1 - f) * mean + f * torch.stack([m for m, _ in stats]).mean(0)
                var = (1 - f) * var + f * torch.stack([v for _, v in stats]).mean(0)
            else:
                for m, v in stats:
                    mean = (1 - momentum) * mean + momentum * m
                    var = (1 - momentum) * var + momentum * v
    buffers: dict[str, Tensor] = {}
    if kwargs.get("track_running_stats", True):
        buffers = {
            "running_mean": mean,
            "running_var": var,
            "num_batches_tracked": torch.tensor(counted),
        }
    return {"y": ys, "gx": gxs, "param_grads": param_grads, "buffers": buffers}
