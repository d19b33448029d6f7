"""Batch orders for one epoch of training: i.i.d. batches and the non-i.i.d. ones that break BN.

``--order`` picks how the training examples are grouped into batches:

- ``iid``: a random permutation cut into batches, the usual SGD sampling.
- ``sorted``: class-sorted. Classes in a random order, each class's examples shuffled, the
  concatenation cut into batches, then the batch order shuffled. Every batch holds one class
  except the few that straddle the boundary between two classes: the extreme non-i.i.d. case,
  where a batch's statistics describe one class rather than the data.
- ``fewclass:K``: each batch is drawn from K classes chosen at random for that batch, ⌊B/K⌋ or
  ⌈B/K⌉ examples from each. Within a class examples are drawn without replacement from a shuffled
  pool; a class whose pool cannot supply its share is reshuffled (its leftovers wait for the
  next round), so over an epoch each example is seen about once. ``fewclass:C`` (all classes)
  gives class-balanced batches.

An epoch has ⌊N/B⌋ batches of exactly B examples (``drop_last=True``, the default), so a
BatchNorm never meets a last batch of one example, and every batch size sees the same number of
examples per epoch up to B − 1. With ``drop_last=False`` there are ⌈N/B⌉ batches, the last of
N mod B examples when B does not divide N.

Everything is drawn from the ``torch.Generator`` passed in: the same generator state gives the
same batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from normlab import errors
from normlab.errors import ConfigError

__all__ = ["ORDERS", "batch_indices", "check_batch_sizes", "check_order", "parse_order"]


# -- errors raised here ----------------------------------------------------------------------------


def bad_batch_size(batch_size: object) -> ConfigError:
    return ConfigError(
        f"batch size must be a positive int; got {batch_size!r}. Pass --batch-sizes with "
        "values >= 1, e.g. --batch-sizes 2,4,8,16,32."
    )


def batch_size_too_large(batch_size: int, n_train: int, data_name: str) -> ConfigError:
    return ConfigError(
        f"batch size {batch_size} is larger than the {n_train} training examples of "
        f"{data_name}; use --batch-sizes up to {n_train}."
    )


def bad_batch_order(order: object, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"--order {order}: {problem}. {fix}")


ORDERS = ("iid", "sorted", "fewclass:K")


def parse_order(order: str) -> tuple[str, int | None]:
    """``"iid"`` -> ``("iid", None)``, ``"fewclass:3"`` -> ``("fewclass", 3)``; K >= 1 checked."""
    if not isinstance(order, str):
        raise bad_batch_order(
            repr(order), "the batch order must be a string", f"Pass one of {', '.join(ORDERS)}."
        )
    kind, sep, arg = order.strip().lower().partition(":")
    if kind in ("iid", "sorted"):
        if sep:
            raise bad_batch_order(
                order, f"{kind} takes no parameter", f"Use --order {kind}."
            )
        return kind, None
    if kind == "fewclass":
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if k < 1:
            raise bad_batch_order(
                order,
                "fewclass needs the number of classes per batch, a positive int",
                "Use e.g. --order fewclass:2 (each batch drawn from 2 classes).",
            )
        return kind, k
    raise errors.unknown_choice("batch order", order, ORDERS)


def check_order(order: str, labels: Tensor, batch_sizes: Iterable[int] = ()) -> str:
    """Check ``order`` against the training labels (and batch sizes) before any run starts.

    ``fewclass:K`` needs 1 <= K <= the number of classes, and every class must hold at least
    ⌈B/K⌉ examples so that a batch never repeats an example. Returns the order, normalized.
    """
    kind, k = parse_order(order)
    if k is None:
        return kind
    counts = _check_labels(labels).bincount()
    counts = counts[counts > 0]
    if k > len(counts):
        raise bad_batch_order(
            order,
            f"K = {k} classes per batch, but the training data has {len(counts)} classes",
            f"Use K between 1 and {len(counts)}.",
        )
    smallest = int(counts.min())
    for b in batch_sizes:
        share = -(-b // k)
        if share > smallest:
            raise bad_batch_order(
                order,
                f"batch size {b} takes up to {share} examples from each of its {k} classes, but "
                f"the smallest class has {smallest}",
                f"Use a larger K or batch sizes up to {smallest * k}.",
            )
    return f"fewclass:{k}"


def check_batch_sizes(batch_sizes: Iterable[int], n_train: int, data_name: str) -> list[int]:
    """Each batch size a positive int no larger than the ``n_train`` training examples."""
    sizes = list(batch_sizes)
    for b in sizes:
        _check_batch_size(b, n_train, data_name)
    return sizes


def _check_batch_size(batch_size: object, n_train: int, data_name: str) -> int:
    if not errors.is_positive_int(batch_size):
        raise bad_batch_size(batch_size)
    if batch_size > n_train:
        raise batch_size_too_large(batch_size, n_train, data_name)
    return batch_size


def _check_labels(labels: object) -> Tensor:
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.numel() == 0
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
        or int(labels.min()) < 0
    ):
        shown = (
            f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
            if isinstance(labels, Tensor)
            else type(labels).__name__
        )
        raise errors.InputError(
            f"labels must be a non-empty 1-D tensor of class indices >= 0 (int64); got a "
            f"{shown}. Pass the training labels, e.g. data.y_train."
        )
    return labels


def batch_indices(
    labels: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    order: str = "iid",
    drop_last: bool = True,
    data_name: str = "the data",
) -> list[Tensor]:
    """One epoch of index batches into the training set, in the order ``order``.

    Args:
        labels: (N,) class index of every training example.
        batch_size: B, examples per batch, 1 <= B <= N.
        generator: the source of every random draw.
        order: ``iid``, ``sorted`` or ``fewclass:K`` (see the module docstring).
        drop_last: drop the last, incomplete batch (default), so every batch has B examples.
        data_name: the data set's name, for the error message of a batch size larger than N.

    Returns:
        ⌊N/B⌋ (or ⌈N/B⌉ with ``drop_last=False``) int64 tensors of indices into ``labels``.
    """
    labels = _check_labels(labels)
    n = len(labels)
    _check_batch_size(batch_size, n, data_name)
    kind = check_order(order, labels, [batch_size])
    if kind == "iid":
        return _cut(torch.randperm(n, generator=generator), batch_size, drop_last)
    if kind == "sorted":
        return _sorted(labels, batch_size, generator, drop_last)
    return _fewclass(labels, batch_size, int(kind.split(":")[1]), generator, drop_last)


def _cut(stream: Tensor, batch_size: int, drop_last: bool) -> list[Tensor]:
    batches = list(stream.split(batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _sorted(
    labels: Tensor, batch_size: int, generator: torch.Generator, drop_last: bool
) -> list[Tensor]:
    classes = labels.unique()
    classes = classes[torch.randperm(len(classes), generator=generator)]
    stream = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        stream.append(members[torch.randperm(len(members), generator=generator)])
    batches = _cut(torch.cat(stream), batch_size, drop_last)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _fewclass(
    labels: Tensor, batch_size: int, k: int, generator: torch.Generator, drop_last: bool
) -> list[Tensor]:
    classes = labels.unique()
    members = [(labels == c).nonzero().flatten() for c in classes]
    pools = [m[torch.randperm(len(m), generator=generator)] for m in members]
    used = [0] * len(classes)
    n = len(labels)
    sizes = [batch_size] * (n // batch_size)
    if not drop_last and n % batch_size:
        sizes.append(n % batch_size)
    batches = []
    for size in sizes:
        chosen = torch.randperm(len(classes), generator=generator)[:k].tolist()
        parts = []
        for j, c in enumerate(chosen):
            share = size // k + (j < size % k)  # the first size mod K chosen classes take one more
            if used[c] + share > len(pools[c]):  # pool used up: a fresh shuffle of the class
                pools[c] = members[c][torch.randperm(len(members[c]), generator=generator)]
                used[c] = 0
            parts.append(pools[c][used[c] : used[c] + share])
            used[c] += share
        batches.append(torch.cat(parts))
    return batches
