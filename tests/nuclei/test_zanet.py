"""The label-free nucleus pipeline end to end: fit on rendered nuclei, save/load, segment.

Tiny iteration counts keep it fast; the point is that every stage runs, the model round-trips,
the segmenter returns sane labels, and fitting never opens a label file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zeropath.testing import render_nuclei

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from zeropath.nuclei.fit import ZANetFitOptions, fit_zanet  # noqa: E402
from zeropath.nuclei.instances import instances_from_interior  # noqa: E402
from zeropath.nuclei.pseudolabels import (  # noqa: E402
    BACKGROUND,
    BOUNDARY,
    IGNORE,
    NUCLEUS,
    boundary_targets,
    make_pseudolabels,
    split_at_points,
    stain_label,
)
from zeropath.nuclei.zanet import ZANetModel, ZANetSegmenter  # noqa: E402

MPP = 0.5
TINY = ZANetFitOptions(
    refine_rounds=1,
    refine_epochs=0.5,
    segnet_iterations=60,
    self_train_rounds=1,
    self_train_iterations=10,
    segnet_widths=(8, 16),
    segnet_crop=64,
    segnet_batch=4,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_images(folder: Path, n: int = 2) -> list[np.ndarray]:
    """Rendered tiles as TIFFs with their label TIFFs and XML next to them (decoys)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(n):
        rgb, lab, _ = render_nuclei((160, 160), n=14, seed=10 + i)
        tifffile.imwrite(folder / f"img{i}.tif", rgb)
        (folder / f"img{i}.xml").write_text("<Annotations></Annotations>")
        labels.append(lab)
    return labels


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZANetModel, Path, Path]:
    tmp = tmp_path_factory.mktemp("zanet")
    data = tmp / "images"
    _write_images(data)
    out = tmp / "model"
    stages: list[str] = []
    mp = pytest.MonkeyPatch()
    import zeropath.io.datasets as ds

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("fit read a label file")

    for name in ("read_monuseg_xml", "read_label_image", "load_labels"):
        mp.setattr(ds, name, refuse)
    opened: list[str] = []
    real_open = open

    def spy_open(file, *a, **k):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *a, **k)

    mp.setattr("builtins.open", spy_open)
    try:
        model = fit_zanet(
            [data / "img0.tif", data / "img1.tif"],
            out,
            mpp=MPP,
            options=TINY,
            on_stage=lambda name, _obj: stages.append(name),
        )
    finally:
        mp.undo()
    assert not [f for f in opened if f.endswith(".xml")], "fit opened an annotation"
    assert stages == ["refiner", "pseudolabels", "segnet", "self_train_1"]
    return model, out, data


def test_fit_records_provenance_and_reads_no_labels(fitted) -> None:
    model, out, _ = fitted
    prov = model.provenance
    assert prov["labels_read"] is False
    assert prov["n_training_images"] == 2
    assert prov["options"]["segnet_classes"] == 3
    assert (out / "model.json").is_file() and (out / "weights.pt").is_file()
    assert (out / "weights.pt").stat().st_size < 10 * 2**20


def test_save_load_round_trip(fitted) -> None:
    model, out, _ = fitted
    again = ZANetModel.load(out)
    rgb, _, _ = render_nuclei((96, 96), n=6, seed=3)
    a = model.segment_work(rgb)
    b = again.segment_work(rgb)
    assert np.array_equal(a, b)
    assert again.instances == model.instances
    assert again.segnet.n_classes == 3


def _edited_copy(out: Path, tmp_path: Path, edit) -> Path:
    import shutil

    d = tmp_path / "edited"
    shutil.copytree(out, d)
    meta = json.loads((d / "model.json").read_text())
    edit(meta)
    (d / "model.json").write_text(json.dumps(meta))
    return d


def test_a_missing_or_unknown_setting_is_refused(fitted, tmp_path) -> None:
    from zeropath.errors import ModelError

    _, out, _ = fitted
    assert json.loads((out / "model.json").read_text())["format"] == "zeropath.zanet/2"
    missing = _edited_copy(out, tmp_path / "a", lambda m: m["instances"].pop("marker_h"))
    with pytest.raises(ModelError, match="lacks marker_h"):
        ZANetModel.load(missing)
    future = _edited_copy(out, tmp_path / "b", lambda m: m["instances"].update(from_the_future=1))
    with pytest.raises(ModelError, match=r"unknown setting.*from_the_future"):
        ZANetModel.load(future)
    no_tile = _edited_copy(out, tmp_path / "c", lambda m: m.pop("tile"))
    with pytest.raises(ModelError, match="lacks halo_um"):
        ZANetSegmenter(no_tile)


def test_a_v1_model_is_migrated_explicitly_and_says_so(fitted, tmp_path) -> None:
    from zeropath.nuclei.zanet import V1_MIGRATION

    _, out, _ = fitted

    def to_v1(meta):  # a model saved before the interior-peak markers and the tile spec
        meta["format"] = "zeropath.zanet/1"
        meta.pop("tile")
        meta["instances"] = {"threshold": 0.4, "marker_threshold": 0.5}

    old = _edited_copy(out, tmp_path, to_v1)
    model = ZANetModel.load(old)
    assert model.instances.threshold == 0.4  # what the file says wins
    assert model.instances.marker_h == V1_MIGRATION["instances"]["marker_h"] == 0.3
    assert model.tile.halo_um == 24.0
    migrated = ZANetSegmenter(old).describe()["params"]["migrated"]
    assert migrated["from"] == "zeropath.zanet/1"
    assert migrated["instances"]["marker_h"] == 0.3 and "threshold" not in migrated["instances"]
    assert migrated["tile"]["halo_um"] == 24.0
    assert "migrated" not in ZANetSegmenter(out).describe()["params"]  # a complete model


def test_segmenter_on_tile_returns_sane_labels(fitted) -> None:
    _, out, _ = fitted
    seg = ZANetSegmenter(out)
    rgb, gt, _ = render_nuclei((200, 200), n=12, seed=7)
    assert gt.max() == 12
    labels = seg.segment(rgb, 0.4)  # 0.4 µm/px input: resampled to work and back
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint32
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # 0..N, no gaps
    assert 0 < (labels > 0).mean() < 0.9
    assert seg.describe()["params"]["work_mpp"] == 0.5


def test_stain_source_and_boundary_targets() -> None:
    rgb, gt, centres = render_nuclei((128, 128), n=12, seed=2)
    xy = centres[:, ::-1]
    st = stain_label(rgb, MPP)
    fg = gt > 0
    assert fg[st == NUCLEUS].mean() > 0.9 and (~fg)[st == BACKGROUND].mean() > 0.9
    eroded = stain_label(rgb, MPP, erode_um=1.0)
    assert (eroded == NUCLEUS).sum() < (st == NUCLEUS).sum()
    lab = make_pseudolabels(rgb, xy, MPP, use=("voronoi", "cluster", "stain"))
    assert set(np.unique(lab)) <= {BACKGROUND, NUCLEUS, IGNORE}
    split = split_at_points(gt, xy)
    assert split.max() == gt.max()
    merged = np.where(gt == 2, 1, gt)  # two nuclei in one mask: the points part them again
    assert split_at_points(merged, xy).max() == gt.max()
    three = boundary_targets(lab, split, MPP, 1.0)
    assert (three == BOUNDARY).any() and (three == NUCLEUS).any()
    assert np.array_equal(three == IGNORE, lab == IGNORE)


def test_instances_from_maps_splits_touching() -> None:
    fg = np.zeros((40, 60), np.float32)
    fg[10:30, 10:50] = 1.0  # two touching squares
    interior = np.zeros_like(fg)
    interior[13:27, 13:27] = 1.0
    interior[13:27, 33:47] = 1.0
    labels = instances_from_interior(fg, interior, None, MPP, min_area_um2=1.0)
    assert labels.max() == 2
    # a component with no interior marker is seeded by a point, or stays one object
    fg2 = fg.copy()
    fg2[33:38, 5:12] = 1.0
    assert instances_from_interior(fg2, interior, [[8, 35]], MPP, min_area_um2=1.0).max() == 3
    assert instances_from_interior(fg2, interior, None, MPP, min_area_um2=1.0).max() == 3
    assert instances_from_interior(fg * 0, interior, None, MPP).max() == 0


def test_stain_normalise_brings_a_pale_image_to_the_reference() -> None:
    from zeropath.stain import REFERENCE_HE_P99, hed_od, stain_normalise

    rgb, _, _ = render_nuclei((96, 96), n=8, seed=5)
    pale = (255 - (255 - rgb.astype(np.float32)) * 0.4).astype(np.uint8)  # washed out
    out = stain_normalise(pale)
    assert out.dtype == np.uint8 and out.shape == pale.shape
    h_pale = np.percentile(hed_od(pale)[..., 0], 99)
    h_out = np.percentile(hed_od(out)[..., 0], 99)
    assert h_out > h_pale * 1.5
    assert abs(h_out - REFERENCE_HE_P99[0]) < 0.25 * REFERENCE_HE_P99[0]
    white = np.full((8, 8, 3), 255, np.uint8)  # blank glass stays blank
    assert np.array_equal(stain_normalise(white), white)


def test_confident_labels_of_three_classes() -> None:
    from zeropath.nuclei.segnet import confident_labels

    prob = np.zeros((3, 2, 2), np.float32)
    prob[:, 0, 0] = (0.95, 0.03, 0.02)
    prob[:, 0, 1] = (0.02, 0.95, 0.03)
    prob[:, 1, 0] = (0.02, 0.03, 0.95)
    prob[:, 1, 1] = (0.4, 0.3, 0.3)
    lab = confident_labels(prob, 0.9)
    assert lab.tolist() == [[BACKGROUND, NUCLEUS], [BOUNDARY, IGNORE]]


def test_bundled_default_model_is_small_label_free_and_loads():
    from zeropath.nuclei.zanet import MODEL_JSON, ZANetSegmenter, bundled_model_dir

    d = bundled_model_dir()
    assert (d / MODEL_JSON).is_file(), "the package must ship its default model"
    size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    assert size < 10 * 2**20
    prov = json.loads((d / MODEL_JSON).read_text())["provenance"]
    assert prov["labels_read"] is False and prov["command"] == "nuclei fit"
    seg = ZANetSegmenter(d, name="zanet-default")
    rgb, _, _ = render_nuclei((128, 128), n=6, seed=4)
    labels = seg.segment(rgb, 0.25)
    assert labels.shape == (128, 128) and labels.dtype == np.uint32 and labels.max() >= 1
