"""``--device``: a device torch here lacks is one error line; models move to the one asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from zeropath.cli.main import cli
from zeropath.errors import ConfigError
from zeropath.models.device import module_device, resolve_device

NO_CUDA = not torch.cuda.is_available()


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    with pytest.raises(ConfigError, match="not one of"):
        resolve_device("tpu")
    if NO_CUDA:
        with pytest.raises(ConfigError, match="--device cuda: torch"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="--device mps"):
            resolve_device("mps")


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)).type == "cpu"
    assert module_device(torch.nn.ReLU()).type == "cpu"


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warn")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize(
    "command",
    [
        ["nuclei", "segment", "IMG", "--out", "OUT"],
        ["tissue", "segment", "IMG", "--prompts", "crc", "--encoder", "synthetic", "--out", "OUT"],
    ],
)
def test_absent_cuda_is_one_error_line_and_exit_2(tmp_path, command):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(img)
    args = [str(img) if a == "IMG" else str(tmp_path / "o") if a == "OUT" else a for a in command]
    r = CliRunner().invoke(cli, [*args, "--device", "cuda"])
    assert r.exit_code == 2
    assert _one_error_line(r).startswith("error: --device cuda:")
    assert not (tmp_path / "o").exists()  # refused before any work


def test_a_cpu_only_model_refuses_another_device(tmp_path, monkeypatch):
    # the check that a model can move comes after the device check: pretend cuda exists
    monkeypatch.setattr("zeropath.models.device.resolve_device", lambda name: name)
    img = tmp_path / "a.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(img)
    r = CliRunner().invoke(
        cli,
        ["nuclei", "segment", str(img), "--out", str(tmp_path / "o"), "--model", "classical",
         "--device", "cuda"],
    )  # fmt: skip
    assert r.exit_code == 2
    assert "runs on the CPU only" in _one_error_line(r)


def test_zanet_segmenter_moves_both_networks_and_records_the_device():
    from zeropath.nuclei.zanet import ZANetSegmenter, bundled_model_dir

    seg = ZANetSegmenter(bundled_model_dir(), name="zanet-default", device="cpu")
    assert seg.to("cpu") is seg
    assert module_device(seg.model.refiner.net).type == "cpu"
    assert module_device(seg.model.segnet.model).type == "cpu"
    assert seg.describe()["params"]["device"] == "cpu"
    # a worker's copy (networks dropped when pickled) reloads onto the same device
    clone = ZANetSegmenter.__new__(ZANetSegmenter)
    clone.__dict__.update(seg.__getstate__())
    assert clone.device == "cpu" and module_device(clone.model.segnet.model).type == "cpu"
