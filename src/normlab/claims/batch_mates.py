"""C11: BN couples the samples of a batch, and per-worker batches change the optimized loss.

Two parts, both float64 and exact:

* **batch mates** (one process): a network Linear → BN → ReLU → Linear in training mode gives
  sample 0 a different output when its 7 batch mates are replaced; with LayerNorm instead, or
  BN in eval mode, the output stays the same to floating-point precision (the controls).
* **per-worker vs sync** (2 real ``torch.distributed`` processes, gloo, ``file://`` rendezvous in
  a temporary directory): the full batch of 2B samples is split in halves of B, one per rank,
  from the same weights. Per-worker BN (each rank normalizes with its own half's statistics,
  then the gradients are averaged, as data-parallel training does) optimizes another loss:
  its mean loss and averaged gradient differ from the full batch's, computed in one process.
  With `normlab.sync` (cross-replica statistics) both equal the full batch's.

A deviation is max |a − b| / max |b| over the compared tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from normlab.claims.exact import CONTROL_MIN, TOLERANCE
from normlab.claims.fit import deterministic
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.distributed._ranks import run_ranks

__all__ = ["C11"]

F64 = torch.float64
WORLD = 2
TIMEOUT_S = 120.0  # collectives; the parent waits this long plus 30 s, then kills its workers
FEATURES, HIDDEN, CLASSES = 6, 8, 3
_PER_RANK: dict[str, int] = {"smoke": 8, "quick": 16, "full": 64}


def _rel(a: Tensor, b: Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def _net(norm: str) -> nn.Module:
    layer = normlab.BatchNorm(HIDDEN, dtype=F64) if norm == "bn" else normlab.LayerNorm(
        HIDDEN, dtype=F64
    )
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN, dtype=F64), layer, nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES, dtype=F64),
    )  # fmt: skip


def _loss_and_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The mean cross-entropy and its gradient (all parameters, flattened)."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return loss.detach(), grad


def _batch_mates(g: torch.Generator) -> dict[str, float]:
    x = torch.randn(8, FEATURES, generator=g, dtype=F64)
    mates = torch.cat([x[:1], torch.randn(7, FEATURES, generator=g, dtype=F64)])
    out: dict[str, float] = {}
    for norm, mode in (("bn", "train"), ("ln", "train"), ("bn", "eval")):
        torch.manual_seed(0)
        net = _net(norm).train(mode == "train")
        if norm == "bn" and mode == "eval":  # running statistics that are not the init's
            net.train()(torch.randn(32, FEATURES, generator=g, dtype=F64))
            net.eval()
        with torch.no_grad():
            out[f"{norm}_{mode}"] = _rel(net(mates)[0], net(x)[0])
    return out


def _rank_main(rank: int, world_size: int, state: dict[str, Any]) -> dict[str, Tensor]:
    """One worker: per-worker BN and synced BN on this rank's half; averaged loss and grads."""
    half = len(state["x"]) // world_size
    x = state["x"][rank * half : (rank + 1) * half]
    y = state["y"][rank * half : (rank + 1) * half]
    result = {}
    for name in ("per_worker", "sync"):
        model = _net("bn").train()
        model.load_state_dict(state["weights"])
        if name == "sync":
            model = normlab.sync(model)
        loss, grad = _loss_and_grad(model, x, y)
        both = torch.cat([loss.reshape(1), grad])
        dist.all_reduce(both)  # the data-parallel average of losses and gradients
        result[name] = both / world_size
    return result


def measure_c11(size: Size) -> Numbers:
    with deterministic(11):
        return _measure(_PER_RANK[size])


def _measure(per_rank: int) -> Numbers:
    g = torch.Generator().manual_seed(11)
    mates = _batch_mates(g)
    torch.manual_seed(11)
    weights = copy.deepcopy(_net("bn").state_dict())
    x = torch.randn(WORLD * per_rank, FEATURES, generator=g, dtype=F64)
    y = torch.randint(0, CLASSES, (WORLD * per_rank,), generator=g)
    full = _net("bn").train()
    full.load_state_dict(weights)
    loss, grad = _loss_and_grad(full, x, y)
    ranks = run_ranks(WORLD, _rank_main, {"x": x, "y": y, "weights": weights}, timeout=TIMEOUT_S)
    out: dict[str, Any] = {
        "batch_size_per_rank": per_rank,
        "bn_train_sample_output_vs_batch_mates": mates["bn_train"],
        "control_ln_sample_output_vs_batch_mates": mates["ln_train"],
        "control_bn_eval_sample_output_vs_batch_mates": mates["bn_eval"],
        "ranks_agree": max(_rel(ranks[1][k], ranks[0][k]) for k in ranks[0]),
    }
    for name in ("per_worker", "sync"):
        both = ranks[0][name]
        out[f"{name}_loss_vs_full_batch"] = _rel(both[:1], loss.reshape(1))
        out[f"{name}_grad_vs_full_batch"] = _rel(both[1:], grad)
    return out


_EFFECTS = ("bn_train_sample_output_vs_batch_mates", "per_worker_loss_vs_full_batch",
            "per_worker_grad_vs_full_batch")  # fmt: skip
_IDENTITIES = ("control_ln_sample_output_vs_batch_mates",
               "control_bn_eval_sample_output_vs_batch_mates", "sync_loss_vs_full_batch",
               "sync_grad_vs_full_batch", "ranks_agree")  # fmt: skip


def decide_c11(n: Mapping[str, Any]) -> str:
    if min(n[k] for k in _EFFECTS) <= TOLERANCE:
        return CONTRADICTED  # an output or the loss does not depend on the batch mates at all
    if max(n[k] for k in _IDENTITIES) > TOLERANCE:
        return NOT_REPRODUCED
    # The loss *value* at an untrained initialization is close to log(classes) whatever the
    # statistics, so only its gradient (the slope of the objective being optimized) is held to
    # the control margin; the value must differ beyond floating-point precision.
    strong = ("bn_train_sample_output_vs_batch_mates", "per_worker_grad_vs_full_batch")
    if min(n[k] for k in strong) <= CONTROL_MIN:
        return NOT_REPRODUCED
    return REPRODUCED


C11 = Claim(
    id="C11",
    claim="BN makes training depend on the other samples of the batch; per-worker batch size "
    "changes the optimized loss",
    source="Goyal et al. 2017 (seed note)",
    kind="E/X",
    rule="float64, relative deviations max|a-b|/max|b|. Reproduced if (1) in training, BN gives "
    "a sample a different output when its 7 batch mates change (> "
    f"{CONTROL_MIN:g}) while LayerNorm and BN in eval mode do not (<= {TOLERANCE:g}), and (2) "
    "on 2 gloo processes each holding half the batch, per-worker BN's averaged gradient differs "
    f"from the full batch's (> {CONTROL_MIN:g}) and its averaged loss value too (> "
    f"{TOLERANCE:g}: at an untrained init the loss is near log(classes) whatever the "
    "statistics, so the gradient carries the margin) while normlab.sync's equal them "
    f"(<= {TOLERANCE:g}; both ranks agree); contradicted if a BN output or the per-worker loss "
    f"or gradient equals the full batch's (<= {TOLERANCE:g}); otherwise not reproduced.",
    measure=measure_c11,
    decide=decide_c11,
    summarize=lambda n: f"BN output vs batch mates {n[_EFFECTS[0]]:.3g}; per-worker loss "
    f"{n[_EFFECTS[1]]:.3g}, grad {n[_EFFECTS[2]]:.3g} off the full batch; sync loss "
    f"{n['sync_loss_vs_full_batch']:.2g}, grad {n['sync_grad_vs_full_batch']:.2g}; controls "
    f"LN {n[_IDENTITIES[0]]:.2g}, BN eval {n[_IDENTITIES[1]]:.2g}",
)
