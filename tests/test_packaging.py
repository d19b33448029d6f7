"""The built wheel installs into a clean virtual environment beside torch and works there.

`python -m build --wheel` (no isolation: the build backend is the test venv's setuptools, so
nothing is downloaded), then a fresh venv gets the same torch release as this one and the
wheel, and a smoke script imports normlab, runs a layer, converts a model and calls the CLI's
entry point. The venv must keep that torch: the wheel's requirement may not pull another.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SMOKE = """
import torch, normlab
x = torch.randn(4, 8, 5, 5)
y = normlab.BatchNorm(8)(x)
assert y.shape == x.shape and abs(float(y.mean())) < 1e-5
model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3), torch.nn.BatchNorm2d(8))
converted = normlab.convert(model, "gn:4")
assert type(converted[1]).__name__ == "GroupNorm", converted
print("torch", torch.__version__)
"""


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the dev extra installs `build`")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, ROOT)
    (path,) = out.glob("normlab-*.whl")
    return path


def test_wheel_holds_the_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "normlab/__init__.py" in names and "normlab/py.typed" in names
    assert "normlab/norms/batch_norm.py" in names
    assert "normlab/bench/run.py" in names  # `normlab bench` works from the wheel
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "normlab = normlab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_installs_into_a_clean_venv_beside_torch(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, cli = env_dir / "bin" / "python", env_dir / "bin" / "normlab"
    torch_release = torch.__version__.split("+")[0]
    run(python, "-m", "pip", "install", "-q", f"torch=={torch_release}", wheel)
    out = run(python, "-c", SMOKE, cwd=tmp_path)  # cwd: not the checkout's src/
    assert out.split()[-1].split("+")[0] == torch_release
    listing = run(cli, "list")
    assert "batch_norm" in listing and "group_norm" in listing
    location = run(python, "-c", "import normlab; print(normlab.__file__)", cwd=tmp_path)
    assert str(env_dir) in location
