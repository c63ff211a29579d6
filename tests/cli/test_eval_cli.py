"""Tests of zeropath.evaluate.evaluate_dirs and the ``zeropath eval`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.eval import eval_command
from zeropath.errors import InputError
from zeropath.evaluate import METRIC_KEYS, evaluate_dirs
from zeropath.metrics import evaluate_pair


def _labels(seed: int, shape=(40, 50), n=5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint16)
    for k in range(n):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        out[y : y + rng.integers(4, 8), x : x + rng.integers(4, 8)] = 10 * k + 3
    return out


@pytest.fixture
def dirs(tmp_path):
    """pred/ with STEM.labels.tif (+ an overlay and a stray prediction), gt/ with PNG labels."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    pairs = {}
    for i, stem in enumerate(["img1", "img2"]):
        g = _labels(i)
        p = np.roll(_labels(i), 1, axis=1).astype(np.uint32)
        Image.fromarray(g).save(gt / f"{stem}.png")
        tifffile.imwrite(pred / f"{stem}.labels.tif", p)
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(pred / f"{stem}.overlay.png")
        pairs[stem] = (g, p)
    tifffile.imwrite(pred / "extra.labels.tif", _labels(9).astype(np.uint32))
    (pred / "run.json").write_text("{}")
    return pred, gt, pairs


def test_evaluate_dirs(dirs):
    pred, gt, pairs = dirs
    calls = []
    result = evaluate_dirs(pred, gt, radius=5.0, progress=lambda *a: calls.append(a))
    assert result["n_images"] == 2
    assert result["det_radius_px"] == 5.0
    assert result["unmatched_pred"] == ["extra"]
    assert set(result["per_image"]) == {"img1", "img2"}
    for stem, (g, p) in pairs.items():
        assert result["per_image"][stem] == pytest.approx(evaluate_pair(g, p, radius=5.0))
    for key in METRIC_KEYS:
        values = [result["per_image"][s][key] for s in pairs]
        assert result["mean"][key] == pytest.approx(np.mean(values))
    assert calls[-1][:2] == (2, 2)


def test_evaluate_dirs_xml_ground_truth(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    # one square nucleus, rows 2..6 x cols 3..8 (X = column, Y = row)
    (gt / "s.xml").write_text(
        "<Annotations><Annotation><Regions><Region><Vertices>"
        '<Vertex X="3" Y="2"/><Vertex X="8" Y="2"/><Vertex X="8" Y="6"/><Vertex X="3" Y="6"/>'
        "</Vertices></Region></Regions></Annotation></Annotations>"
    )
    p = np.zeros((12, 14), np.uint32)
    p[2:7, 3:9] = 1
    tifffile.imwrite(pred / "s.tif", p)
    result = evaluate_dirs(pred, gt)
    assert result["per_image"]["s"]["dice"] == pytest.approx(1.0)
    assert result["per_image"]["s"]["n_gt"] == 1


_SQUARE_XML = (
    "<Annotations><Annotation><Regions><Region><Vertices>"
    '<Vertex X="3" Y="2"/><Vertex X="38" Y="2"/><Vertex X="38" Y="26"/><Vertex X="3" Y="26"/>'
    "</Vertices></Region></Regions></Annotation></Annotations>"
)


def _monuseg_layout(tmp_path, image_shape=(30, 40)):
    """test/annotations/s.xml + test/images/s.tif (the annotated image) and pred/."""
    ann, images, pred = tmp_path / "annotations", tmp_path / "images", tmp_path / "pred"
    for d in (ann, images, pred):
        d.mkdir()
    (ann / "s.xml").write_text(_SQUARE_XML)
    tifffile.imwrite(images / "s.tif", np.zeros((*image_shape, 3), np.uint8))
    return ann, images, pred


def test_xml_ground_truth_needs_the_annotated_images_grid(tmp_path):
    ann, _, pred = _monuseg_layout(tmp_path)
    full = np.zeros((30, 40), np.uint32)
    full[2:27, 3:39] = 1
    tifffile.imwrite(pred / "s.labels.tif", full)
    result = evaluate_dirs(pred, ann)
    assert result["per_image"]["s"]["dice"] == pytest.approx(1.0)
    assert result["xml_without_image"] == []
    # a cropped prediction used to be scored on its own (smaller) grid, and higher
    tifffile.imwrite(pred / "s.labels.tif", full[:20, :30])
    with pytest.raises(InputError, match=r"differs from the annotated image s\.tif"):
        evaluate_dirs(pred, ann)
    # a padded one too: the image gives the exact size
    tifffile.imwrite(pred / "s.labels.tif", np.pad(full, ((0, 5), (0, 5))))
    with pytest.raises(InputError, match="differs from the annotated image"):
        evaluate_dirs(pred, ann)


def test_xml_ground_truth_without_its_image_checks_the_extent(tmp_path):
    ann, images, pred = _monuseg_layout(tmp_path)
    (images / "s.tif").unlink()
    full = np.zeros((30, 40), np.uint32)
    full[2:27, 3:39] = 1
    tifffile.imwrite(pred / "s.labels.tif", full[:20, :30])
    with pytest.raises(InputError, match="outside the prediction's 30×20 grid"):
        evaluate_dirs(pred, ann)
    tifffile.imwrite(pred / "s.labels.tif", full)
    result = evaluate_dirs(pred, ann)
    assert result["xml_without_image"] == ["s"]
    assert result["per_image"]["s"]["dice"] == pytest.approx(1.0)
    run = CliRunner().invoke(eval_command, ["--pred", str(pred), "--gt", str(ann)])
    assert run.exit_code == 0
    assert "without their image" in run.output


def test_cli_xml_wrong_size_is_one_error_line(tmp_path):
    ann, _, pred = _monuseg_layout(tmp_path)
    tifffile.imwrite(pred / "s.labels.tif", np.zeros((20, 30), np.uint32))
    run = CliRunner().invoke(eval_command, ["--pred", str(pred), "--gt", str(ann)])
    assert run.exit_code == 2
    lines = [ln for ln in run.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and "s.xml" in lines[-1]
    assert "Traceback" not in run.output


def test_evaluate_dirs_errors(dirs, tmp_path):
    pred, gt, _ = dirs
    # a ground-truth image without prediction is an error naming it
    Image.fromarray(_labels(5)).save(gt / "lonely.png")
    with pytest.raises(InputError, match="lonely"):
        evaluate_dirs(pred, gt)
    (gt / "lonely.png").unlink()
    # shape mismatch
    tifffile.imwrite(pred / "img1.labels.tif", np.zeros((10, 10), np.uint32))
    with pytest.raises(InputError, match="shape"):
        evaluate_dirs(pred, gt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no ground-truth"):
        evaluate_dirs(pred, empty)
    with pytest.raises(InputError, match="not found"):
        evaluate_dirs(tmp_path / "missing", gt)


def test_cli_table_and_json(dirs, tmp_path):
    pred, gt, _ = dirs
    out = tmp_path / "res" / "metrics.json"
    out.parent.mkdir()
    result = CliRunner().invoke(
        eval_command, ["--pred", str(pred), "--gt", str(gt), "--json", str(out), "--radius", "6"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header == ["image", *METRIC_KEYS]
    assert any(line.startswith("img1 ") for line in lines)
    assert any(line.startswith("mean ") for line in lines)
    assert "extra" in result.stderr  # the stray prediction is reported, not silently used
    data = json.loads(out.read_text())
    assert set(data) >= {"per_image", "mean", "det_radius_px"}
    assert data["det_radius_px"] == 6.0
    assert set(data["per_image"]) == {"img1", "img2"}
    for key in METRIC_KEYS:
        assert key in data["mean"] and key in data["per_image"]["img1"]
        assert 0.0 <= data["mean"][key] <= 1.0
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_cli_bad_input_one_line_exit_2(dirs, tmp_path):
    pred, gt, _ = dirs
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(gt / "img1.png")  # RGB "labels"
    result = CliRunner().invoke(eval_command, ["--pred", str(pred), "--gt", str(gt)])
    assert result.exit_code == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "img1.png" in err[0] and "Traceback" not in result.output

    result = CliRunner().invoke(eval_command, ["--pred", str(tmp_path / "nope"), "--gt", str(gt)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nope" in result.stderr


def test_cli_registered_in_main():
    from zeropath.cli.main import cli

    assert cli.get_command(None, "eval") is eval_command
