"""Tissue evaluation: per-class Dice/IoU inside the tissue, grid matching, folder pairing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.errors import InputError
from zeropath.io.writers import write_labels_tif
from zeropath.tissue.evaluate import class_scores, evaluate_tissue_dirs

TABLE = [
    {"index": 0, "name": "background", "color": [255, 255, 255]},
    {"index": 1, "name": "tumor", "color": [200, 0, 0]},
    {"index": 2, "name": "stroma", "color": [0, 200, 0]},
]


def test_class_scores_by_hand():
    gt = np.array([[0, 1, 1], [2, 2, 255]])
    pred = np.array([[3, 1, 2], [2, 0, 1]])
    before = pred.copy()
    r = class_scores(pred, gt)
    np.testing.assert_array_equal(pred, before)
    assert set(r["classes"]) == {1, 2}  # 3 only predicted outside the scored pixels; 0 is no class
    assert r["classes"][1] == {
        "dice": pytest.approx(2 / 3),
        "iou": 0.5,
        "gt_pixels": 2,
        "pred_pixels": 1,
    }
    assert r["classes"][2]["dice"] == 0.5 and r["classes"][2]["iou"] == pytest.approx(1 / 3)
    assert r["accuracy"] == 0.5 and r["pixels"] == 4
    assert r["mean_dice"] == pytest.approx((2 / 3 + 0.5) / 2)
    empty = class_scores(np.zeros((2, 2)), np.zeros((2, 2)))
    assert empty["classes"] == {} and empty["mean_dice"] is None and empty["accuracy"] is None
    with pytest.raises(ValueError):
        class_scores(np.zeros((2, 2)), np.zeros((3, 2)))


def write_pred(folder, stem, classes):
    folder.mkdir(exist_ok=True)
    desc = json.dumps({"classes": TABLE, "mpp": 2.0})
    write_labels_tif(folder / f"{stem}.tissue.tif", classes, description=desc, dtype=np.uint8)


def test_folders_are_paired_and_scored_on_the_coarser_grid(tmp_path):
    pred = np.zeros((10, 10), np.uint8)
    pred[:, :5] = 1
    pred[:, 5:] = 2
    write_pred(tmp_path / "pred", "a", pred)
    gt = np.repeat(np.repeat(pred, 4, 0), 4, 1)  # level-0 mask, 4× finer
    gt[:8] = 0  # two unannotated rows of cells: not scored
    gt[-4:, 16:20] = 2  # one cell of disagreement
    (tmp_path / "gt").mkdir()
    Image.fromarray(gt).save(tmp_path / "gt" / "a.png")
    Image.fromarray(gt).save(tmp_path / "gt" / "a.overlay.png")  # side product: ignored
    write_pred(tmp_path / "pred", "extra", pred)
    r = evaluate_tissue_dirs(tmp_path / "pred", tmp_path / "gt")
    assert r["n_images"] == 1 and r["unmatched_pred"] == ["extra"]
    img = r["per_image"]["a"]
    assert img["grid"] == [10, 10] and img["pixels"] == 80
    assert (
        img["classes"]["tumor"]["gt_pixels"] == 39 and img["classes"]["stroma"]["gt_pixels"] == 41
    )
    assert img["accuracy"] == pytest.approx(79 / 80)
    assert r["per_class"]["tumor"]["dice"] == pytest.approx(2 * 39 / (39 + 40))
    assert r["mean"]["dice"] == pytest.approx(img["mean_dice"])


def test_missing_prediction_is_an_input_error(tmp_path):
    write_pred(tmp_path / "pred", "a", np.ones((4, 4), np.uint8))
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "gt" / "b.png")
    with pytest.raises(InputError, match=r"no STEM\.tissue\.tif prediction for 'b'"):
        evaluate_tissue_dirs(tmp_path / "pred", tmp_path / "gt")
    r = CliRunner().invoke(cli, ["eval", "--task", "tissue", "--pred", str(tmp_path / "pred"),
                                 "--gt", str(tmp_path / "gt")])  # fmt: skip
    assert r.exit_code == 2 and "b.png" in r.stderr and "Traceback" not in r.output


def test_eval_cli_tissue_table_and_json(tmp_path):
    pred = np.ones((6, 6), np.uint8)
    pred[:, 3:] = 2
    write_pred(tmp_path / "pred", "s", pred)
    (tmp_path / "gt").mkdir()
    Image.fromarray(pred).save(tmp_path / "gt" / "s.png")
    out = tmp_path / "m.json"
    r = CliRunner().invoke(
        cli, ["eval", "--task", "tissue", "--pred", str(tmp_path / "pred"),
              "--gt", str(tmp_path / "gt"),
              "--json", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "stroma" in r.stdout and "1.0000" in r.stdout
    data = json.loads(out.read_text())
    assert data["per_class"]["tumor"] == {"dice": 1.0, "iou": 1.0, "n_images": 1}
