"""Batches that survive faults: signals, leftovers of killed runs, failed publishing, resume.

Project issue 12: SIGTERM/SIGKILL leave no staging behind (or the next run sweeps it), an
input's outputs appear all or nothing, finished inputs are skipped on a rerun, every input
keeps its own provenance record, and one missing INPUT does not stop the batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.run import staging as staging_mod
from zeropath.run.batch import segment_many
from zeropath.run.staging import (
    OWNER_FILE,
    host_id,
    make_staging,
    publish,
    sweep_stale_staging,
)
from zeropath.testing import ThresholdSegmenter, render_nuclei

SUFFIXES = (".labels.tif", ".geojson", ".csv", ".overlay.png", ".run.json")


def _segment(*args: str) -> object:
    return CliRunner().invoke(cli, ["nuclei", "segment", *args, "--model", "classical"])


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


@pytest.fixture
def two_images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, name in enumerate(("a", "b")):
        rgb, _, _ = render_nuclei((160, 192), n=10, seed=20 + i)
        Image.fromarray(rgb).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


# --------------------------------------------------------------------------- stale staging


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_sweep_removes_dead_runs_staging_and_keeps_live_ones(tmp_path):
    hid = host_id()
    live = make_staging(tmp_path, "live")
    (live / "canvas.npy").write_bytes(b"live")
    dead_pid = _dead_pid()
    dead = tmp_path / f".dead.partial-0123abcd-p{dead_pid}-h{hid}"
    dead.mkdir()
    (dead / "canvas.npy").write_bytes(b"x" * 100)
    dead_tissue = tmp_path / f".t.tissue-partial-0123abcd-p{dead_pid}-h{hid}"
    dead_tissue.mkdir()
    elsewhere = (
        tmp_path / f".far.partial-0123abcd-p{dead_pid}-h{'0' * 8 if hid != '0' * 8 else '1' * 8}"
    )
    elsewhere.mkdir()
    # this process is alive, but the folder was made by an earlier process with its PID
    reused = tmp_path / f".reused.partial-0123abcd-p{os.getpid()}-h{hid}"
    reused.mkdir()
    (reused / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start_time": "-1"}))
    unknown = tmp_path / ".old.partial-0123abcd"  # no owner recorded: left alone
    unknown.mkdir()

    removed = sweep_stale_staging(tmp_path)

    assert sorted(p.name for p in removed) == sorted([dead.name, dead_tissue.name, reused.name])
    assert live.is_dir() and (live / "canvas.npy").read_bytes() == b"live"
    assert elsewhere.is_dir() and unknown.is_dir()
    owner = json.loads((live / OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["host"]


def test_a_run_sweeps_what_a_killed_run_left(tmp_path, two_images):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".a.partial-0123abcd-p{_dead_pid()}-h{host_id()}"
    dead.mkdir()
    live = make_staging(out, "b")  # a concurrent run (this process) is still writing
    r = _segment(str(two_images[0]), "--out", str(out), "--mpp", "0.25")
    assert r.exit_code == 0, r.output + r.stderr
    assert not dead.exists() and live.is_dir()


# --------------------------------------------------------------------------- signals


def _big_image(path: Path) -> Path:
    rgb, _, _ = render_nuclei((256, 256), n=20, seed=3)
    tifffile.imwrite(path, np.tile(rgb, (4, 4, 1)), photometric="rgb")
    return path


def _args(img: Path, out: Path) -> list[str]:
    return [str(img), "--out", str(out), "--mpp", "0.5", "--tile-um", "64"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 1024×1024 image (a couple of seconds of classical segmentation) and a clean run."""
    root = tmp_path_factory.mktemp("big")
    img = _big_image(root / "big.tif")
    clean = root / "clean"
    r = _segment(*_args(img, clean))
    assert r.exit_code == 0, r.output + r.stderr
    return img, clean


def _start_and_wait_for_staging(img: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "zeropath", "nuclei", "segment", *_args(img, out)]
    proc = subprocess.Popen(
        [*cmd, "--model", "classical"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.is_dir() and list(out.glob(".big.partial-*")):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"no staging folder appeared (rc {proc.returncode}): {err}")


def _assert_same_outputs(a: Path, b: Path) -> None:
    np.testing.assert_array_equal(
        tifffile.imread(a / "big.labels.tif"), tifffile.imread(b / "big.labels.tif")
    )
    assert (a / "big.csv").read_text() == (b / "big.csv").read_text()
    assert (a / "big.geojson").read_text() == (b / "big.geojson").read_text()


def test_sigterm_removes_staging_and_a_rerun_matches_a_clean_run(tmp_path, big):
    img, clean = big
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(img, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "terminated" and "Traceback" not in stderr
    assert _hidden(out) == [] and not list(out.glob("big.*"))

    r = _segment(*_args(img, out))
    assert r.exit_code == 0, r.output + r.stderr
    _assert_same_outputs(clean, out)
    assert _hidden(out) == []


def test_sigkill_leftovers_are_swept_by_the_rerun(tmp_path, big):
    img, clean = big
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(img, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert len(_hidden(out)) == 1  # what SIGKILL leaves

    r = _segment(*_args(img, out))
    assert r.exit_code == 0, r.output + r.stderr
    assert _hidden(out) == []
    _assert_same_outputs(clean, out)


def test_sigterm_stops_worker_processes_without_leftovers(tmp_path, big):
    img, _ = big
    src = tmp_path / "in"
    src.mkdir()
    for name in ("big", "big2"):
        os.link(img, src / f"{name}.tif")  # not a symlink: inputs are deduplicated
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zeropath", "nuclei", "segment", str(src), "--out", str(out)]
    cmd += ["--mpp", "0.5", "--tile-um", "64", "--model", "classical", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(list(out.glob(".big*.partial-*"))) == 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert _hidden(out) == []


# --------------------------------------------------------------------------- publishing


def test_publish_is_all_or_nothing_and_restores_replaced_files(tmp_path, monkeypatch):
    out = tmp_path
    names = ["s.a", "s.b", "s.c"]
    for n in names[:2]:
        (out / n).write_text(f"old {n}")
    stage = make_staging(out, "s")
    for n in names:
        (stage / n).write_text(f"new {n}")
    real = os.replace

    def flaky(src, dst):
        if Path(src) == stage / "s.c":
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(staging_mod.os, "replace", flaky)
    with pytest.raises(OSError):
        publish(stage, out, names)
    monkeypatch.setattr(staging_mod.os, "replace", real)
    assert (out / "s.a").read_text() == "old s.a" and (out / "s.b").read_text() == "old s.b"
    assert not (out / "s.c").exists()
    assert [p.name for p in publish(stage, out, names)] == names
    assert [(out / n).read_text() for n in names] == [f"new {n}" for n in names]


def test_a_failed_input_leaves_none_of_its_outputs(tmp_path, two_images):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.geojson").mkdir()  # in the way: publishing a.geojson fails
    (out / "a.csv").write_text("earlier run")
    r = _segment(*map(str, two_images), "--out", str(out), "--mpp", "0.25")
    assert r.exit_code == 2
    (line,) = _errors(r.stderr)
    assert "a.geojson" in line
    assert (out / "a.csv").read_text() == "earlier run"  # restored, not half-replaced
    assert sorted(p.name for p in out.glob("a.*")) == ["a.csv", "a.geojson"]
    assert (out / "a.geojson").is_dir() and _hidden(out) == []
    assert all((out / f"b{s}").is_file() for s in SUFFIXES)


# --------------------------------------------------------------------------- resume


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def test_rerun_skips_complete_inputs_and_recomputes_on_overwrite_or_change(tmp_path, two_images):
    out = tmp_path / "out"
    args = [*map(str, two_images), "--out", str(out), "--mpp", "0.25"]
    r = _segment(*args)
    assert r.exit_code == 0, r.stderr
    assert [ln.split(":")[0] for ln in r.stderr.splitlines() if ln.startswith("done")] == [
        "done 1/2 a",
        "done 2/2 b",
    ]
    before = {s: _stat(out / f"a{s}") for s in SUFFIXES}

    r = _segment(*args)
    assert r.exit_code == 0, r.stderr
    assert "skipped 1/2 a: outputs complete" in r.stderr and "skipped 2/2 b" in r.stderr
    assert {s: _stat(out / f"a{s}") for s in SUFFIXES} == before
    run = json.loads((out / "run.json").read_text())
    assert run["summary"] == {"computed": 0, "skipped": 2, "failed": 0}
    assert [i["stem"] for i in run["inputs"]] == ["a", "b"]

    r = _segment(*args, "--overwrite")
    assert r.exit_code == 0 and "done 1/2 a" in r.stderr and "skipped" not in r.stderr
    after = _stat(out / "a.labels.tif")
    assert after != before[".labels.tif"]

    r = _segment(*args, "--tile-um", "32")  # another option: other outputs
    assert r.exit_code == 0 and "done 1/2 a" in r.stderr
    assert _stat(out / "a.labels.tif") != after

    (out / "b.csv").unlink()  # incomplete outputs are recomputed
    r = _segment(*args, "--tile-um", "32")
    assert "skipped 1/2 a" in r.stderr and "done 2/2 b" in r.stderr


class OtherWeights(ThresholdSegmenter):
    sha256 = "0" * 64

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "params": {}}


def test_a_changed_model_is_recomputed(tmp_path, two_images):
    out = tmp_path / "out"
    first = segment_many(two_images, out, ThresholdSegmenter(), skip_complete=True)
    again = segment_many(two_images, out, ThresholdSegmenter(), skip_complete=True)
    other = segment_many(two_images, out, OtherWeights(), skip_complete=True)
    assert [r.skipped for r in first.results] == [False, False]
    assert [r.skipped for r in again.results] == [True, True]
    assert [r.n_objects for r in again.results] == [r.n_objects for r in first.results]
    assert [r.skipped for r in other.results] == [False, False]
    record = json.loads((out / "a.run.json").read_text())
    assert record["model"]["sha256"] == "0" * 64


# --------------------------------------------------------------------------- provenance


def test_per_input_provenance_survives_a_second_run_into_the_same_folder(tmp_path, two_images):
    out = tmp_path / "out"
    a, b = map(str, two_images)
    assert _segment(a, "--out", str(out), "--mpp", "0.25").exit_code == 0
    rec_a = json.loads((out / "a.run.json").read_text())
    assert rec_a["stem"] == "a" and rec_a["command"] == "nuclei segment"
    assert datetime.fromisoformat(rec_a["timestamp"]).utcoffset().total_seconds() == 0
    assert set(rec_a["versions"]) >= {"zeropath", "numpy", "torch"}
    assert rec_a["versions"]["numpy"] == np.__version__
    assert rec_a["model"] == {"name": "classical", "sha256": None}
    assert rec_a["parameters"]["mpp_override"] == 0.25 and len(rec_a["sha256"]) == 64
    assert rec_a["output_sizes"]["a.csv"] == (out / "a.csv").stat().st_size

    assert _segment(b, "--out", str(out), "--mpp", "0.3").exit_code == 0
    run = json.loads((out / "run.json").read_text())
    by_stem = {i["stem"]: i for i in run["inputs"]}
    assert list(by_stem) == ["b", "a"]  # this run's inputs first, then earlier ones
    assert by_stem["a"]["timestamp"] == rec_a["timestamp"]
    assert by_stem["a"]["parameters"]["mpp_override"] == 0.25
    assert by_stem["b"]["parameters"]["mpp_override"] == 0.3
    assert run["mpp"]["a"]["value"] == 0.25 and run["mpp"]["b"]["value"] == 0.3
    assert run["parameters"]["inputs"] == [b] and run["timestamp"]
    assert json.loads((out / "a.run.json").read_text()) == rec_a


# --------------------------------------------------------------------------- bad INPUTs


def test_a_missing_input_is_one_error_line_and_the_others_run(tmp_path, two_images):
    out = tmp_path / "out"
    missing = tmp_path / "missing.tif"
    a, b = map(str, two_images)
    r = _segment(a, str(missing), b, "--out", str(out), "--mpp", "0.25")
    assert r.exit_code == 2
    (line,) = _errors(r.stderr)
    assert "missing.tif" in line and "Traceback" not in r.output + r.stderr
    assert all((out / f"{s}.labels.tif").is_file() for s in ("a", "b"))
    run = json.loads((out / "run.json").read_text())
    assert [f["input"] for f in run["failures"]] == [str(missing)]


@pytest.mark.parametrize("command", ["nuclei", "points", "tissue"])
def test_only_missing_inputs_is_one_error_line_each(tmp_path, command):
    out = tmp_path / "out"
    args = [command, "segment", str(tmp_path / "x.tif"), str(tmp_path / "y"), "--out", str(out)]
    args += {"points": ["--model", str(tmp_path)], "tissue": ["--prompts", "nope.yaml"]}.get(
        command, []
    )
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(ln.startswith("error:") for ln in lines), r.stderr
    assert "x.tif" in lines[0] and "y" in lines[1]
    assert not out.exists()


def test_out_under_a_file_is_one_error_line(tmp_path, two_images):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    r = _segment(str(two_images[0]), "--out", str(blocker / "out"))
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "file.txt" in lines[0]
    assert "Traceback" not in r.output + r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_under_a_read_only_folder_is_one_error_line(tmp_path, two_images):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        r = _segment(str(two_images[0]), "--out", str(parent / "out"))
    finally:
        parent.chmod(0o755)
    assert r.exit_code == 2 and len(_errors(r.stderr)) == 1


# --------------------------------------------------------------------------- progress lines


def test_worker_processes_report_each_input_as_it_finishes(tmp_path, two_images):
    out = tmp_path / "out"
    r = _segment(*map(str, two_images), "--out", str(out), "--mpp", "0.25", "--workers", "2")
    assert r.exit_code == 0, r.stderr
    done = sorted(ln for ln in r.stderr.splitlines() if ln.startswith("done "))
    assert len(done) == 2 and {ln.split()[2].rstrip(":") for ln in done} == {"a", "b"}
    assert {ln.split()[1] for ln in done} == {"1/2", "2/2"}
