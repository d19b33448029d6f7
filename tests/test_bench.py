"""``normlab bench``: end to end through its entry point at a tiny size, its argument errors, and
its files written whole or not at all. No test asserts a timing value."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab.bench import allocator, report
from normlab.bench import run as bench_run
from normlab.cli import main
from normlab.cli_bench import parse_shape

# a native kernel, a layer with a fast path, one needing a reference batch, one that needs
# fewer groups than its default for C = 8, a parametrization, a method published as layers
# (CosineConv2d, CosineLinear: none for Conv1d), a helper that is no layer
LAYERS = ("bn", "rms", "vbn", "group_norm", "wn", "cosine_norm", "selu")
CANONICAL = {"bn": "batch_norm", "rms": "rms_norm", "vbn": "virtual_batch_norm",
             "group_norm": "group_norm", "wn": "weight_norm", "cosine_norm": "cosine_norm",
             "selu": "selu"}
TINY = ("--rounds", "2", "--warmup", "0")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                 dict, str]:
    """One tiny run through ``python -m normlab bench``: (process, JSON document, markdown)."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "normlab", "bench", "--layers", ",".join(LAYERS),
         "--shapes", "2x8x4x4", "4,8,16", "--channels-last", "--train", *TINY,
         "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    return proc, doc, (out / "bench.md").read_text()


def test_every_requested_layer_runs_or_is_skipped_with_a_reason(tiny_run) -> None:
    _, doc, _ = tiny_run
    assert doc["schema"] == report.SCHEMA
    settings = {(r["label"], r["layout"], r["mode"]) for r in doc["results"]}
    # two shapes, each channels-first and channels-last ((N, L, C) for the rank-3 one)
    assert settings == {("2x8x4x4", "channels_first", "train"),
                        ("2x8x4x4", "channels_last", "train"),
                        ("4x8x16", "channels_first", "train"),
                        ("4x16x8 (N, L, C)", "channels_last", "train")}
    for setting in settings:
        rows = [r for r in doc["results"] if (r["label"], r["layout"], r["mode"]) == setting]
        assert [r["requested"] for r in rows] == list(LAYERS)
        assert [r["layer"] for r in rows] == [CANONICAL[k] for k in LAYERS]
        for r in rows:
            if r["status"] == "skipped":
                assert r["reason"].strip(), r
            else:
                assert r["status"] == "ok", r
    status = {r["layer"]: r["status"] for r in doc["results"]}
    assert status["selu"] == "skipped"  # an initializer: nothing to time per forward
    cosine = {(r["label"], r["layout"]): r for r in doc["results"] if r["layer"] == "cosine_norm"}
    first = cosine["2x8x4x4", "channels_first"]
    assert first["timed"] == "normlab.CosineConv2d(8, 8, 3, padding=1)"
    assert first["baselines"]["torch"] == \
        "nn.Conv2d(8, 8, 3, padding=1), plain"
    assert cosine["4x16x8 (N, L, C)", "channels_last"]["status"] == "ok"  # CosineLinear
    assert "no Conv1d form" in cosine["4x8x16", "channels_first"]["reason"]
    for name in ("batch_norm", "rms_norm", "virtual_batch_norm", "group_norm", "weight_norm"):
        assert status[name] == "ok", name
    # GroupNorm's 32 groups do not divide C = 8: the method's fitting spec runs instead
    gn = next(r for r in doc["results"] if r["layer"] == "group_norm")
    assert gn["spec"] == "gn:4"


def test_the_json_keeps_every_raw_number_and_the_machine(tiny_run) -> None:
    _, doc, _ = tiny_run
    m = doc["machine"]
    for key in ("torch", "threads", "cpu", "clock", "load_average_before", "load_average_after"):
        assert key in m, key
    assert m["allocator"] == "default"
    assert m["torch"] == torch.__version__
    assert doc["config"]["rounds"] == 2
    for r in (r for r in doc["results"] if r["status"] == "ok"):
        assert "layer/forward" in r["times_s"] and "copy" in r["times_s"]
        for key, times in r["times_s"].items():
            assert len(times) == 2, key  # one per round
            assert all(math.isfinite(t) and t > 0 for t in times), key
            assert r["calls_per_sample"][key] >= 1
        assert set(r["ratios"]) == set(bench_run.PHASES)
        for phase, ratios in r["ratios"].items():
            assert "group_norm" in ratios, (r["layer"], phase)
            for role, value in ratios.items():
                assert math.isfinite(value) and value > 0, (r["layer"], phase, role)
        # a baseline is either compared or said why not
        for role in ("torch", "composition"):
            assert (role in r["baselines"]) != (role in r["not_compared"]), (r["layer"], role)
        assert r["saved_bytes"]["layer"] > 0
    rows = {(r["layer"], r["layout"]): r for r in doc["results"] if r["label"] == "2x8x4x4"}
    assert rows["batch_norm", "channels_first"]["baselines"]["torch"] == "nn.BatchNorm2d(8)"
    assert "composition" in rows["rms_norm", "channels_first"]["baselines"]  # has a fast path
    assert rows["weight_norm", "channels_first"]["baselines"]["torch"].startswith(
        "torch.nn.utils.parametrizations.weight_norm")


def test_the_markdown_table_parses_and_matches_stdout(tiny_run) -> None:
    proc, doc, md = tiny_run
    assert proc.stdout == md
    lines = [line for line in md.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert head[:6] == ["layer", "shape", "layout", "mode", "fwd µs", "fwd+bwd µs"]
    assert set(lines[1].strip("|").split("|")) <= {"---", "---:"}
    body = [[c.strip() for c in line[1:-1].split(" | ")] for line in lines[2:]]
    assert len(body) == len(doc["results"])
    for cells, r in zip(body, doc["results"], strict=True):
        assert len(cells) == len(head), cells
        assert cells[0] == r["layer"]
        if r["status"] == "ok":
            assert float(cells[4]) > 0 and float(cells[5]) > 0
            fwd, _, both = cells[head.index("÷ nn.GroupNorm")].partition(" / ")
            assert float(fwd) > 0 and float(both) > 0
        else:
            assert cells[-1].startswith("skipped: ")


@pytest.mark.parametrize(("args", "expected"), [
    (("--layers", "grup_norm"), "--layers: Unknown layer 'grup_norm'. Did you mean 'group_norm'"),
    (("--layers", "gn:abc"), "--layers: Invalid norm spec 'gn:abc'"),
    (("--shapes", "8,64,a"), "expected the form N,C,H,W or NxCxHxW"),
    (("--shapes", "8,64x8"), "expected the form N,C,H,W or NxCxHxW"),
    (("--shapes", "8,0,4"), "every size must be at least 1"),
    (("--rounds", "0"), "must be a positive integer"),
    (("--dtype", "float8"), "invalid choice: 'float8'"),
    (("--json", "/no/such/dir/b.json"), "--json '/no/such/dir/b.json': the directory"),
])
def test_bad_arguments_exit_2_with_the_fix(args, expected, capsys, tmp_path) -> None:
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_absent_is_a_clear_error_through_the_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "normlab", "bench", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--device 'cuda': CUDA is not available here" in proc.stderr
    assert "Run with --device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_allocator_keep_is_recorded_in_the_json_and_the_header(tmp_path) -> None:
    out = tmp_path / "keep.json"
    proc = subprocess.run(
        [sys.executable, "-m", "normlab", "bench", "--layers", "bn", "--shapes", "2x4x4x4",
         "--train", *TINY, "--allocator", "keep", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["machine"]["allocator"] == "keep"
    assert "clock: process_time, allocator: keep" in proc.stdout


def test_allocator_keep_without_glibc_is_a_clear_error(monkeypatch, capsys) -> None:
    def no_library(name: object) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_library)
    assert main(["bench", "--layers", "bn", "--allocator", "keep"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "normlab: error: --allocator keep: needs glibc's mallopt (Linux); this C library has none. "
        "Run with --allocator default, or preload a caching allocator (jemalloc, tcmalloc)."
    )


def test_an_in_process_run_gives_the_thread_count_back(tmp_path) -> None:
    """bench times with --threads; main() called in a process that goes on leaves that
    process's own thread count as it found it."""
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    torch.set_num_threads(other)
    try:
        assert main(["bench", "--layers", "bn", "--shapes", "2x4x4x4", "--train", *TINY,
                     "--threads", "1" if other != 1 else "2",
                     "--json", str(tmp_path / "b.json")]) == 0
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)


def test_parse_shape_reads_both_forms() -> None:
    assert parse_shape("8x64x8x8") == parse_shape("8,64,8,8") == (8, 64, 8, 8)
    assert parse_shape(" 2,16 ") == (2, 16)


def test_interrupted_run_prints_what_finished_and_writes_no_file(
        monkeypatch, capsys, tmp_path) -> None:
    """Ctrl-C during the second result: the first is printed, and neither file exists."""
    real = bench_run.run_one
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_run, "run_one", interrupted)
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["bench", "--layers", "ln,in", "--shapes", "2x4x4", "--train", *TINY,
                 "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 130
    assert calls == ["ln", "in"]
    assert os.listdir(tmp_path) == []  # no file, no temporary file
    captured = capsys.readouterr()
    assert "| layer_norm | 2x4x4 |" in captured.out
    assert "instance_norm" not in captured.out
    assert "interrupted after 1 of 2 results" in captured.err


def test_write_atomic_keeps_the_old_file_when_interrupted(monkeypatch, tmp_path) -> None:
    target = tmp_path / "bench.json"
    target.write_text("old")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
    monkeypatch.undo()
    report.write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["bench.json"]
