"""Small training loops for the claims that compare parameterizations of an MLP.

The lab's runner trains its own models (`normlab.claims.training`); the claims on deep sigmoid
nets, weight norm, normalization propagation and cosine normalization need other models and
per-step numbers, so they train here: the ``digits`` data set flattened to 64 features and
standardized *per feature* with the training split's statistics (x' = (x − μ_j)/σ_j, σ_j = 1
for a constant pixel), mini-batches drawn by a seeded `torch.Generator`, one thread. A run is a
pure function of its arguments.

The training loss a curve reports at step k is the mean of the mini-batch losses of the steps
since the previous checkpoint (the loss the optimizer saw); a run whose loss is not finite has
diverged and reports ``None`` from then on.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from normlab.claims.rules import mean, mean_std, spread
from normlab.claims.training import cached_data

__all__ = [
    "curves_figure", "digits_flat", "one_thread", "pick", "seed_stats", "show", "train_mlp",
]  # fmt: skip


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread (deterministic, fair on a shared machine), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=2)
def digits_flat(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``digits`` as (x_train, y_train, x_test, y_test), x of shape (N, 64), per-feature
    standardized with the training split's mean and standard deviation."""
    data = cached_data("digits", None)
    x_train = data.x_train.flatten(1).to(dtype)
    x_test = data.x_test.flatten(1).to(dtype)
    mu = x_train.mean(0)
    sigma = x_train.std(0)
    sigma = torch.where(sigma > 1e-6, sigma, torch.ones_like(sigma))
    return (x_train - mu) / sigma, data.y_train, (x_test - mu) / sigma, data.y_test


def train_mlp(
    build: Callable[[], nn.Module], seed: int, *, steps: int, checkpoints: Sequence[int],
    lr: float, optimizer: str = "sgd", momentum: float = 0.9, batch_size: int = 64,
    prepare: Callable[[nn.Module, Tensor], None] | None = None,
    inspect: Callable[[nn.Module], Any] | None = None,
) -> dict[str, Any]:
    """Train ``build()`` on flattened digits with cross-entropy; the loss curve and test error.

    ``torch.manual_seed(seed)`` precedes ``build()``; the batches come from a generator seeded
    with ``seed``. ``prepare(model, batch)`` (e.g. a data-dependent initialization) sees 256
    training examples before the first step. ``optimizer``: ``"sgd"`` (with ``momentum``) or
    ``"adam"``. Returns ``{"loss": [mean mini-batch loss up to each checkpoint], "test_error":
    % in eval mode after the last step}``, with ``None`` after a divergence, and
    ``"inspect": inspect(model)`` of the trained model (in eval mode) when given.
    """
    x_train, y_train, x_test, y_test = digits_flat()
    with one_thread():
        torch.manual_seed(seed)
        model = build()
        g = torch.Generator().manual_seed(seed)
        if prepare is not None:
            prepare(model, x_train[torch.randperm(len(x_train), generator=g)[:256]])
        params = [p for p in model.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer = (
            torch.optim.Adam(params, lr=lr) if optimizer == "adam"
            else torch.optim.SGD(params, lr=lr, momentum=momentum)
        )
        losses: list[float | None] = []
        window: list[float] = []
        diverged = False
        model.train()
        for step in range(1, steps + 1):
            if not diverged:
                idx = torch.randint(len(x_train), (batch_size,), generator=g)
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                if not torch.isfinite(loss):
                    diverged = True
                else:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    window.append(loss.item())
            if step in checkpoints:
                losses.append(None if diverged else round(sum(window) / len(window), 6))
                window = []
        model.eval()
        with torch.no_grad():
            wrong = (model(x_test).argmax(1) != y_test).float().mean().item()
        result = {"loss": losses, "test_error": None if diverged else round(100 * wrong, 4)}
        if inspect is not None:
            result["inspect"] = inspect(model)
    return result


def pick(runs: Sequence[Mapping[str, Any]], key: str, index: int | None = None) -> list[Any]:
    """``run[key]`` (or ``run[key][index]``) of every seed's run."""
    return [r[key] if index is None else r[key][index] for r in runs]


def seed_stats(values: Sequence[float | None]) -> dict[str, float | None]:
    """``{"mean": ..., "spread": ...}`` over seeds (None where a run diverged)."""
    m, s = mean(values), spread(values)  # type: ignore[arg-type]
    return {"mean": m if math.isfinite(m) else None, "spread": s if math.isfinite(s) else None}


def curves_figure(
    title: str, steps: Sequence[int], curves: Mapping[str, Sequence[Sequence[float | None]]],
    ylabel: str = "training loss", log: bool = False,
) -> Any:
    """Mean ± spread over seeds of each labelled set of per-seed curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for label, per_seed in curves.items():
        columns = list(zip(*per_seed, strict=True))
        m = [mean(c) for c in columns]  # type: ignore[arg-type]
        s = [spread(c) for c in columns]  # type: ignore[arg-type]
        keep = [i for i, v in enumerate(m) if math.isfinite(v)]
        xs = [steps[i] for i in keep]
        ax.plot(xs, [m[i] for i in keep], marker="o", ms=3, label=f"{label} (n={len(per_seed)})")
        ax.fill_between(xs, [m[i] - s[i] for i in keep], [m[i] + s[i] for i in keep], alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show(values: Sequence[float | None]) -> str:
    """`mean_std` of per-seed values that may hold None (diverged)."""
    return mean_std(values)  # type: ignore[arg-type]
