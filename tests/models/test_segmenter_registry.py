"""``get_segmenter``: every built-in name, model directories dispatched on their ``format``, and
the one-line errors; ``nuclei segment --model DIR`` with a points model directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.cli.nuclei import load_segmenter
from zeropath.errors import ModelError
from zeropath.models import registry
from zeropath.models.registry import ModelSpec, get_segmenter

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _private_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A registry restored afterwards, an empty cache and an index that answers nothing."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setenv("ZEROPATH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZEROPATH_PYPI_INDEX", "http://127.0.0.1:9/simple/")
    monkeypatch.delenv("ZEROPATH_MODEL_INSTANSEG_BRIGHTFIELD_NUCLEI", raising=False)


def _bundled(tmp_path: Path) -> Path:
    src = registry.bundled_dir(registry.find("segmenter", "zanet-default"))
    return Path(shutil.copytree(src, tmp_path / "my-zanet"))


def test_builtin_names():
    from zeropath.nuclei.classical import ClassicalSegmenter
    from zeropath.nuclei.zanet import ZANetSegmenter

    assert isinstance(get_segmenter("classical"), ClassicalSegmenter)
    default = get_segmenter()
    assert isinstance(default, ZANetSegmenter) and default.name == "zanet-default"
    assert get_segmenter("zanet-default").sha256 == default.sha256
    assert load_segmenter(None).sha256 == default.sha256
    # instanseg goes to its factory, which fetches the weights (none reachable here)
    with pytest.raises(ModelError, match="model 'instanseg-brightfield-nuclei' is not available"):
        get_segmenter("instanseg-brightfield-nuclei")


def test_missing_bundled_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from zeropath.nuclei.classical import ClassicalSegmenter

    row = registry.find("segmenter", "zanet-default")
    registry.register_model(replace(row, bundled="data/models/not-shipped"), overwrite=True)
    assert isinstance(get_segmenter(None), ClassicalSegmenter)  # the fallback
    with pytest.raises(ModelError, match=r"bundled model is missing .* pass --model classical"):
        get_segmenter("zanet-default")


def test_zanet_directory_and_its_model_json(tmp_path: Path):
    from zeropath.nuclei.zanet import ZANetSegmenter

    model_dir = _bundled(tmp_path)
    seg = get_segmenter(str(model_dir))
    assert isinstance(seg, ZANetSegmenter) and seg.name == "my-zanet"
    assert get_segmenter(model_dir / "model.json").sha256 == seg.sha256


def test_unknown_format_and_empty_directory_are_one_line(tmp_path: Path):
    model_dir = tmp_path / "odd"
    model_dir.mkdir()
    with pytest.raises(ModelError, match=r"no model\.json here"):
        get_segmenter(str(model_dir))
    (model_dir / "model.json").write_text(json.dumps({"format": "someone.else/3"}))
    with pytest.raises(ModelError) as err:
        load_segmenter(str(model_dir))
    msg = str(err.value)
    assert "\n" not in msg and "unknown model format 'someone.else/3'" in msg
    assert "zeropath.points/…" in msg and "zeropath.zanet/…" in msg
    (model_dir / "model.json").write_text("[1, 2")
    with pytest.raises(ModelError, match="unreadable"):
        get_segmenter(str(model_dir))
    with pytest.raises(ModelError, match=r"unknown nucleus model 'nope'.*classical"):
        get_segmenter("nope")


def test_a_registered_toy_segmenter_runs_through_nuclei_segment(tmp_path: Path):
    registry.register_model(
        ModelSpec("toy", kind="segmenter", factory="conftest:ThresholdSegmenter")
    )
    img = tmp_path / "a.png"
    Image.fromarray(np.full((48, 40, 3), 200, np.uint8)).save(img)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli, ["nuclei", "segment", str(img), "--out", str(out), "--model", "toy"]
    )
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["name"] == "threshold-cc"


def test_nuclei_segment_takes_a_points_model_directory(tiny, tmp_path: Path):
    from zeropath.points.model import PointsSegmenter

    images, pts = tiny
    model_dir = tmp_path / "points-model"
    fit = ["points", "fit", str(images), "--points", str(pts), "--out", str(model_dir)]
    fit += "--steps 1 --decoder-warmup-steps 0 --decoder-polish-steps 1 --mpp 0.5".split()
    r = CliRunner().invoke(cli, [*fit, "--work-mpp", "0.5"])
    assert r.exit_code == 0, r.output
    seg = get_segmenter(str(model_dir))
    assert isinstance(seg, PointsSegmenter) and seg.name == "points-model"
    out = tmp_path / "out"
    segment = ["nuclei", "segment", str(images / "img0.png"), "--mpp", "0.5", "--out", str(out)]
    r = CliRunner().invoke(cli, [*segment, "--model", str(model_dir)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["model"]["sha256"] == seg.sha256
