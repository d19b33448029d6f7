"""Batch orders: i.i.d., class-sorted and few-class batches for one epoch."""

from __future__ import annotations

import itertools

import pytest
import torch

from normlab.errors import NormlabError
from normlab.lab.sampling import batch_indices, check_batch_sizes, check_order, parse_order

CLASSES, PER_CLASS = 10, 50


def balanced_labels() -> torch.Tensor:
    """10 classes of 50, interleaved (label i % 10) so index order says nothing about class."""
    return torch.arange(CLASSES * PER_CLASS) % CLASSES


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def classes_per_batch(labels: torch.Tensor, batches: list[torch.Tensor]) -> list[int]:
    return [len(set(labels[b].tolist())) for b in batches]


@pytest.mark.parametrize("drop_last", [True, False])
def test_iid_is_a_permutation_cut_into_batches(drop_last: bool) -> None:
    labels = torch.zeros(103, dtype=torch.int64)
    batches = batch_indices(labels, 10, generator=gen(), order="iid", drop_last=drop_last)
    sizes = [len(b) for b in batches]
    assert sizes == ([10] * 10 if drop_last else [10] * 10 + [3])
    flat = torch.cat(batches).tolist()
    assert len(set(flat)) == len(flat) and all(0 <= i < 103 for i in flat)
    if not drop_last:
        assert sorted(flat) == list(range(103))
    assert flat != sorted(flat)  # shuffled
    assert all(b.dtype == torch.int64 for b in batches)


def test_drop_last_never_leaves_a_batch_of_one() -> None:
    labels = torch.zeros(9, dtype=torch.int64)
    assert [len(b) for b in batch_indices(labels, 4, generator=gen())] == [4, 4]
    assert [len(b) for b in batch_indices(labels, 4, generator=gen(), drop_last=False)] == [
        4, 4, 1,
    ]
    assert [len(b) for b in batch_indices(labels, 9, generator=gen())] == [9]


def test_sorted_batches_hold_one_class_except_at_class_boundaries() -> None:
    labels = balanced_labels()
    batches = batch_indices(labels, 16, generator=gen(), order="sorted")
    assert len(batches) == len(labels) // 16 and all(len(b) == 16 for b in batches)
    counts = classes_per_batch(labels, batches)
    assert max(counts) <= 2 and sum(c == 2 for c in counts) <= CLASSES - 1
    flat = torch.cat(batches).tolist()
    assert len(set(flat)) == len(flat)
    # The batch order is shuffled: consecutive batches rarely share their main class.
    main = [labels[b].mode().values.item() for b in batches]
    changes = sum(a != b for a, b in itertools.pairwise(main))
    assert changes > 2 * CLASSES


def test_sorted_without_drop_last_covers_every_example() -> None:
    labels = balanced_labels()
    batches = batch_indices(labels, 16, generator=gen(), order="sorted", drop_last=False)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(labels)))


@pytest.mark.parametrize(("k", "batch_size"), [(1, 8), (2, 16), (3, 16), (10, 20)])
def test_fewclass_batches_draw_from_k_classes_evenly(k: int, batch_size: int) -> None:
    labels = balanced_labels()
    batches = batch_indices(labels, batch_size, generator=gen(), order=f"fewclass:{k}")
    assert len(batches) == len(labels) // batch_size
    for b in batches:
        assert len(b) == batch_size and len(set(b.tolist())) == batch_size  # no repeats
        per_class = labels[b].bincount(minlength=CLASSES)
        present = per_class[per_class > 0]
        assert len(present) == k
        assert int(present.max() - present.min()) <= 1  # ⌊B/K⌋ or ⌈B/K⌉ from each
    # Without replacement within a class: over an epoch no example comes back more than twice.
    seen = torch.cat(batches).bincount(minlength=len(labels))
    assert int(seen.max()) <= 2


def test_fewclass_classes_change_from_batch_to_batch() -> None:
    labels = balanced_labels()
    batches = batch_indices(labels, 10, generator=gen(), order="fewclass:2")
    pairs = {tuple(sorted(set(labels[b].tolist()))) for b in batches}
    assert len(pairs) > 10  # of the 45 possible pairs, many appear in one epoch


@pytest.mark.parametrize("order", ["iid", "sorted", "fewclass:3"])
def test_batches_depend_only_on_the_generator(order: str) -> None:
    labels = balanced_labels()
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first = batch_indices(labels, 12, generator=gen(5), order=order)
    again = batch_indices(labels, 12, generator=gen(5), order=order)
    other = batch_indices(labels, 12, generator=gen(6), order=order)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is not touched


def test_successive_epochs_differ() -> None:
    g = gen()
    labels = balanced_labels()
    first = batch_indices(labels, 50, generator=g)
    second = batch_indices(labels, 50, generator=g)
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_batch_size_larger_than_the_data_is_one_clear_error() -> None:
    labels = torch.zeros(1437, dtype=torch.int64)
    with pytest.raises(
        NormlabError,
        match=r"^batch size 4096 is larger than the 1437 training examples of digits; use "
        r"--batch-sizes up to 1437\.$",
    ):
        batch_indices(labels, 4096, generator=gen(), data_name="digits")
    with pytest.raises(NormlabError, match=r"up to 1437"):
        check_batch_sizes([2, 64, 4096], 1437, "digits")
    assert check_batch_sizes([2, 1437], 1437, "digits") == [2, 1437]


@pytest.mark.parametrize("bad", [0, -4, 2.0, True, "8"])
def test_batch_size_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(NormlabError, match=rf"batch size must be a positive int; got {bad!r}"):
        batch_indices(balanced_labels(), bad, generator=gen())  # type: ignore[arg-type]  # tested


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("sortd", r"Unknown batch order 'sortd'\. Did you mean 'sorted'\? Known: iid, sorted"),
        ("fewclas:2", r"Did you mean 'fewclass:K'\?"),
        ("iid:2", r"--order iid:2: iid takes no parameter\. Use --order iid\."),
        ("fewclass", r"--order fewclass: fewclass needs the number of classes per batch"),
        ("fewclass:0", r"--order fewclass:0: .*Use e\.g\. --order fewclass:2"),
        ("fewclass:x", r"--order fewclass:x: fewclass needs"),
        ("fewclass:11", r"K = 11 classes per batch, but the training data has 10 classes\. Use K "
                        r"between 1 and 10\."),
    ],
)
def test_bad_orders(order: str, expected: str) -> None:
    with pytest.raises(NormlabError, match=expected):
        batch_indices(balanced_labels(), 8, generator=gen(), order=order)


def test_fewclass_share_larger_than_a_class_is_refused_up_front() -> None:
    labels = balanced_labels()
    with pytest.raises(
        NormlabError,
        match=r"batch size 128 takes up to 64 examples from each of its 2 classes, but the "
        r"smallest class has 50\. Use a larger K or batch sizes up to 100\.",
    ):
        check_order("fewclass:2", labels, [16, 128])
    assert check_order(" FewClass:2 ", labels, [16, 100]) == "fewclass:2"
    assert check_order("sorted", labels) == "sorted"
    assert parse_order("fewclass:4") == ("fewclass", 4)


def test_labels_must_be_class_indices() -> None:
    with pytest.raises(NormlabError, match=r"labels must be a non-empty 1-D tensor .*float32"):
        batch_indices(torch.zeros(10), 2, generator=gen())
    with pytest.raises(NormlabError, match=r"labels must be .*shape \(0,\)"):
        batch_indices(torch.zeros(0, dtype=torch.int64), 2, generator=gen())
