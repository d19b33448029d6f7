"""Re-estimate running statistics exactly: precise BN and AdaBN.

The running statistics a BN layer ends training with are an exponential moving average of
per-batch statistics taken while the weights were still moving; after SWA, weight averaging,
pruning, a change of input resolution or a change of domain they no longer describe the
activations. Precise BN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm",
arXiv:2105.07576, section 3) replaces them by *population* statistics: with the weights fixed,
run the model over many batches and, for every BN layer, merge the per-channel moments of its
input over all of them,

$$ μ = \\frac{1}{n}\\sum_i x_i, \\qquad σ^2 = \\frac{1}{n}\\sum_i (x_i - μ)^2 \\quad
   \\text{(stored as } σ^2 n/(n-1) \\text{ by layers that store the unbiased variance)},$$

n = all values of a channel over (N, *S) and all batches. The merge is exact and
count-weighted (`normlab.core.moments.Moments`, Chan et al.; accumulated in float64), not an
EMA: batches of different sizes weigh by their size and the order of the batches does not
matter.

Which inputs: during the passes the layers being recalibrated are in training mode, so each
normalizes with its own batch statistics, and the input of a layer is what the train-mode
forward of the layers below produces — the definition of precise BN (the population
statistics of the layer's input under the training-mode network, with the batch size of the
batches given). Every other module stays in eval mode (dropout off, frozen layers frozen).
The layers' buffers are restored after every forward, so each batch sees the same state
(this matters to BatchRenorm, whose r, d read the running statistics) and nothing drifts;
momenta are never changed. At the end each layer's running statistics are overwritten:

===========================================  ===============================================
layer                                        written
===========================================  ===============================================
torch BatchNorm*d / SyncBatchNorm (and       ``running_mean`` = μ, ``running_var`` = unbiased
subclasses), normlab BatchNorm,              σ² n/(n − 1) (PyTorch's convention)
GhostBatchNorm, SwitchableNorm (BN branch),
BatchInstanceNorm, any module with
``running_mean`` / ``running_var`` buffers
normlab BatchRenorm                          μ and the biased σ² (its convention, no Bessel)
normlab EvoNormB0                            ``running_var`` = biased σ² (it has no mean)
InstanceNorm with track_running_stats        torch.nn's instance rule, exactly: the mean over
(torch and normlab)                          all samples of the per-sample mean and of the
                                             per-sample unbiased variance
===========================================  ===============================================

``num_batches_tracked`` is left unchanged: it counts training steps, and BatchRenorm's r/d
schedule reads it. A layer that received no input in any batch (an unused branch) keeps its
statistics and is reported with ``count=0``. FrozenBatchNorm, timm's FrozenBatchNormAct2d
and layers frozen by `normlab.freeze` keep theirs (they are frozen on purpose) and stay in
eval mode (timm's BatchNormAct2d is recalibrated like the BN it subclasses; its drop and act
stay in eval). Every module's training flag, and every buffer when a forward raises, is
restored in a ``finally``.

AdaBN (Li, Wang, Shi, Liu & Hou 2016, arXiv:1603.04779) is the same computation with another
intent: ``batches`` are *unlabeled target-domain* inputs, and replacing the source statistics
by the target domain's adapts a source-trained model to the target domain without labels or
gradient steps. ``mode="adabn"`` names that use (it is recorded in the report); the numbers are
those of ``mode="precise"``. This is the single-pass version: the statistics of layer l are
those of its input under the train-mode layers below, not under the already-adapted eval-mode
layers below (METHODS.md §10 discusses the difference).

Across replicas (``process_group=torch.distributed.group.WORLD``, or any group): each replica
passes its own batches (any number, zero included) and collects its per-layer (n, μ, σ²), which
are merged across the group exactly (`normlab.core.cross_replica.merge_across`: one
``all_gather`` per layer, plus one ``all_reduce`` for the number of batches and failures), so
every replica writes the same buffers: those of one process recalibrating on the batches of
all replicas. Each batch is still normalized by its own statistics during the passes (a model
given to `normlab.sync` runs them unsynchronized, so replicas with different numbers of
batches never wait for each other); a DistributedDataParallel wrapper is looked through (its
forward broadcasts buffers, a collective). When one replica fails (a NaN batch, say) every
replica raises and leaves its statistics as they were.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import cross_replica
from normlab.core.cross_replica import ProcessGroup
from normlab.core.moments import Moments
from normlab.errors import ConfigError, InputError
from normlab.surgery import layers
from normlab.surgery.freeze import is_frozen
from normlab.surgery.walker import not_a_model

# -- errors raised here ----------------------------------------------------------------------------


def nothing_to_recalibrate(model: str, problem: str) -> ConfigError:
    return ConfigError(
        f"recalibrate: {model} {problem}. Recalibration (precise BN / AdaBN) re-estimates the "
        "running statistics of BatchNorm-like layers (torch.nn BatchNorm*d / SyncBatchNorm, "
        "normlab BatchNorm, GhostBatchNorm, BatchRenorm, SwitchableNorm, BatchInstanceNorm, "
        "EvoNormB0, InstanceNorm with track_running_stats=True); layers frozen by "
        "normlab.freeze or FrozenBatchNorm keep theirs. Unfreeze them first if you mean to."
    )


def no_batches(num_batches: object) -> ConfigError:
    return ConfigError(
        f"recalibrate: batches yielded no batch (num_batches={num_batches!r}). Pass a non-empty "
        "iterable of input batches, e.g. a DataLoader over the training set (precise BN) or "
        "over unlabeled target-domain data (AdaBN)."
    )


def bad_num_batches(num_batches: object) -> ConfigError:
    return ConfigError(
        f"recalibrate: num_batches must be a positive int or None (all batches); got "
        f"{num_batches!r}. The precise-BN paper uses a few hundred batches, e.g. num_batches=200."
    )


def bad_batch(index: int, problem: str) -> InputError:
    return InputError(
        f"recalibrate: batch {index}: {problem}. A batch is a tensor, an (inputs, targets) "
        "tuple or list (the first element is fed to the model), or a dict with key 'x'; for "
        "anything else pass forward=lambda model, batch: model(...)."
    )


def non_finite_statistics(layer: str, index: int) -> InputError:
    return InputError(
        f"recalibrate: the input of {layer} holds NaN or Inf values in batch {index} (or values "
        "so large that their variance overflows float64); the population statistics would be "
        "NaN. Check the data and the layers before it; every running statistic was left as it "
        "was."
    )


def lazy_layer_not_materialized(function: str, layer: str) -> ConfigError:
    return ConfigError(
        f"{function}: {layer} is a lazy layer that has not seen input yet, so it has no "
        "statistics to work on. Run one forward pass first (it materializes the layer)."
    )


def not_distributed(process_group: object) -> ConfigError:
    return ConfigError(
        f"recalibrate: process_group={process_group!r} asks to merge statistics across "
        "replicas, but torch.distributed is not initialized. Call "
        "torch.distributed.init_process_group(...) first (torchrun sets its environment), or "
        "pass process_group=None to recalibrate on this process's batches alone."
    )


def replica_failed(failed: int) -> InputError:
    return InputError(
        f"recalibrate: {failed} other replica(s) of the process group failed while running "
        "their batches (their own error says why); every running statistic was left as it "
        "was here too."
    )


MODES = ("precise", "adabn")


@dataclass(frozen=True)
class Recalibrated:
    """One layer whose running statistics `recalibrate` re-estimated: ``count`` values per
    channel over ``batches`` batches (0: it received no input and was left unchanged).

    Attributes:
        path: the layer's dotted path.
        layer_type: the layer's class.
        count: values per channel the statistics are over.
        batches: batches that reached the layer.
        mode: ``"precise"`` or ``"adabn"``.
    """

    path: str
    layer_type: type
    count: int
    batches: int
    mode: str = "precise"

    def __str__(self) -> str:
        name = f"{self.path or '<root>'} ({self.layer_type.__name__})"
        if not self.count:
            return f"{name}: no input in {self.batches} batches, statistics unchanged"
        return f"{name}: {self.mode} statistics of {self.count} values per channel"


class _Population:
    """Per-channel population moments of one layer's input, merged exactly in float64."""

    def __init__(self, path: str, layer: nn.Module) -> None:
        self.path, self.layer = path, layer
        self.kind = layers.stats_kind(layer)
        self.channel_dim = layers.channel_dim(layer)
        self.moments: Moments | None = None  # "batch": over (N, *S)
        self.instance_means: Tensor | None = None  # "instance": sums over samples
        self.instance_vars: Tensor | None = None
        self.instances = 0

    @property
    def count(self) -> int:
        if self.kind == "instance":
            return self.instances
        return 0 if self.moments is None else int(self.moments.count)

    def add(self, x: Tensor, index: int) -> None:
        xc = x.detach()
        if self.channel_dim != 1:
            xc = xc.movedim(-1, 1)
        xc = xc.to(torch.float64)
        if self.kind == "instance":
            m = Moments.from_tensor(xc, range(2, xc.dim()))
            means, variances = m.mean.sum(0), m.unbiased_var.sum(0)
            if not (torch.isfinite(means).all() and torch.isfinite(variances).all()):
                raise non_finite_statistics(layers.describe(self.path, self.layer), index)
            if self.instance_means is None or self.instance_vars is None:
                self.instance_means, self.instance_vars = means, variances
            else:
                self.instance_means = self.instance_means + means
                self.instance_vars = self.instance_vars + variances
            self.instances += xc.shape[0]
            return
        m = Moments.from_tensor(xc, (0, *range(2, xc.dim())))
        if not bool(m.is_finite()):
            raise non_finite_statistics(layers.describe(self.path, self.layer), index)
        self.moments = m if self.moments is None else self.moments.merge(m)

    @torch.no_grad()
    def merge_across(self, group: ProcessGroup) -> None:
        """Replace this replica's moments by those of every replica in ``group`` (one
        ``all_gather``; a replica that saw no input joins with count 0). The instance kind's
        two averages travel as the mean of one set of ``instances`` values each, so the
        count-weighted merge averages them over all samples."""
        like = _buffer(self.layer, "running_mean")
        like = _buffer(self.layer, "running_var") if like is None else like
        assert like is not None  # a target holds one of them
        zeros = torch.zeros(like.numel(), dtype=torch.float64, device=like.device)
        if self.kind == "instance":
            n = self.instances
            local = (
                torch.cat([self.instance_means, self.instance_vars]) / n
                if n and self.instance_means is not None and self.instance_vars is not None
                else torch.cat([zeros, zeros])
            )
            merged = cross_replica.merge_across(Moments(local, torch.zeros_like(local), n), group)
            self.instances = int(merged.count)
            sums = merged.mean * self.instances
            self.instance_means, self.instance_vars = sums.chunk(2)
            return
        mine = self.moments if self.moments is not None else Moments(zeros, zeros.clone(), 0)
        merged = cross_replica.merge_across(mine, group)
        self.moments = merged if merged.count else None

    @torch.no_grad()
    def write(self) -> None:
        mean_buf = self.layer._buffers.get("running_mean")
        var_buf = self.layer._buffers.get("running_var")
        if self.kind == "instance":
            assert self.instance_means is not None and self.instance_vars is not None
            mean, var = self.instance_means / self.instances, self.instance_vars / self.instances
        else:
            assert self.moments is not None
            mean = self.moments.mean
            biased = layers.running_stats(self.layer) == "batch_biased"
            var = self.moments.var if biased else self.moments.unbiased_var
        if isinstance(mean_buf, Tensor):
            mean_buf.copy_(mean)
        if isinstance(var_buf, Tensor):
            var_buf.copy_(var)


def _buffer(module: nn.Module, name: str) -> Tensor | None:
    value = module._buffers.get(name)
    return value if isinstance(value, Tensor) else None


def _agree(group: ProcessGroup, device: torch.device, seen: int, failed: bool) -> int:
    """The number of batches all replicas saw (one ``all_reduce``, which also tells every
    replica whether another failed: then it raises instead of waiting for the merges)."""
    status = torch.tensor([seen, int(failed)], dtype=torch.float64, device=device)
    total_seen, failures = (int(v) for v in cross_replica.sum_across(status, group).tolist())
    if failures and not failed:
        raise replica_failed(failures)
    return total_seen


def _inputs(batch: Any, index: int) -> Any:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise bad_batch(index, f"it is an empty {type(batch).__name__}")
        return batch[0]
    if isinstance(batch, Mapping):
        if "x" in batch:
            return batch["x"]
        raise bad_batch(index, f"it is a dict without key 'x' (keys: {list(batch)})")
    raise bad_batch(index, f"it is a {type(batch).__name__}")


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found, frozen = [], 0
    for path, module in model.named_modules():
        if not layers.has_running_stats(module):
            continue
        if layers.is_lazy_uninitialized(module):
            raise lazy_layer_not_materialized("recalibrate", layers.describe(path, module))
        if layers.frozen_stats(module) or is_frozen(module):
            frozen += 1
            continue
        found.append((path, module))
    if not found:
        problem = (
            f"holds {frozen} layer(s) with running statistics, all frozen"
            if frozen
            else "holds no layer with running statistics"
        )
        raise nothing_to_recalibrate(type(model).__name__, problem)
    return found


def recalibrate(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    *,
    mode: str = "precise",
    forward: Callable[[nn.Module, Any], Any] | None = None,
    process_group: ProcessGroup = None,
) -> list[Recalibrated]:
    """Overwrite the running statistics of ``model``'s norm layers with exact population
    statistics of their inputs over ``batches`` (precise BN, or AdaBN on target-domain data).

    Args:
        model: modified in place (running statistics only).
        batches: an iterable of batches: tensors, ``(inputs, targets, ...)`` tuples or lists
            (the first element is the model's input) or dicts with key ``"x"``.
        num_batches: use at most this many batches (all when None).
        mode: ``"precise"`` or ``"adabn"`` (same computation, see the module docstring).
        forward: ``forward(model, batch)`` runs one batch, for models that take several
            inputs or keyword arguments; None: ``model(input)``.
        process_group: None: this process's batches alone. A process group (e.g.
            ``torch.distributed.group.WORLD``): every replica of it calls ``recalibrate``
            with its own batches and ends with the statistics of all replicas' batches (see
            the module docstring); ``num_batches`` then applies to each replica.

    Returns one `Recalibrated` per layer (model order; counts and batches over all replicas
    when merged). Raises `ConfigError` when there is no
    batch or no layer to recalibrate, `InputError` for a batch of an unknown form or an input
    with NaN / Inf (the statistics are then left as they were).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        >>> data = [torch.randn(8, 4) for _ in range(5)]
        >>> print(recalibrate(net, data)[0])
        1 (BatchNorm1d): precise statistics of 40 values per channel
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("recalibrate", model)
    if process_group is not None and not cross_replica.initialized():
        raise not_distributed(process_group)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module  # its forward broadcasts buffers: a collective per batch
    if mode not in MODES:
        raise errors.unknown_choice("recalibration mode", str(mode), MODES)
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches <= 0
    ):
        raise bad_num_batches(num_batches)
    targets = _targets(model)
    populations = {id(m): _Population(path, m) for path, m in targets}
    saved = {
        id(m): {k: b.clone() for k, b in m._buffers.items() if isinstance(b, Tensor)}
        for _, m in targets
    }
    flags = [(m, m.training) for m in model.modules()]
    # synced layers (normlab.sync) normalize each batch locally here: no collective per batch
    reducers = [
        (m, m.__dict__.pop("moments_reducer"))
        for m in model.modules()
        if "moments_reducer" in m.__dict__
    ]
    device = next(iter(saved[id(targets[0][1])].values())).device
    index = 0

    def collect(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor):
            populations[id(module)].add(args[0], index)

    def restore_buffers() -> None:
        with torch.no_grad():
            for _, m in targets:
                for k, value in saved[id(m)].items():
                    m._buffers[k].copy_(value)  # type: ignore[union-attr]

    handles = [m.register_forward_pre_hook(collect) for _, m in targets]
    seen = 0
    try:
        model.eval()
        for _, m in targets:
            m.training = True  # this layer only: its children (if any) stay in eval
        try:
            with torch.no_grad():
                for index, batch in enumerate(itertools.islice(batches, num_batches)):
                    if forward is None:
                        model(_inputs(batch, index))
                    else:
                        forward(model, batch)
                    restore_buffers()
                    seen += 1
        except Exception:
            if process_group is not None:  # tell the others, who would wait for the merges
                _agree(process_group, device, seen, failed=True)
            raise
        if process_group is not None:
            seen = _agree(process_group, device, seen, failed=False)
        if not seen:
            raise no_batches(num_batches)
        for population in populations.values():
            if process_group is not None:
                population.merge_across(process_group)
            if population.count:
                population.write()
    except BaseException:
        restore_buffers()
        raise
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in flags:
            module.training = flag
        for module, reducer in reducers:
            module.moments_reducer = reducer
    return [
        Recalibrated(path, type(m), populations[id(m)].count, seen, mode) for path, m in targets
    ]
