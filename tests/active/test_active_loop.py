"""The active-learning loop on a tiny synthetic pool: oracle runs, resume, the queue, GeoJSON."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers.active_data import write_pool
from zeropath.active.annotations import rasterise_geojson, to_classes
from zeropath.active.loop import ActiveConfig, ActiveRun, run_active
from zeropath.active.prototypes import ProZSConfig
from zeropath.active.regions import (
    PoolImage,
    RegionIndex,
    cell_fractions,
    parse_region_id,
    region_id,
)
from zeropath.cli.main import cli
from zeropath.errors import ConfigError

FAST = ProZSConfig(head_steps=60)


def _config(**kw) -> ActiveConfig:
    base = dict(budget=0.25, region_px=32, cell_px=8, batch=6, seed_size=2, prozs=FAST)
    base.update(kw)
    return ActiveConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    pool, test, labels = write_pool(root)
    return {"pool": pool, "test": test, "labels": labels, "cache": root / "cache"}


def _run(data, out, **kw):
    cfg = kw.pop("config", None) or _config()
    return run_active(
        data["pool"],
        out,
        cfg,
        oracle=data["labels"],
        test=data["test"],
        cache_dir=data["cache"],
        **kw,
    )


def test_regions_tile_images_and_cells_line_up():
    images = [PoolImage(Path("a.png"), "a", 100, 70), PoolImage(Path("b.png"), "b", 40, 52)]
    idx = RegionIndex(images, 32, 16)
    assert idx.grid == {"a": (3, 2), "b": (1, 2)}  # 100/32 → 3 rows: the 4-px strip joins
    assert len(idx) == 3 * 2 + 1 * 2
    assert idx.box(("a", 2, 1)) == (64, 32, 100, 70)
    assert idx.box(("b", 0, 1)) == (0, 32, 40, 52)  # a 20-px strip is a region of its own
    assert idx.total_pixels == int(idx.pixels.sum()) == 100 * 70 + 40 * 52
    cells = idx.cells(idx.position[("a", 2, 1)])
    assert cells.tolist() == [r * 5 + c for r in (4, 5, 6) for c in (2, 3, 4)]
    assert idx.n_cells == 7 * 5 + 3 * 4
    assert sorted(np.concatenate([idx.cells(i) for i in range(len(idx))])) == list(range(47))
    assert parse_region_id(region_id(("a__b", 3, 2))) == ("a__b", 3, 2)
    with pytest.raises(ConfigError):
        RegionIndex(images, 40, 16)
    frac = cell_fractions(np.array([[0, 1], [1, 1], [0, 0]]), 2, 2)
    np.testing.assert_allclose(frac[:, 0, 1], [0.75, 0.0])


def test_oracle_run_writes_curve_with_rising_dice(data, tmp_path):
    out = tmp_path / "out"
    result = _run(data, out, config=_config(strategy="combined"))
    assert result.status == "done"
    assert 0.2 < result.labelled_fraction <= 0.25 + 1e-9
    dice = [r["dice"] for r in result.rows]
    assert len(dice) >= 3
    assert dice[-1] > 0.85 and min(dice[-2:]) > dice[0] + 0.1
    with (out / "curve.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["strategy", "seed", "round", "labelled_fraction", "dice", "iou"]
    assert [int(r["round"]) for r in rows] == list(range(len(dice)))
    assert (out / "curve.png").stat().st_size > 1000
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["parameters"]["strategy"] == "combined"
    # a second strategy appends its rows to the same curve
    _run(data, out, config=_config(strategy="random", budget=0.1))
    with (out / "curve.csv").open() as fh:
        strategies = {r["strategy"] for r in csv.DictReader(fh)}
    assert strategies == {"combined", "random"}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("strategy", ["badge", "entropy"])
def test_resume_after_interruption_matches_an_uninterrupted_run(data, tmp_path, strategy):
    cfg = _config(strategy=strategy, budget=0.2)
    whole = _run(data, tmp_path / "whole", config=cfg)

    def stop(done, total, message=""):
        if message.startswith("round 1"):
            raise _Stop

    with pytest.raises(_Stop):
        _run(data, tmp_path / "cut", config=cfg, progress=stop)
    resumed = _run(data, tmp_path / "cut", config=cfg)
    assert [r["round"] for r in resumed.rows] == [r["round"] for r in whole.rows]
    np.testing.assert_allclose(
        [r["dice"] for r in resumed.rows], [r["dice"] for r in whole.rows], atol=1e-9
    )
    a = json.loads((tmp_path / "whole/state" / f"{strategy}-seed0/state.json").read_text())
    b = json.loads((tmp_path / "cut/state" / f"{strategy}-seed0/state.json").read_text())
    assert a["labelled"] == b["labelled"] and a["rng"] == b["rng"]
    # resuming with different options is refused
    with pytest.raises(ConfigError):
        _run(data, tmp_path / "cut", config=_config(strategy=strategy, budget=0.2, region_px=64))


def _answer_queue(queue: Path, labels: Path) -> list[str]:
    index = json.loads((queue / "index.json").read_text())
    for rid in index["regions"]:
        entry = json.loads((queue / f"{rid}.json").read_text())
        box = entry["box"]
        mask = np.array(Image.open(labels / f"{entry['stem']}.png"))
        crop = mask[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]]
        Image.fromarray(crop).save(queue / entry["mask"])
    return index["regions"]


def test_queue_mode_waits_then_resumes_with_dropped_masks(data, tmp_path):
    out = tmp_path / "out"
    cfg = _config(budget=0.15)
    kw = dict(test=data["test"], test_labels=data["labels"], cache_dir=data["cache"])
    first = run_active(data["pool"], out, cfg, **kw)
    assert first.status == "waiting" and len(first.queued) == 2 and first.rows == []
    queue = out / "queue"
    entry = json.loads((queue / f"{first.queued[0]}.json").read_text())
    assert set(entry) >= {"id", "image", "box", "round", "mask"}
    assert Path(entry["image"]).is_file() and (queue / f"{first.queued[0]}.png").is_file()
    # nothing answered yet: still waiting, same regions
    again = run_active(data["pool"], out, cfg, **kw)
    assert again.status == "waiting" and again.queued == first.queued
    answered = _answer_queue(queue, data["labels"])
    second = run_active(data["pool"], out, cfg, **kw)
    assert len(second.rows) == 1 and second.rows[0]["dice"] is not None
    assert second.status == "waiting" and not set(second.queued) & set(answered)
    state_labels = out / "state" / "combined-seed0" / "labels"
    assert sorted(p.stem for p in state_labels.glob("*.png")) == sorted(answered)
    assert not (queue / f"{answered[0]}.mask.png").exists()
    _answer_queue(queue, data["labels"])
    third = run_active(data["pool"], out, cfg, **kw)
    assert len(third.rows) == 2


def test_geojson_rasterises_into_the_region_box():
    square = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]]],
        },
        "properties": {"objectType": "annotation", "classification": {"name": "Gland"}},
    }
    holed = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[40, 0], [60, 0], [60, 20], [40, 20], [40, 0]],
                [[45, 5], [55, 5], [55, 15], [45, 15], [45, 5]],
            ],
        },
        "properties": {"classification": {"name": "1"}},
    }
    mask = rasterise_geojson([square, holed], (0, 0, 32, 64), ["background", "gland"])
    assert mask.shape == (32, 64)
    assert mask[20, 20] == 1 and mask[5, 5] == 0 and mask[31, 31] == 0
    assert mask[10, 10] == 1 and mask[29, 29] == 1 and mask[30, 30] == 0  # pixel centres
    assert mask[2, 42] == 1 and mask[10, 50] == 0  # the hole stays background
    assert mask.sum() == 20 * 20 + (20 * 20 - 10 * 10)
    shifted = rasterise_geojson([square], (16, 16, 48, 48), ["background", "gland"])
    assert shifted[:14, :14].all() and shifted.sum() == 14 * 14
    with pytest.raises(Exception, match="not one of"):
        bad = {**square, "properties": {"classification": {"name": "tumour"}}}
        rasterise_geojson([bad], (0, 0, 32, 32), ["background", "gland"])


def test_queue_imports_qupath_geojson(data, tmp_path):
    out = tmp_path / "out"
    cfg = _config(budget=0.07, batch=2)
    kw = dict(cache_dir=data["cache"], test=data["test"], test_labels=data["labels"])
    first = run_active(data["pool"], out, cfg, **kw)
    stems = {parse_region_id(r)[0] for r in first.queued}
    for stem in stems:  # one GeoJSON per image: the whole image is gland
        poly = [[0, 0], [128, 0], [128, 128], [0, 128], [0, 0]]
        feat = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [poly]},
            "properties": {"classification": {"name": "foreground"}},
        }
        (out / "queue" / f"{stem}.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": [feat]})
        )
    run = ActiveRun(data["pool"], out, cfg, **kw)
    second = run.run()
    assert len(second.rows) == 1
    for rid in first.queued:
        assert (run.store.load_label(rid) == 1).all()


def test_binary_and_index_masks_are_read_as_classes():
    assert to_classes(np.array([[0, 255]], np.uint8)).tolist() == [[0, 1]]
    assert to_classes(np.array([[0, 2]], np.uint8)).tolist() == [[0, 2]]


def test_cli_runs_and_reports_errors(data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "active",
        "run",
        "--pool",
        str(data["pool"]),
        "--out",
        str(out),
        "--budget",
        "0.1",
        "--oracle",
        str(data["labels"]),
        "--test",
        str(data["test"]),
        "--strategy",
        "entropy",
        "--region-px",
        "32",
        "--cell-px",
        "8",
        "--batch",
        "5",
        "--cache",
        str(data["cache"]),
    ]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "dice" in res.output and (out / "curve.csv").is_file() and (out / "run.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli, [*args[:2], "--pool", str(empty), *args[4:]])
    assert res.exit_code == 2 and "no supported image" in res.output
    res = runner.invoke(cli, [*args, "--features", "bogus"])
    assert res.exit_code == 2 and "unknown features" in res.output
    # a region size that is not a whole number of cells
    res = runner.invoke(cli, [*args[:-6], "--region-px", "40", "--cache", str(data["cache"])])
    assert res.exit_code == 2 and "multiple of the cell" in res.output


def test_encoder_features_with_text_prompts_run_the_loop(data, tmp_path):
    cfg = _config(budget=0.15, max_rounds=2, cell_px=16)
    prompts = {0: ["an H&E image of stroma."], 1: ["an H&E image of tumor."]}
    res = run_active(
        data["pool"],
        tmp_path / "enc",
        cfg,
        oracle=data["labels"],
        test=data["test"],
        extractor="encoder:synthetic",
        cache_dir=data["cache"],
        text_prompts=prompts,
    )
    assert len(res.rows) == 2 and res.rows[-1]["dice"] > 0.5
    with pytest.raises(ConfigError, match="text space"):
        ActiveRun(
            data["pool"],
            tmp_path / "x",
            cfg,
            oracle=data["labels"],
            cache_dir=data["cache"],
            text_prompts=prompts,
        )
    shutil.rmtree(tmp_path / "enc")


def test_a_budget_below_one_region_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="less than one"):
        _run(data, tmp_path / "tiny", config=_config(budget=0.001))


def test_cli_queue_mode_says_what_to_do(data, tmp_path):
    out = tmp_path / "q"
    args = [
        "active",
        "run",
        "--pool",
        str(data["pool"]),
        "--out",
        str(out),
        "--budget",
        "0.05",
        "--region-px",
        "32",
        "--cell-px",
        "8",
        "--batch",
        "3",
        "--cache",
        str(data["cache"]),
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "3 regions queued" in res.output and (out / "queue" / "index.json").is_file()
    index = json.loads((out / "queue" / "index.json").read_text())
    assert len(index["regions"]) == 3 and index["classes"] == ["background", "foreground"]
