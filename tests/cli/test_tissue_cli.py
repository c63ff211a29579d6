"""`zeropath tissue segment` and `zeropath eval --task tissue` as a user meets them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.testing.synthetic import SyntheticEncoder

COLOURS = {"tumor": (200, 60, 60), "stroma": (60, 200, 60), "fat": (60, 60, 200)}
PROMPTS = """\
templates: ["an H&E image of {}.", "{}."]
classes:
  tumor: {names: [tumor, carcinoma], color: [220, 40, 40]}
  stroma: {names: [stroma], color: [240, 170, 200]}
  fat: {names: [fat, adipose tissue], color: [255, 220, 120]}
"""


def error_lines(stderr: str) -> list[str]:
    progress = ("warning:", "done ", "skipped ")
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(progress)]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def setup(tmp_path):
    """A saved synthetic encoder (32 px tiles at 1 µm/px), a prompt file and a striped image."""
    enc = SyntheticEncoder(COLOURS, input_size=32, mpp=1.0)
    enc.save(tmp_path / "encoder")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(PROMPTS)
    cells = np.ones((15, 20), np.uint8)
    cells[:, 7:14] = 2
    cells[:, 14:] = 3
    lut = np.array([(255, 255, 255), *COLOURS.values()], np.uint8)
    rgb = np.repeat(np.repeat(lut[cells], 8, 0), 8, 1)
    image = tmp_path / "stripes.tif"
    tifffile.imwrite(
        image, rgb, photometric="rgb", resolution=(1e4, 1e4), resolutionunit="CENTIMETER"
    )
    return {"encoder": tmp_path / "encoder", "prompts": prompts, "image": image, "cells": cells}


def segment_args(setup, out, *extra):
    return (
        "tissue", "segment", setup["image"], "--prompts", setup["prompts"], "--out", out,
        "--encoder", setup["encoder"], "--stride", 8, "--cache", out.parent / "cache", *extra,
    )  # fmt: skip


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from zeropath.cli.main import cli\n"
        "for sub in (['tissue', '--help'], ['tissue', 'segment', '--help'], ['eval', '--help']):\n"
        "    assert CliRunner().invoke(cli, sub).exit_code == 0\n"
        "heavy = [m for m in ('torch', 'dask', 'zarr', 'scipy', 'shapely') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_segment_then_eval(tmp_path, setup):
    out = tmp_path / "out"
    r = invoke(*segment_args(setup, out))
    assert r.exit_code == 0, r.output
    assert "stripes:" in r.stdout and "(0 cached)" in r.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "tissue segment"
    assert run["encoder"]["provenance"]["config_sha256"]
    assert run["encoder"]["input_size"] == 32 and run["encoder"]["mpp"] == 1.0
    assert [c["name"] for c in run["prompts"]["table"]] == ["background", "tumor", "stroma", "fat"]
    assert run["parameters"]["stride"] == 8 and run["parameters"]["sigma"] == 1.0
    (row,) = run["inputs"]
    assert row["stem"] == "stripes" and row["sha256"] and row["timings"]["total_s"] > 0
    assert row["grid"]["cell_px_level0"] == 8 and row["out_downsample"] == 2
    assert "wall_s" in run["timings"] and run["failures"] == []

    # ground truth at level 0 (8× the cells): the striped map is exact
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    gt = np.repeat(np.repeat(setup["cells"], 8, 0), 8, 1).astype(np.uint8)
    Image.fromarray(gt).save(gt_dir / "stripes.png")
    report = tmp_path / "eval.json"
    r = invoke("eval", "--task", "tissue", "--pred", out, "--gt", gt_dir, "--json", report)
    assert r.exit_code == 0, r.output
    assert "tumor" in r.stdout and "mean" in r.stdout
    result = json.loads(report.read_text())
    assert result["task"] == "tissue" and result["n_images"] == 1
    for name in ("tumor", "stroma", "fat"):
        assert result["per_class"][name]["dice"] == 1.0
        assert result["per_class"][name]["iou"] == 1.0
    assert result["mean"] == {"dice": 1.0, "iou": 1.0, "accuracy": 1.0}


def test_second_run_skips_and_new_prompts_hit_the_cache(tmp_path, setup):
    out = tmp_path / "out"
    assert invoke(*segment_args(setup, out)).exit_code == 0
    r = invoke(*segment_args(setup, out))
    assert r.exit_code == 0 and "skipped" in r.stdout
    other = tmp_path / "other.yaml"
    other.write_text(PROMPTS.replace('"{}."', '"a slide of {}."'))
    args = list(segment_args(setup, out))
    args[args.index("--prompts") + 1] = other
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    (row,) = run["inputs"]
    assert row["n_cached"] == row["n_tiles"] > 0 and row["n_encoded"] == 0 and not row["skipped"]


def test_bad_yaml_is_one_error_line(tmp_path, setup):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [unclosed\n")
    args = list(segment_args(setup, tmp_path / "out"))
    args[args.index("--prompts") + 1] = bad
    r = invoke(*args)
    assert r.exit_code == 2
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and str(bad) in lines[0] and "YAML" in lines[0]
    assert "Traceback" not in r.output


def test_unknown_prompt_set_is_one_error_line(tmp_path, setup):
    args = list(segment_args(setup, tmp_path / "out"))
    args[args.index("--prompts") + 1] = "no-such-set"
    r = invoke(*args)
    assert r.exit_code == 2
    (line,) = error_lines(r.stderr)
    assert "no-such-set" in line and "crc" in line


@pytest.mark.parametrize("encoder", ["conch", "no/such/encoder/dir"])
def test_missing_encoder_is_one_error_line(tmp_path, setup, encoder):
    args = list(segment_args(setup, tmp_path / "out"))
    args[args.index("--encoder") + 1] = encoder
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    (line,) = error_lines(r.stderr)
    assert line.startswith("error:") and encoder.split("/")[0] in line
    assert not (tmp_path / "out" / "stripes.tissue.tif").exists()


def test_a_stride_that_does_not_divide_the_tile_is_one_error_line(tmp_path, setup):
    r = invoke(*segment_args(setup, tmp_path / "out"), "--tile", 48, "--stride", 10)
    assert r.exit_code == 2
    (line,) = error_lines(r.stderr)
    assert "multiple of the stride" in line


def test_a_bad_slide_fails_alone(tmp_path, setup):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide")
    out = tmp_path / "out"
    args = [*segment_args(setup, out)]
    args.insert(3, bad)
    r = invoke(*args)
    assert r.exit_code == 2
    (line,) = error_lines(r.stderr)
    assert "broken.svs" in line
    # off a terminal each input still reports as it finishes, not only at the end
    done = [ln for ln in r.stderr.splitlines() if ln.startswith("done ")]
    assert len(done) == 1 and done[0].startswith("done ") and " stripes: " in done[0]
    assert "regions, tissue 100%" in done[0]
    assert r.stderr.count("broken.svs") == 1  # printed once, not again at the end
    assert (out / "stripes.tissue.tif").exists() and not list(out.glob("broken*"))
    assert json.loads((out / "run.json").read_text())["failures"][0]["input"] == str(bad)


def test_cmu_small_region_with_the_synthetic_encoder(tmp_path, shared_data):
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not slide.is_file():
        pytest.skip("CMU-1-Small-Region.svs is not in ../shared/data")
    out = tmp_path / "out"
    r = invoke(
        "tissue", "segment", slide, "--prompts", "crc", "--encoder", "synthetic",
        "--out", out, "--no-cache",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    stem = "CMU-1-Small-Region"
    with tifffile.TiffFile(out / f"{stem}.tissue.tif") as tif:
        meta = json.loads(tif.pages.first.description)
        levels = tif.series[0].levels
        level0 = levels[0].asarray()
    assert len(levels) >= 2  # pyramidal for slides
    assert meta["mpp"] == pytest.approx(4 * 0.499, rel=1e-3)
    assert [c["index"] for c in meta["classes"]] == list(range(9))
    assert level0.shape == (-(-2967 // 4), -(-2220 // 4))
    assert set(np.unique(level0)) - {0} and (level0 == 0).mean() > 0.2  # glass is background
    gj = json.loads((out / f"{stem}.tissue.geojson").read_text())
    assert gj["features"] and all(
        f["properties"]["objectType"] == "annotation" for f in gj["features"]
    )
    run = json.loads((out / "run.json").read_text())
    (row,) = run["inputs"]
    assert 0 < row["n_tiles"] < row["n_tiles_total"]  # only tiles over tissue
    assert 0.2 < row["tissue_fraction"] < 0.8
