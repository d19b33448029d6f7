"""The ``normlab`` command, through its installed entry point and through ``main(argv)``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import normlab
from normlab.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m normlab ARGS`` in a fresh interpreter (the console script's code path)."""
    return subprocess.run(
        [sys.executable, "-m", "normlab", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_list_shows_every_available_name() -> None:
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    layers, _, weights = proc.stdout.partition("\n\n")
    # a row starts in the first column; a wrapped cell continues on indented lines
    names = [line.split()[0] for line in layers.splitlines()[2:] if not line.startswith(" ")]
    # a fresh interpreter knows normlab's own methods (this one also has the tests' toys)
    assert names == sorted(e.name for e in normlab.norms.entries())
    assert set(names) <= set(normlab.available())
    weight_names = [line.split()[0] for line in weights.splitlines()[2:] if line[:1].strip()]
    assert weight_names == normlab.available("weight")
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100


def test_list_fits_100_columns_without_cutting_words() -> None:
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    too_wide = [(len(line), line) for line in lines if len(line) > 100]
    assert not too_wide, too_wide
    for entry in normlab.norms.entries():  # every alias and paper id whole, on one line
        for word in (*entry.aliases, entry.paper.split()[-1]):
            assert any(word in line for line in lines), word


def test_options_are_never_abbreviated() -> None:
    proc = run_cli("sweep", "--norm", "bn", "--steps", "1")
    assert proc.returncode == 2
    assert "unrecognized arguments: --norm bn" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_no_traceback_when_the_reader_closes_the_pipe() -> None:
    """``normlab list | head -1``: the pipe closes early, and the command stops quietly."""
    shell = subprocess.run(
        f"{sys.executable} -m normlab list | head -1", shell=True,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert shell.stdout.startswith("name")
    assert shell.stderr == ""
    # a reader gone before the first byte is written
    with subprocess.Popen(
        [sys.executable, "-m", "normlab", "describe", "gn"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141
    assert err == ""


def test_console_script() -> None:
    """The ``normlab`` script that ``pip install`` put next to this interpreter."""
    script = Path(sys.executable).parent / "normlab"
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not installed with pip)")
    proc = subprocess.run(
        [str(script), "describe", "gn"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("group_norm")


def test_list_shows_axes_and_papers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "over (C/32, *S): one statistic per (sample, group of channels)" in out
    assert "over (N, *S): one statistic per channel" in out
    assert "arXiv:1803.08494" in out


def test_describe_alias_through_entry_point() -> None:
    proc = run_cli("describe", "gn")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("group_norm")
    assert "Wu & He 2018" in out
    assert "  y = γ · (x − μ) / √(σ² + ε) + β\n" in out  # the equation as text, not LaTeX
    assert "$" not in out and "\\" not in out
    assert "num_groups=None" in out
    assert "eps=1e-05" in out


def test_describe_fits_100_columns_for_every_method(capsys: pytest.CaptureFixture) -> None:
    too_wide = []
    for name in normlab.available("all"):
        assert main(["describe", name]) == 0
        lines = capsys.readouterr().out.splitlines()
        too_wide += [(name, line) for line in lines if len(line) > 100]
    assert not too_wide, too_wide


def test_describe_explains_what_the_defaults_mean() -> None:
    proc = run_cli("describe", "gn")
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.partition("arguments (defaults):\n")[2]
    explained: dict[str, str] = {}
    for line in args.splitlines():
        if line[2:3].strip():  # an argument's first line; deeper-indented lines continue it
            item = line.split()[0]
            explained[item] = line
        elif line.strip() and explained:
            explained[item] += " " + line.strip()
    assert "32 (the paper's default) when neither" in explained["num_groups=None"]
    assert "channels per group instead of G" in explained["group_size=None"]
    assert "None: torch's default dtype" in explained["dtype=None"]
    for item in ("eps=1e-05", "affine=True", "channel_dim=1", "num_features"):
        assert len(explained[item].split()) > 3, item  # the name followed by what it means
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100


def test_every_method_is_described_without_latex(capsys: pytest.CaptureFixture[str]) -> None:
    for name in [*normlab.available(), *normlab.available("weight")]:
        assert main(["describe", name]) == 0
        out = capsys.readouterr().out
        section = out.partition("equation:\n")[2].partition("\narguments")[0]
        display = section.split("\n\n")[0]  # the equation, before the prose about it
        assert " = " in display or " ← " in display, (name, display)
        assert "$" not in section and "\\" not in section, (name, section)
        assert "{" not in display.replace("{IN, LN, BN}", ""), (name, display)


@pytest.mark.parametrize("name", ["bn", "layer_norm", "IN", "rms", "group-norm"])
def test_describe_accepts_names_and_aliases(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", name]) == 0
    out = capsys.readouterr().out
    entry = normlab.registry.lookup(name)
    assert out.startswith(entry.name)
    assert entry.paper in out


def test_unknown_name_exits_2_with_suggestion() -> None:
    proc = run_cli("describe", "grop_norm")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Did you mean 'group_norm'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_name_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "batchnrom"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err
    assert "'batchnorm'" in err


def test_usage_errors_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("normlab: error: ")
        assert lines[0].endswith("See 'normlab --help'.")


@pytest.mark.parametrize("name", ["spectral_norm", "wn", "WS", "svb", "selu"])
def test_describe_weight_side_methods(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", name]) == 0
    out = capsys.readouterr().out
    entry = normlab.registry.lookup_weight(name)
    assert out.startswith(f"{entry.name}  (aliases: ")
    assert "weight-side" in out.splitlines()[0]
    assert entry.paper in out
    if entry.apply is not None:
        assert f"normlab.parametrize(model, {entry.name!r})" in out
        equation = out.partition("equation:\n")[2]  # the equation of the parametrization
        assert " = " in equation.splitlines()[0] and "$" not in equation


def test_describe_typo_suggests_weight_side_names_through_entry_point() -> None:
    proc = run_cli("describe", "spectrl_norm")
    assert proc.returncode == 2
    assert "Unknown method 'spectrl_norm'" in proc.stderr
    assert "Did you mean 'spectral_norm'" in proc.stderr
    assert proc.stdout == ""
