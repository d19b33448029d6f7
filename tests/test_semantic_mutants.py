"""The semantic mutants of issue 17 (tests/semantic_mutants/gaps.py) stay applicable.

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
