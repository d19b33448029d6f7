"""The semantic mutants of issue 17 (tests/semantic_mutants/gaps.py and the reviewer's
independent set, review.py) stay applicable.

Running them (each patch against its tests) is `make mutate`'s job (scripts/semantic_mutants.py);
here only what is cheap: every patch still finds its text exactly once in the source, so an edit
that moves the code fails this test instead of silently disabling the mutant, and the runner
refuses a patch whose text is gone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location(
        "semantic_mutants_runner", ROOT / "scripts" / "semantic_mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


@pytest.mark.parametrize("patch", RUNNER.PATCHES, ids=lambda p: f"gap{p.gap}")
def test_patch_applies_to_the_current_source(patch) -> None:
    RUNNER.target(patch, ROOT)  # raises PatchRotted unless the text occurs exactly once
    for test in patch.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test


def test_a_patch_whose_text_is_gone_fails_loudly(tmp_path: Path) -> None:
    patch = RUNNER.PATCHES[0]
    (tmp_path / patch.path).parent.mkdir(parents=True)
    (tmp_path / patch.path).write_text("# the code moved elsewhere\n")
    with pytest.raises(RUNNER.PatchRotted, match=r"gap 1: the text to replace occurs 0 times"):
        RUNNER.apply(patch, tmp_path)
    with pytest.raises(RUNNER.PatchRotted, match="does not exist"):
        RUNNER.apply(patch, tmp_path / "elsewhere")


def test_patch_ids_are_unique_across_the_sets_and_sets_are_selectable() -> None:
    ids = [p.gap for p in RUNNER.PATCHES]
    assert len(ids) == len(set(ids))  # the runner names each broken copy by its id
    assert RUNNER.SETS["gaps"] + RUNNER.SETS["review"] == RUNNER.PATCHES
    assert len(RUNNER.SETS["review"]) >= 40
    assert RUNNER.score(3, 4) == "3 of 4 caught (75.0 %)"


def test_a_failed_node_is_attributed_to_the_patches_whose_tests_select_it() -> None:
    tests = ("tests/test_state.py::test_reset_running_stats", "tests/test_errors.py")
    assert RUNNER.covers(tests, "tests/test_state.py::test_reset_running_stats[batch_norm]")
    assert RUNNER.covers(tests, "tests/test_errors.py::test_eps_must_be_positive_and_finite[x]")
    assert not RUNNER.covers(tests, "tests/test_state.py::test_reset_running_stats_twice")
    assert not RUNNER.covers(tests, "tests/test_state.py::test_empty_batch[batch_norm]")
