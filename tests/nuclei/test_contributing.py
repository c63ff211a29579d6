"""docs/contributing.md is true: a toy segmenter added as one class plus one registry row runs
through `zeropath nuclei segment`, and `--overlap` reaches the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.models import registry
from zeropath.models.registry import ModelSpec
from zeropath.testing import ThresholdSegmenter, render_nuclei


@pytest.fixture
def toy_row():
    row = ModelSpec(
        name="toy-threshold",
        kind="segmenter",
        licence="Apache-2.0",
        factory="zeropath.testing.segmenters:ThresholdSegmenter",
    )
    registry.register_model(row)
    yield row
    registry.unregister_model("toy-threshold", kind="segmenter")


def test_a_new_segmenter_is_one_class_and_one_row(tmp_path, toy_row):
    rgb, truth, _ = render_nuclei((200, 240), n=15, seed=4)
    Image.fromarray(rgb).save(tmp_path / "toy.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli,
        ["nuclei", "segment", str(tmp_path / "toy.png"), "--out", str(out), "--model",
         "toy-threshold", "--mpp", "0.5", "--overlap", "8"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    for suffix in (".labels.tif", ".geojson", ".csv", ".overlay.png", ".run.json"):
        assert (out / f"toy{suffix}").is_file()
    import tifffile

    labels = tifffile.imread(out / "toy.labels.tif")
    assert labels.max() == truth.max() == 15  # every rendered nucleus, once
    record = json.loads((out / "toy.run.json").read_text())
    assert record["model"]["name"] == "threshold-cc"
    assert json.loads((out / "run.json").read_text())["parameters"]["overlap_um"] == 8.0


class _Recording(ThresholdSegmenter):
    """The toy segmenter, noting the size of every tile it is given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        self.shapes.append(rgb.shape[:2])
        return super().segment_work(rgb, mpp)


def test_the_overlap_reaches_the_engine_and_only_widens_the_context(tmp_path):
    import tifffile

    from zeropath.run.segment import SegmentOptions, segment_input

    rgb, _, _ = render_nuclei((300, 300), n=25, seed=5)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    labels, widest = {}, {}
    for overlap in (5.0, 16.0):
        seg, out = _Recording(), tmp_path / f"o{overlap:g}"
        opts = SegmentOptions(tile_um=40.0, overlap_um=overlap)
        segment_input(tmp_path / "big.png", out, seg, mpp=0.5, options=opts)
        widest[overlap] = max(max(s) for s in seg.shapes)
        labels[overlap] = tifffile.imread(out / "big.labels.tif")
    # 40 µm cores at 0.5 µm/px = 80 px, plus the overlap on both sides
    assert widest[5.0] == 80 + 2 * 10 and widest[16.0] == 80 + 2 * 32
    # nuclei (radius <= 9 px = 4.5 µm) are whole with either overlap: the same objects
    np.testing.assert_array_equal(labels[5.0] > 0, labels[16.0] > 0)
    assert labels[5.0].max() == labels[16.0].max()
