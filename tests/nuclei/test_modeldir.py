"""One model-directory format and one segmenter protocol for every nucleus model (issue 13)."""

from __future__ import annotations

import hashlib
import importlib
import shutil

import numpy as np
import pytest

from zeropath.nuclei.modeldir import MODEL_JSON, WEIGHTS, combined_sha256, model_sha256


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zanet_sha256_is_the_shared_rule_of_what_was_loaded(tmp_path):
    from zeropath.nuclei.zanet import ZANetModel, ZANetSegmenter, bundled_model_dir

    d = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), d)
    expected = combined_sha256(_sha(d / MODEL_JSON), _sha(d / WEIGHTS))
    (d / "NOTES.txt").write_text("other files do not change a model's identity\n")
    assert model_sha256(d) == expected
    assert ZANetModel.load(d).sha256 == ZANetSegmenter(d).sha256 == expected
    # the rule covers the configuration: one changed setting is another model
    (d / MODEL_JSON).write_text((d / MODEL_JSON).read_text().replace('"tta": false', '"tta": true'))
    assert model_sha256(d) != expected


def test_the_bundled_model_records_its_complete_config():
    import json

    from zeropath.nuclei.zanet import FORMAT, InstanceParams, ZANetSegmenter, bundled_model_dir

    meta = json.loads((bundled_model_dir() / MODEL_JSON).read_text())
    assert meta["format"] == FORMAT
    assert set(meta["instances"]) == set(InstanceParams().to_dict())
    assert meta["instances"]["marker_h"] == 0.3 and meta["instances"]["marker_sigma_um"] == 0.25
    seg = ZANetSegmenter(bundled_model_dir())
    assert "migrated" not in seg.describe()["params"]
    assert seg.halo_um == meta["tile"]["halo_um"] == 24.0 and seg.target_mpp == 0.5


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("zeropath.nuclei.centres", ["Points", "nms_points", "match_counts"]),
        (
            "zeropath.nuclei.instances",
            ["instances_from_probability", "instances_from_interior", "instances_from_offsets"],
        ),
        ("zeropath.nuclei.base", ["Segmenter", "TileSpec", "at_target_mpp"]),
        ("zeropath.nuclei.fit", ["ZANetFitOptions", "fit_zanet"]),
        ("zeropath.points.fit", ["PointsFitOptions", "fit_points"]),
        ("zeropath.nuclei.zanet", ["ZANetSegmenter"]),
        ("zeropath.points.model", ["PointsSegmenter"]),
    ],
)
def test_renamed_modules_import(module, names):
    mod = importlib.import_module(module)
    assert all(hasattr(mod, n) for n in names)


@pytest.mark.parametrize("gone", ["zeropath.nuclei.points", "zeropath.points.instances"])
def test_old_module_names_are_gone(gone):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(gone)


def test_every_segmenter_is_a_segmenter_and_only_the_engine_resamples():
    from zeropath.nuclei.base import Segmenter, TileSpec
    from zeropath.nuclei.classical import ClassicalSegmenter
    from zeropath.nuclei.instanseg import InstanSegSegmenter
    from zeropath.nuclei.zanet import ZANetSegmenter
    from zeropath.points.model import PointsSegmenter

    for cls in (ClassicalSegmenter, InstanSegSegmenter, ZANetSegmenter, PointsSegmenter):
        assert issubclass(cls, Segmenter)

    class Probe(Segmenter):
        name = "probe"
        target_mpp = 0.5
        tile = TileSpec(halo_um=8.0)

        def segment_work(self, rgb, mpp):
            self.seen.append((rgb.shape[:2], mpp))
            return np.zeros(rgb.shape[:2], np.uint32)

    seg = Probe()
    seg.seen = []
    rgb = np.full((100, 80, 3), 200, np.uint8)
    # from the engine: pixels at (or within 5 % of) target_mpp pass through unchanged
    assert seg.segment(rgb, 0.5).shape == (100, 80)
    assert seg.segment(rgb, 0.48).shape == (100, 80)
    # called directly on another µm/px: resampled once, labels back on the input's grid
    assert seg.segment(rgb, 0.25).shape == (100, 80)
    assert seg.seen == [((100, 80), 0.5), ((100, 80), 0.48), ((50, 40), 0.5)]
    assert seg.halo_um == 8.0
    with pytest.raises(Exception, match="runs on the CPU only"):
        seg.to("cuda")
