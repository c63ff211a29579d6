"""The command line as a user meets it: help, doctor, the sample run and every bad input."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.testing import render_nuclei


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zeropath", *args], capture_output=True, text=True, timeout=300
    )


#: Per-input progress lines (INTERFACE: progress output may precede the error line).
_PROGRESS = re.compile(r"^((done|skipped) \d+/\d+ |\[\s*\d+ s\] )")


def _error_lines(stderr: str) -> list[str]:
    return [
        ln
        for ln in stderr.splitlines()
        if ln.strip() and not ln.startswith("warning:") and not _PROGRESS.match(ln)
    ]


def test_help_is_cheap_and_does_not_import_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from zeropath.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for sub in (['nuclei', '--help'], ['nuclei', 'segment', '--help'], ['eval', '--help'],"
        " ['models', '--help']):\n"
        "    assert CliRunner().invoke(cli, sub).exit_code == 0\n"
        "mods = ('torch', 'dask', 'openslide', 'scipy', 'skimage')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_and_version():
    r = _run("--version")
    assert r.returncode == 0 and "zeropath" in r.stdout


def test_doctor_reports_backends_and_cache():
    r = CliRunner().invoke(cli, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["slide_backends"]["openslide"].startswith("ok")
    assert "threads" in info["torch"]
    assert "mobilesam" in info["models"]
    assert "model_cache" in info


@pytest.mark.shared_data
def test_sample_slide_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = _run("nuclei", "segment", "--sample", "--out", str(out))
    assert r.returncode == 0, r.stderr
    stem = "CMU-1-Small-Region"
    for suffix in (".labels.tif", ".geojson", ".csv", ".overlay.png"):
        assert (out / f"{stem}{suffix}").is_file()
    labels = tifffile.imread(out / f"{stem}.labels.tif")
    assert labels.shape == (2967, 2220) and labels.dtype == np.uint32
    n = int(labels.max())
    assert n > 500
    gj = json.loads((out / f"{stem}.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == n
    props = gj["features"][0]["properties"]
    assert props["objectType"] == "detection" and "objectType" not in gj["features"][0]
    assert set(props["classification"]) == {"name", "color"}
    assert all(isinstance(v, int | float) for v in props["measurements"].values())
    run = json.loads((out / "run.json").read_text())
    from zeropath.nuclei.zanet import bundled_model_dir, model_sha256

    assert run["model"]["name"] == "zanet-default" and run["version"]
    assert run["model"]["sha256"] == model_sha256(bundled_model_dir())
    assert run["inputs"][0]["mpp"] == pytest.approx(0.499) and len(run["inputs"][0]["sha256"]) == 64
    assert not list(out.glob(".*"))  # no staging or temp files left


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bad_inputs(tmp_path, shared):
    cases = {
        "empty.png": b"",
        "truncated.png": _png_bytes(render_nuclei((64, 64), n=3)[0])[:200],
        "one-pixel.png": _png_bytes(np.zeros((1, 1, 3), np.uint8)),
        "notes.txt": b"hello",
    }
    paths = []
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(p)
    if shared is not None:
        paths += sorted((shared / "slides" / "broken").iterdir())
    return paths


def test_each_bad_input_is_one_error_line_and_exit_2(tmp_path, request):
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    for bad in _bad_inputs(tmp_path, shared):
        out = tmp_path / f"out-{bad.stem}"
        r = _run("nuclei", "segment", str(bad), "--out", str(out))
        assert r.returncode == 2, (bad, r.stderr)
        lines = _error_lines(r.stderr)
        assert len(lines) == 1, (bad, r.stderr)
        assert bad.name in lines[0] and "Traceback" not in r.stderr
        assert not any(p.name.startswith(bad.stem) for p in out.glob("*")) if out.exists() else True


def test_converted_and_blank_images_succeed(tmp_path):
    rgb, _, _ = render_nuclei((160, 160), n=8, seed=5)
    src = tmp_path / "in"
    src.mkdir()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(src / "rgba.png")
    Image.fromarray(rgb.mean(axis=2).astype(np.uint8)).save(src / "gray.png")
    Image.fromarray(np.full((200, 200, 3), 255, np.uint8)).save(src / "white.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["nuclei", "segment", str(src), "--out", str(out), "--mpp", "0.25"])
    assert r.exit_code == 0, r.output
    assert tifffile.imread(out / "white.labels.tif").max() == 0
    assert json.loads((out / "white.geojson").read_text())["features"] == []
    assert tifffile.imread(out / "rgba.labels.tif").max() >= 6
    assert tifffile.imread(out / "gray.labels.tif").shape == (160, 160)
    run = json.loads((out / "run.json").read_text())
    assert {v["origin"] for v in run["mpp"].values()} == {"override"}


def test_missing_mpp_warns_once_and_is_recorded(tmp_path):
    rgb, _, _ = render_nuclei((128, 128), n=5, seed=6)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "b.png")
    out = tmp_path / "out"
    r = _run(
        "nuclei", "segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "0.25" in warnings[0]
    run = json.loads((out / "run.json").read_text())
    assert run["mpp"]["a"] == {"value": 0.25, "origin": "default"}


def test_mixed_directory_reports_bad_and_keeps_good(tmp_path):
    rgb, _, _ = render_nuclei((128, 128), n=5, seed=8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb).save(src / "good.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "out"
    r = _run("nuclei", "segment", str(src), "--out", str(out), "--mpp", "0.25")
    assert r.returncode == 2
    assert len(_error_lines(r.stderr)) == 1 and "broken.png" in r.stderr
    assert (out / "good.labels.tif").is_file() and not list(out.glob("broken*"))
    run = json.loads((out / "run.json").read_text())
    assert len(run["failures"]) == 1


def test_unknown_model_is_a_clean_error(tmp_path):
    rgb, _, _ = render_nuclei((64, 64), n=2)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    r = _run(
        "nuclei",
        "segment",
        str(tmp_path / "a.png"),
        "--out",
        str(tmp_path / "o"),
        "--model",
        "nope",
    )
    assert r.returncode == 2 and len(_error_lines(r.stderr)) == 1 and "nope" in r.stderr


@pytest.mark.parametrize("model", ["no-such-model", "EMPTY_DIR"])
def test_unknown_model_or_empty_model_dir_is_one_error_line(tmp_path, model):
    rgb, _, _ = render_nuclei((64, 64), n=3, seed=1)
    img = tmp_path / "a.png"
    Image.fromarray(rgb).save(img)
    if model == "EMPTY_DIR":
        model = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    r = _run("nuclei", "segment", str(img), "--out", str(tmp_path / "out"), "--model", model)
    assert r.returncode == 2
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and model in lines[0]
    assert "Traceback" not in r.stderr


def test_fit_with_text_detector_and_no_weights_says_how_to_get_them(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    rgb, _, _ = render_nuclei((96, 96), n=4, seed=2)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-owl-here")
    r = subprocess.run(
        [sys.executable, "-m", "zeropath", "nuclei", "fit", str(tmp_path / "a.png"),
         "--out", str(tmp_path / "m"), "--detector", "text", "--detector-model", missing],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and "zeropath[vlm]" in lines[0] and "--detector-model" in lines[0]
    assert not (tmp_path / "m").exists()
