"""``zeropath nuclei fit`` from the command line: schedule options and stage lines."""

from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.testing import render_nuclei


def test_schedule_options_reach_the_fit_and_each_stage_prints_a_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rgb, _, _ = render_nuclei((192, 192), n=30, seed=3)
    Image.fromarray(rgb).save(images / "a.png")
    out = tmp_path / "model"
    r = CliRunner().invoke(
        cli,
        ["nuclei", "fit", str(images), "--out", str(out), "--mpp", "0.5", "--threads", "1",
         "--rounds", "1", "--refine-epochs", "0.2", "--iterations", "10",
         "--self-train-rounds", "2", "--self-train-iterations", "3"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    options = json.loads((out / "model.json").read_text())["provenance"]["options"]
    assert options["refine_rounds"] == 1 and options["refine_epochs"] == 0.2
    assert options["segnet_iterations"] == 10
    assert options["self_train_rounds"] == 2 and options["self_train_iterations"] == 3
    # off a terminal: one line per stage, in order, before the summary
    stages = [ln.split("fitting: ")[1] for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert stages == [
        "reading the images",
        "precision learning on 1 images, 1 rounds",
        "precision learning, round 1/1 done",
        "pseudo-labels",
        "segmentation network, 10 iterations",
        "self-training round 1/2, 3 iterations",
        "self-training round 2/2, 3 iterations",
        "done",
    ]
    helps = CliRunner().invoke(cli, ["nuclei", "fit", "--help"]).output
    for option in ("--refine-epochs", "--self-train-rounds", "--self-train-iterations"):
        assert option in helps
