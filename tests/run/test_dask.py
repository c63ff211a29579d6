"""Batches on a Dask cluster: same results as a serial run, per-input failures, CLI errors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from zeropath.cli.main import cli
from zeropath.run.batch import segment_many
from zeropath.run.segment import SegmentOptions
from zeropath.testing import ThresholdSegmenter, render_nuclei

distributed = pytest.importorskip("distributed")

#: Small cores (128 px at 0.25 µm/px) so each image is cut into several tiles.
OPTIONS = SegmentOptions(tile_um=32.0)


@pytest.fixture(scope="module")
def scheduler():
    """Address of an in-process one-worker Dask cluster, closed after the module."""
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",  # loopback, any free port
        silence_logs=logging.ERROR,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture
def inputs(tmp_path):
    """Two synthetic H&E TIFFs at 0.25 µm/px and a broken PNG between them."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for i, shape in enumerate([(300, 420), (260, 260)]):
        rgb, _, _ = render_nuclei(shape, n=25, radius=(5, 9), seed=10 + i)
        path = folder / f"img{i}.tif"
        tifffile.imwrite(
            path,
            rgb,
            photometric="rgb",
            resolution=(1e4 / 0.25, 1e4 / 0.25),
            resolutionunit="CENTIMETER",
        )
        files.append(path)
    bad = folder / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return [files[0], bad, files[1]]


def test_dask_batch_matches_serial_and_reports_the_bad_input(tmp_path, inputs, scheduler):
    seg = ThresholdSegmenter()
    serial = segment_many(inputs, tmp_path / "serial", seg, options=OPTIONS)
    dask = segment_many(inputs, tmp_path / "dask", seg, options=OPTIONS, scheduler=scheduler)

    for report in (serial, dask):
        assert [r.stem for r in report.results] == ["img0", "img1"]
        assert [f.input for f in report.failures] == [str(inputs[1])]
        assert "bad.png" in report.failures[0].message
    assert all(r.n_tiles > 1 for r in dask.results)
    assert [r.n_objects for r in dask.results] == [r.n_objects for r in serial.results]
    assert all(r.n_objects > 10 for r in dask.results)
    for stem in ("img0", "img1"):
        a = tifffile.imread(tmp_path / "serial" / f"{stem}.labels.tif")
        b = tifffile.imread(tmp_path / "dask" / f"{stem}.labels.tif")
        np.testing.assert_array_equal(a, b)
        csv_a = (tmp_path / "serial" / f"{stem}.csv").read_text()
        assert csv_a == (tmp_path / "dask" / f"{stem}.csv").read_text()
    # nothing partial for the failed input, no staging folders left behind
    names = sorted(p.name for p in (tmp_path / "dask").iterdir())
    assert not [n for n in names if n.startswith(("bad", "."))]


def test_cli_runs_on_a_scheduler(tmp_path, inputs, scheduler):
    out = tmp_path / "out"
    good = [str(inputs[0]), str(inputs[2])]
    result = CliRunner().invoke(
        cli, ["nuclei", "segment", *good, "--out", str(out), "--scheduler", scheduler]
    )
    assert result.exit_code == 0, result.output
    for stem in ("img0", "img1"):
        for suffix in (".labels.tif", ".geojson", ".csv", ".overlay.png"):
            assert (out / f"{stem}{suffix}").is_file()
    record = json.loads((out / "run.json").read_text())
    assert record["parameters"]["scheduler"] == scheduler
    assert [r["stem"] for r in record["inputs"]] == ["img0", "img1"]
    assert record["failures"] == []
    # one stderr line per input as it finishes (in whatever order the cluster finishes them)
    done = [ln.split()[2].rstrip(":") for ln in result.stderr.splitlines() if ln.startswith("done")]
    assert sorted(done) == ["img0", "img1"]
    rerun = CliRunner().invoke(
        cli, ["nuclei", "segment", *good, "--out", str(out), "--scheduler", scheduler]
    )
    assert rerun.exit_code == 0 and rerun.stderr.count("skipped ") == 2, rerun.stderr


def test_unreachable_scheduler_is_one_error_line(tmp_path, inputs):
    out = tmp_path / "out"
    nowhere = "tcp://127.0.0.1:1"  # loopback port 1: nothing listens, connection refused
    args = ["nuclei", "segment", str(inputs[0]), "--out", str(out), "--scheduler", nowhere]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "127.0.0.1:1" in lines[0]
    assert "Traceback" not in result.output + result.stderr
    assert not list(out.glob("img0.*"))
