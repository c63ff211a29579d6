"""``zeropath points fit`` / ``points segment`` end to end on a tiny random MobileSAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.points import model as pm


def test_points_fit_save_load_segment(tiny, tmp_path):
    images, pts = tiny
    model_dir = tmp_path / "model"
    r = CliRunner().invoke(
        cli,
        ["points", "fit", str(images), "--points", str(pts), "--out", str(model_dir),
         "--steps", "3", "--mpp", "0.5", "--work-mpp", "0.5", "--seed", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "fitted on 2 images" in r.output
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["format"] == pm.FORMAT and meta["work_mpp"] == 0.5
    assert meta["base"]["name"] == "mobilesam" and len(meta["base"]["sha256"]) == 64
    assert meta["provenance"]["n_training_images"] == 2 and meta["provenance"]["steps"] == 3
    assert not any("image_encoder.layers.0" in k for k in meta)  # base weights not copied
    state = torch.load(model_dir / "weights.pt", weights_only=True)
    assert set(state) == {"adapters", "decoder", "head"}
    assert all(".adapter_" in k for k in state["adapters"])
    assert list((tmp_path / "home" / "sam-embeddings").glob("*.npy"))

    # save/load round trip: the loaded model predicts what a second load predicts
    seg = pm.PointsSegmenter(model_dir)
    rgb = np.asarray(Image.open(images / "img0.png"))
    a = seg.segment(rgb, 0.5)
    b = pm.PointsSegmenter(model_dir).segment(rgb, 0.5)
    assert a.dtype == np.uint32 and a.shape == rgb.shape[:2] and np.array_equal(a, b)
    loaded = pm.load_points_model(model_dir)
    for k, v in state["decoder"].items():
        assert torch.equal(loaded.decoder.state_dict()[k], v)
    assert not any(p.requires_grad for p in loaded.sam.parameters())

    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli,
        ["points", "segment", str(images / "img0.png"), "--out", str(out), "--model",
         str(model_dir), "--mpp", "0.5"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for suffix in (".labels.tif", ".geojson", ".csv", ".overlay.png"):
        assert (out / f"img0{suffix}").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "points segment"
    assert run["model"]["sha256"] == pm.model_sha256(model_dir)
    assert run["model_parameters"]["work_mpp"] == 0.5


def test_missing_points_file_is_one_error_line(tiny, tmp_path):
    images, pts = tiny
    (pts / "img1.csv").unlink()
    r = CliRunner().invoke(
        cli, ["points", "fit", str(images), "--points", str(pts), "--out", str(tmp_path / "m")]
    )
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "img1" in lines[0]
    assert not (tmp_path / "m").exists()


def test_segment_without_model_dir_is_one_error_line(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(img)
    r = CliRunner().invoke(
        cli, ["points", "segment", str(img), "--out", str(tmp_path / "o"), "--model",
              str(tmp_path)],
    )  # fmt: skip
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.json" in lines[0]


def test_every_schedule_length_is_an_option_and_each_stage_prints_a_line(tiny, tmp_path):
    # `--steps 1` used to run 800 hidden decoder steps (400 warm-up + 400 polish), silently
    images, pts = tiny
    model_dir = tmp_path / "model"
    r = CliRunner().invoke(
        cli,
        ["points", "fit", str(images), "--points", str(pts), "--out", str(model_dir),
         "--steps", "1", "--decoder-warmup-steps", "0", "--decoder-polish-steps", "2",
         "--mpp", "0.5", "--work-mpp", "0.5"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    history = json.loads((model_dir / "model.json").read_text())["history"]
    assert [h["stage"] for h in history] == ["joint", "decoder polish", "decoder polish"]
    stages = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert [ln.split("fitting: ")[1] for ln in stages] == [
        "base masks",
        "training",
        "adapted embeddings",
        "decoder polish",
    ]
    helps = CliRunner().invoke(cli, ["points", "fit", "--help"]).output
    assert "--decoder-warmup-steps" in helps and "--decoder-polish-steps" in helps


def _fit_small(images, pts, model_dir):
    r = CliRunner().invoke(
        cli,
        ["points", "fit", str(images), "--points", str(pts), "--out", str(model_dir),
         "--steps", "1", "--decoder-warmup-steps", "0", "--decoder-polish-steps", "1",
         "--mpp", "0.5", "--work-mpp", "0.5"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output


def test_points_model_sha256_is_the_shared_rule_of_what_was_loaded(tiny, tmp_path):
    import hashlib

    from zeropath.nuclei.modeldir import combined_sha256, model_sha256

    images, pts = tiny
    d = tmp_path / "model"
    _fit_small(images, pts, d)
    files = [hashlib.sha256((d / n).read_bytes()).hexdigest() for n in ("model.json", "weights.pt")]
    expected = combined_sha256(*files)
    (d / "README.md").write_text("notes do not change a model's identity\n")
    assert model_sha256(d) == pm.model_sha256(d) == expected
    assert pm.load_points_model(d).sha256 == pm.PointsSegmenter(d).sha256 == expected


def test_points_model_missing_setting_is_refused_and_v1_is_migrated(tiny, tmp_path):
    from zeropath.errors import ModelError

    images, pts = tiny
    d = tmp_path / "model"
    _fit_small(images, pts, d)
    meta = json.loads((d / "model.json").read_text())
    assert meta["format"] == "zeropath.points/2" and meta["tile"]["tile_px"] == 128
    del meta["instances"]["edge_threshold"]
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="lacks edge_threshold"):
        pm.PointsSegmenter(d)
    # a /1 file: halo_um at the top level, no tile spec, settings filled explicitly
    meta["format"] = "zeropath.points/1"
    meta["halo_um"] = meta.pop("tile")["halo_um"]
    (d / "model.json").write_text(json.dumps(meta))
    seg = pm.PointsSegmenter(d)
    assert seg.instances.edge_threshold == pm.V1_MIGRATION["instances"]["edge_threshold"]
    migrated = seg.describe()["params"]["migrated"]
    assert migrated == {"from": "zeropath.points/1", "instances": {"edge_threshold": 0.25}}


def test_points_segment_is_an_alias_of_nuclei_segment(tiny, tmp_path):
    images, pts = tiny
    d = tmp_path / "model"
    _fit_small(images, pts, d)
    outs = {}
    for name, command in (
        ("alias", ["points", "segment"]),
        ("nuclei", ["nuclei", "segment"]),
    ):
        out = tmp_path / name
        args = [*command, str(images / "img0.png"), "--out", str(out), "--model", str(d)]
        r = CliRunner().invoke(cli, [*args, "--mpp", "0.5", "--threads", "1"])
        assert r.exit_code == 0, r.output
        outs[name] = out
    for suffix in (".labels.tif", ".geojson", ".csv", ".overlay.png"):
        a = (outs["alias"] / f"img0{suffix}").read_bytes()
        assert a == (outs["nuclei"] / f"img0{suffix}").read_bytes(), suffix
    runs = [json.loads((outs[n] / "run.json").read_text()) for n in ("alias", "nuclei")]
    assert runs[0]["model"] == runs[1]["model"]
    assert runs[0]["command"] == "points segment" and runs[1]["command"] == "nuclei segment"
