"""Cross-replica Batch Renorm, Ghost BN, EvoNorm-B0 and mean-only BN on real gloo processes.

Each synchronized run is compared, in float64 over three training steps, with one process on
the concatenated batch (`distributed_cases.compare`: outputs, input gradients, summed parameter
gradients, running buffers to 1e-10 and bitwise identical across ranks). Ghost BN takes its
ghost batches per rank, so its reference cuts the concatenated batch at the rank boundaries
(`distributed_cases.ghost_reference`, written with torch's ``F.batch_norm``); where the ranks'
cuts coincide with the single-process layer's own, that layer is the reference too.

One spawn per world size runs every case on every batch split (`synced_cases`), so the file
costs two spawns.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import normlab
from distributed_cases import compare, ghost_reference, reference, synced_cases
from distributed_harness import run_ranks

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

STEPS = 3
SIZES = {2: [[4, 4], [3, 5]], 3: [[1, 7, 3], [4, 0, 2]]}
# Batch Renorm: clipping from the first step, with limits the test data exceed (|μ_B − μ|/σ ≈ 3
# against dmax 0.5; σ_B/σ reaches 2-3 against rmax 1.5 once the data's scale grows)
CLIPPED = {"rmax": 1.5, "dmax": 0.5, "warmup_steps": 0, "rmax_ramp_end": 0, "dmax_ramp_end": 0}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "batch_renorm": ("batch_renorm", {**CLIPPED, "momentum": 0.3}),
    "batch_renorm_cma_no_affine": ("batch_renorm", {**CLIPPED, "momentum": None, "affine": False}),
    "ghost_size_2": ("ghost_batch_norm", {"ghost_batch_size": 2}),
    "ghost_count_3_cma": (
        "ghost_batch_norm",
        {"ghost_batch_size": 3, "split": "count", "momentum": None},
    ),
    "ghost_untracked": ("ghost_batch_norm", {"ghost_batch_size": 3, "track_running_stats": False}),
    "evo_norm_b0": ("evo_norm_b0", {}),
    "evo_norm_b0_cma": ("evo_norm_b0", {"momentum": None}),
    "mean_only": ("mean_only_batch_norm", {}),
    "mean_only_affine": ("mean_only_batch_norm", {"affine": True, "momentum": 0.5}),
    "streaming": ("streaming_norm", {"window": 2, "momentum": 0.3}),
}
NAMES = list(CASES)
SPLITS = [(world, sizes) for world, group in SIZES.items() for sizes in group]


@pytest.fixture(scope="module")
def synced() -> Any:
    """``synced(world)``: every rank's results, ``[rank][split][case]``, spawned once."""
    cache: dict[int, list[Any]] = {}

    def results(world: int) -> list[Any]:
        if world not in cache:
            cache[world] = run_ranks(world, synced_cases, list(CASES.values()), SIZES[world], STEPS)
        return cache[world]

    return results


def _ranks(synced: Any, world: int, sizes: list[int], name: str) -> list[dict[str, Any]]:
    split = SIZES[world].index(sizes)
    return [rank[split][NAMES.index(name)] for rank in synced(world)]


def _reference(name: str, sizes: list[int]) -> dict[str, Any]:
    spec, kwargs = CASES[name]
    if spec == "ghost_batch_norm":
        return ghost_reference(kwargs, sizes, STEPS)
    return reference(spec, kwargs, sizes, STEPS)


@pytest.mark.parametrize(("world", "sizes"), SPLITS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", NAMES)
def test_synced_equals_one_process(synced: Any, name: str, world: int, sizes: list[int]) -> None:
    results = _ranks(synced, world, sizes, name)
    compare(results, _reference(name, sizes))
    for r in results:  # eval ran without a collective and is the same function everywhere
        torch.testing.assert_close(r["eval"], results[0]["eval"], rtol=0, atol=0)


@pytest.mark.parametrize(("world", "sizes"), [(2, [4, 4]), (3, [4, 0, 2])], ids=str)
def test_synced_ghost_batch_norm_equals_the_layer_where_cuts_align(
    synced: Any, world: int, sizes: list[int]
) -> None:
    # ghost size 2 and even rank batches: the ranks' ghost batches are the single-process
    # layer's own, so normlab's GhostBatchNorm on the whole batch is the reference as well
    results = _ranks(synced, world, sizes, "ghost_size_2")
    compare(results, reference(*CASES["ghost_size_2"], sizes, STEPS))


def test_ghost_reference_tells_per_rank_from_global_ghost_batches() -> None:
    # on (3, 5) the ranks cut 2 | 1 | 2 | 2 | 1, the layer on all 8 samples 2 | 2 | 2 | 2: the
    # per-rank reference must not accept the global cut (else the tests above prove nothing)
    spec, kwargs = CASES["ghost_size_2"]
    per_rank = ghost_reference(kwargs, [3, 5], STEPS)
    with pytest.raises(AssertionError):
        compare([reference(spec, kwargs, [3, 5], STEPS)], per_rank)
    compare([reference(spec, kwargs, [4, 4], STEPS)], ghost_reference(kwargs, [4, 4], STEPS))


@pytest.mark.parametrize("name", ["batch_renorm", "batch_renorm_cma_no_affine"])
def test_batch_renorm_cases_clip(name: str) -> None:
    # with limits too wide to bind, the run differs: r and d are clipped in the cases above
    spec, kwargs = CASES[name]
    clipped = reference(spec, kwargs, [1, 7, 3], STEPS)
    free = reference(spec, {**kwargs, "rmax": 1e6, "dmax": 1e6}, [1, 7, 3], STEPS)
    for step in range(STEPS):
        assert not torch.allclose(clipped["y"][step], free["y"][step], rtol=0, atol=1e-3)


def test_synced_ghost_batch_norm_needs_sync_reducer() -> None:
    layer = normlab.GhostBatchNorm(3, ghost_batch_size=2)
    layer.moments_reducer = lambda moments: moments  # merges, but cannot gather
    with pytest.raises(normlab.NormlabError, match=r"moments_reducer=.*normlab\.sync\(model\)"):
        layer(torch.randn(4, 3, 2))
