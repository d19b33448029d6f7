"""The toy Sample RMS Norm's unique tests; the contract battery runs on it from its catalogue
case. Its being registered from the test directory also checks that every name-driven part of
normlab (registry, CLI, surgery, lab) takes its names from the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import normlab
from catalogue import close, make_input
from normlab import registry
from normlab.cli import main
from toy_norms.sample_rms_norm import SampleRMSNorm


def test_registered_from_its_entries_block() -> None:
    entry = registry.lookup("srms")
    assert entry.name == "sample_rms_norm" and entry.cls is SampleRMSNorm
    assert "sample_rms_norm" in normlab.available()
    assert type(normlab.create("srms", 6)) is SampleRMSNorm
    # normlab's own namespace lists only normlab's methods
    assert not hasattr(normlab, "SampleRMSNorm")


def test_cli_list_shows_the_registered_toy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    layers = capsys.readouterr().out.partition("\n\n")[0]  # the weight-side table follows
    rows = [r for r in layers.splitlines()[2:] if not r.startswith(" ")]  # not wrapped cells
    assert [row.split()[0] for row in rows] == normlab.available()
    lines = layers.splitlines()
    (at,) = [i for i, r in enumerate(lines) if r.startswith("sample_rms_norm ")]
    assert "srms" in lines[at]
    # what it normalizes over (from the class's axes): indented on the line under its row
    assert lines[at + 1] == "    over (C, *S): one statistic per sample"
    assert "LayerNorm without centering" in " ".join(layers.split())  # a wrapped paper cell


def test_invariant_to_scaling_each_sample() -> None:
    """Uncentered: a positive scale per sample cancels (up to ε), a shift does not."""
    m = SampleRMSNorm(6, eps=1e-30, dtype=torch.float64)
    x = make_input((3, 6, 4), torch.float64)
    scale = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64).view(3, 1, 1)
    close(m(x * scale), m(x), 1e-12)
    assert not torch.allclose(m(x + 1.0), m(x), atol=1e-3)


def test_the_toy_lives_in_three_files() -> None:
    """A new method is its file, its catalogue case and its unique tests: nothing else in the
    repository names the toy (no per-name table in the tests, no list in the package)."""
    root = Path(__file__).parents[1]
    mentions = {
        str(path.relative_to(root))
        for folder in ("src", "tests", "benchmarks", "docs")
        for path in (root / folder).rglob("*")
        if path.suffix in (".py", ".md", ".toml", ".cfg", ".txt") and path.is_file()
        and not any(part.endswith(".egg-info") for part in path.parts)  # a build's file list
        and re.search(r"sample_rms|SampleRMS|srms", path.read_text(encoding="utf-8"))
    }
    assert mentions == {
        "tests/toy_norms/sample_rms_norm.py",
        "tests/cases_sample_rms_norm.py",
        "tests/test_sample_rms_norm.py",
    }
