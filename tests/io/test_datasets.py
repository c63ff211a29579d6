"""Tests of zeropath.io.datasets: MoNuSeg XML, label images, sample listings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from zeropath.errors import InputError
from zeropath.io.datasets import (
    MONUSEG_SPLITS,
    Sample,
    folder_samples,
    label_stem,
    load_labels,
    monuseg_samples,
    read_label_image,
    read_monuseg_xml,
)


def _aperio_xml(regions: list[list[tuple[float, float]]]) -> str:
    parts = ['<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>']
    for k, vertices in enumerate(regions, start=1):
        parts.append(f'<Region Id="{k}"><Attributes/><Vertices>')
        parts.extend(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices)
        parts.append("</Vertices></Region>")
    parts.append("</Regions></Annotation></Annotations>")
    return "\n".join(parts)


def _square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# --------------------------------------------------------------------------------------------
# MoNuSeg XML


def test_xml_file_order_and_overlap(tmp_path):
    path = tmp_path / "a.xml"
    # region 1: rows 1..5, cols 1..5; region 2 (later) overlaps its lower-right part
    path.write_text(_aperio_xml([_square(1, 1, 5, 5), _square(3, 3, 8, 8)]))
    labels = read_monuseg_xml(path, (10, 12))
    assert labels.dtype == np.uint32 and labels.shape == (10, 12)
    assert labels[2, 2] == 1
    assert labels[4, 4] == 2  # later region overwrites
    assert labels[7, 7] == 2
    assert labels[0, 0] == 0
    # X is the column, Y the row
    path.write_text(_aperio_xml([_square(6, 1, 9, 2)]))
    wide = read_monuseg_xml(path, (10, 12))
    assert wide[1:3, 6:10].all() and not wide[5:, :].any()


def test_xml_vertices_out_of_bounds_are_clipped(tmp_path):
    path = tmp_path / "b.xml"
    path.write_text(
        _aperio_xml([_square(-5, -5, 2, 2), _square(50, 50, 60, 60), _square(7.5, 7.5, 30, 30)])
    )
    labels = read_monuseg_xml(path, (10, 10))
    assert labels[0, 0] == 1
    assert set(np.unique(labels)) == {0, 1, 3}  # region 2 lies outside; ids keep file order
    assert labels[9, 9] == 3


def test_xml_empty_annotation_is_blank(tmp_path):
    path = tmp_path / "c.xml"
    path.write_text(_aperio_xml([]))
    assert not read_monuseg_xml(path, (4, 4)).any()


@pytest.mark.parametrize(
    "text, match",
    [
        ("<Annotations><Region><Vertex X='1' Y='2'>", "malformed"),
        ("not xml at all", "malformed"),
        ("<Annotations><Region><Vertex X='a' Y='2'/></Region></Annotations>", "Vertex"),
        ("<Annotations><Region><Vertex Y='2'/></Region></Annotations>", "Vertex"),
        ("<Other><Region/></Other>", "not an Aperio"),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "boom">]><Annotations>&x;</Annotations>',
            "DTD",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE a SYSTEM "file:///etc/passwd"><Annotations/>',
            "DTD",
        ),
    ],
)
def test_xml_bad_inputs(tmp_path, text, match):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        read_monuseg_xml(path, (8, 8))
    assert err.value.path == str(path)


def test_xml_missing_file_and_bad_shape(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_monuseg_xml(tmp_path / "nope.xml", (8, 8))
    path = tmp_path / "ok.xml"
    path.write_text(_aperio_xml([]))
    with pytest.raises(InputError, match="shape"):
        read_monuseg_xml(path, (0, 8))


# --------------------------------------------------------------------------------------------
# Label images


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_read_label_tif_bit_depths(tmp_path, dtype):
    labels = np.zeros((7, 9), dtype)
    labels[1:3, 2:5] = 3
    labels[4:6, 6:9] = np.iinfo(dtype).max
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, labels[..., None])  # a single-channel axis is squeezed
    out = read_label_image(path)
    assert out.shape == (7, 9)
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_label_png(tmp_path, dtype):
    labels = np.zeros((5, 6), dtype)
    labels[1:4, 1:3] = 300 if dtype == np.uint16 else 200
    path = tmp_path / "x.png"
    Image.fromarray(labels).save(path)
    np.testing.assert_array_equal(read_label_image(path), labels)


def test_read_label_rejects_rgb_and_garbage(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(InputError, match="RGB"):
        read_label_image(rgb)
    rgb_tif = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb_tif, np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="not a label image"):
        read_label_image(rgb_tif)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match="cannot read"):
        read_label_image(junk)
    frac = tmp_path / "frac.tif"
    tifffile.imwrite(frac, np.full((3, 3), 0.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        read_label_image(frac)
    neg = tmp_path / "neg.tif"
    tifffile.imwrite(neg, np.full((3, 3), -1, np.int16))
    with pytest.raises(InputError, match="negative"):
        read_label_image(neg)
    with pytest.raises(InputError, match="not found"):
        read_label_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="unsupported"):
        read_label_image(_touch(tmp_path / "x.bmp"))


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_read_label_integral_float_tif(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.array([[0, 2], [5, 5]], np.float32))
    out = read_label_image(path)
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out, [[0, 2], [5, 5]])


def test_label_stem():
    assert label_stem("a/b/TCGA-1.labels.tif") == "TCGA-1"
    assert label_stem("TCGA-1.xml") == "TCGA-1"
    assert label_stem("x.y.png") == "x.y"


# --------------------------------------------------------------------------------------------
# Sample listings and load_labels


def test_folder_samples_and_load_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem in ("a", "b", "c"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    lab = np.zeros((6, 8), np.uint16)
    lab[1:3, 1:3] = 9
    Image.fromarray(lab).save(tmp_path / "labels" / "a.png")
    (tmp_path / "labels" / "b.xml").write_text(_aperio_xml([_square(2, 1, 6, 4)]))
    samples = folder_samples(tmp_path)
    assert [s.stem for s in samples] == ["a", "b", "c"]
    assert samples[2].label_path is None
    np.testing.assert_array_equal(load_labels(samples[0]), lab)
    b = load_labels(samples[1])  # XML shape taken from the image
    assert b.shape == (6, 8) and b[2, 4] == 1
    with pytest.raises(InputError, match="no labels"):
        load_labels(samples[2])
    with pytest.raises(InputError, match="image shape"):
        load_labels(samples[1].label_path)
    assert load_labels(samples[1].label_path, shape=(10, 10)).shape == (10, 10)
    with pytest.raises(InputError, match="differs"):
        load_labels(samples[0].label_path, shape=(5, 5))
    with pytest.raises(InputError, match="image folder"):
        folder_samples(tmp_path / "labels")


def test_sample_is_a_plain_record(tmp_path):
    s = Sample("x", tmp_path / "x.tif")
    assert s.label_path is None and s.stem == "x"


def test_monuseg_bad_split_and_root(tmp_path):
    with pytest.raises(InputError, match="unknown MoNuSeg split"):
        monuseg_samples(tmp_path, "nope")
    with pytest.raises(InputError, match="image folder"):
        monuseg_samples(tmp_path, "train")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "splits_kumar.json").write_text(json.dumps({"split": {}}))
    with pytest.raises(InputError, match="no split"):
        monuseg_samples(tmp_path, "kumar_train")


# --------------------------------------------------------------------------------------------
# Shared data (skipped when ../shared/data is absent)


@pytest.mark.shared_data
def test_monuseg_test_xml_region_count(shared_data):
    root = shared_data / "monuseg"
    samples = monuseg_samples(root, "test")
    assert len(samples) == 14
    sample = min(samples, key=lambda s: s.label_path.stat().st_size)  # the quickest one
    labels = load_labels(sample)
    n_regions = sample.label_path.read_text().count("<Region ")
    assert labels.shape == (1000, 1000) and labels.dtype == np.uint32
    assert len(np.unique(labels)) - 1 == n_regions == labels.max()


@pytest.mark.shared_data
def test_monuseg_train_labels_and_kumar_splits(shared_data):
    root = shared_data / "monuseg"
    train = monuseg_samples(root, "train")
    assert len(train) == 30
    labels = load_labels(train[0])
    assert labels.shape == (1000, 1000) and labels.max() > 100
    counts = {s: len(monuseg_samples(root, s)) for s in MONUSEG_SPLITS if s.startswith("kumar")}
    assert counts == {
        "kumar_train": 12,
        "kumar_val": 4,
        "kumar_test": 14,
        "kumar_testA": 8,
        "kumar_testB": 6,
    }
    test_a = {s.stem for s in monuseg_samples(root, "kumar_testA")}
    test_b = {s.stem for s in monuseg_samples(root, "kumar_testB")}
    assert test_a | test_b == {s.stem for s in monuseg_samples(root, "kumar_test")}
    assert all(s.label_path.suffix == ".png" for s in monuseg_samples(root, "kumar_val"))
