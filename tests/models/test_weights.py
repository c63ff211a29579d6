"""Weights are hashed when they are loaded, and every loading failure is one line.

A cached model damaged in place keeps its size and mtime, so a (size, mtime) memo still
vouches for it: loading must hash the bytes and refuse them. Nothing here downloads anything:
remote sources are ``file://`` URLs to files made in the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zeropath.errors import ChecksumError, ModelError, WeightsError, ZeropathError  # noqa: E402
from zeropath.models import cache, registry, weights  # noqa: E402
from zeropath.models.registry import ModelSpec, Url  # noqa: E402


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no model env vars, and a registry restored afterwards."""
    h = tmp_path / "home"
    monkeypatch.setenv("ZEROPATH_HOME", str(h))
    for var in list(os.environ):
        if var.startswith("ZEROPATH_MODEL_"):
            monkeypatch.delenv(var)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return h


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(src: Path, name: str = "tiny-net", fmt: str = "state_dict") -> ModelSpec:
    spec = ModelSpec(
        name=name,
        task="test",
        licence="MIT",
        sha256=_sha(src),
        filename=src.name,
        format=fmt,
        sources=(Url(src.resolve().as_uri()),),
    )
    return registry.register_model(spec, overwrite=True)


def _damage_in_place(path: Path, offset: int) -> None:
    """Flip bytes inside the file, keeping its size, atime and mtime (ns) exactly."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 16):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _tensor_offset(path: Path, marker: bytes) -> int:
    """Where the tensor bytes (a run of ``marker``) start inside a torch zip file."""
    i = path.read_bytes().find(marker * 8)
    assert i > 0
    return i


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and "weights_only" not in msg, msg
    return msg


# ----------------------------------------------------------------- damaged cached model files


def test_cached_state_dict_damaged_in_place_is_refused(tmp_path: Path):
    src = tmp_path / "net.pt"
    torch.save({"w": torch.full((64, 64), 0.25)}, src)
    spec = _spec(src)
    cached = registry.fetch(spec)
    good = registry.load(spec)
    assert good.sha256 == spec.sha256 and torch.equal(good.value["w"], torch.full((64, 64), 0.25))

    _damage_in_place(cached, _tensor_offset(cached, bytes.fromhex("0000803e")))
    # the damaged file still unpickles (wrong numbers, like a bit-rotted model would) ...
    assert not torch.equal(torch.load(cached, weights_only=True)["w"], torch.full((64, 64), 0.25))
    # ... and its size+mtime memo still vouches for it, so fetch alone cannot tell
    assert registry.cached_path(spec) == cached
    with pytest.raises(ChecksumError) as err:
        registry.load(spec)
    msg = _one_line(err.value)
    assert str(cached) in msg and "zeropath models fetch tiny-net --force" in msg
    assert not cache.memo_path(cached).exists()  # the memo no longer vouches for it
    assert registry.cached_path(spec) is None
    # the advised fix works: a forced fetch replaces the copy, which then loads
    assert registry.fetch(spec, force=True) == cached
    assert registry.load(spec).sha256 == spec.sha256


def test_mobilesam_style_load_refuses_a_damaged_cache_copy(tmp_path: Path):
    src = tmp_path / "net.pt"
    torch.save({"w": torch.full((32, 32), 0.25)}, src)
    spec = _spec(src)
    cached = registry.fetch(spec)
    _damage_in_place(cached, _tensor_offset(cached, bytes.fromhex("0000803e")))
    with pytest.raises(ChecksumError, match="refusing to use it"):
        registry.load_state_dict(cached, sha256=spec.sha256, name=spec.name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_instanseg_refuses_a_damaged_cached_model_and_records_loaded_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from zeropath.nuclei import instanseg

    lin = torch.nn.Linear(32, 32)
    with torch.no_grad():
        lin.weight.fill_(0.25)
    src = tmp_path / "instanseg.pt"
    torch.jit.script(lin).save(str(src))
    spec = _spec(src, name="fake-instanseg", fmt="torchscript")
    monkeypatch.setattr(instanseg, "MODEL_NAME", spec.name)
    cached = registry.fetch(spec)

    seg = instanseg.InstanSegSegmenter()
    seg._load()
    assert seg.describe()["sha256"] == spec.sha256 == _sha(cached)

    _damage_in_place(cached, _tensor_offset(cached, bytes.fromhex("0000803e")))
    torch.jit.load(str(cached))  # still a loadable module: only its numbers are wrong
    assert registry.cached_path(spec) == cached  # the size+mtime memo still vouches for it
    with pytest.raises(ChecksumError) as err:
        instanseg.InstanSegSegmenter()  # refused when opened ...
    msg = _one_line(err.value)
    assert "fake-instanseg" in msg and "zeropath models fetch fake-instanseg --force" in msg
    with pytest.raises(ChecksumError):
        seg._model = None
        seg._load()  # ... and by a process that loads it later (a worker)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_model_provenance_is_the_hash_of_the_loaded_bytes(tmp_path: Path):
    from zeropath.nuclei.instanseg import InstanSegSegmenter

    path = tmp_path / "own.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    seg = InstanSegSegmenter(str(path))
    assert seg.describe()["sha256"] == _sha(path)  # hashed, not None and not the registry's
    seg._load()
    assert seg.sha256 == _sha(path)


def test_registry_provenance_is_the_hash_of_the_file_there(tmp_path: Path):
    src = tmp_path / "net.pt"
    torch.save({"w": torch.full((64, 64), 0.25)}, src)
    spec = _spec(src)
    cached = registry.fetch(spec)
    assert registry.provenance(spec.name)["sha256"] == spec.sha256
    _damage_in_place(cached, _tensor_offset(cached, bytes.fromhex("0000803e")))
    assert registry.provenance(spec.name)["sha256"] == _sha(cached) != spec.sha256


def test_loaded_digest_is_of_the_bytes_used(tmp_path: Path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.arange(10)}, path)
    loaded = weights.load_state_dict(path)
    assert loaded.sha256 == _sha(path) and torch.equal(loaded.value["a"], torch.arange(10))
    assert weights.verify_file(path) == loaded.sha256
    with pytest.raises(ChecksumError, match="damaged or was replaced"):
        weights.load_state_dict(path, "0" * 64)


# --------------------------------------------------------------------------- one-line errors


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(256)}, good)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "garbage": b"hello world" * 10,
        "empty": b"",
    }
    out = {}
    for name, blob in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(blob)
    out["pickled-code"] = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, out["pickled-code"])
    out["pickled-class"] = tmp_path / "ordered.pt"
    torch.save({"w": torch.ones(2), "args": Namespace(lr=0.1)}, out["pickled-class"])
    return out


def test_damaged_weights_files_are_one_line_without_torch_advice(tmp_path: Path):
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(WeightsError) as err:
            weights.load_state_dict(path)
        msg = _one_line(err.value)
        assert msg.startswith(f"{path}: "), (kind, msg)
    with pytest.raises(WeightsError, match="could run code"):
        weights.load_state_dict(tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="cannot read"):
        weights.load_state_dict(tmp_path / "missing.pt")


def test_load_into_names_missing_unexpected_and_mis_shaped_entries(tmp_path: Path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = dict(net.state_dict())
    path = tmp_path / "w.pt"
    weights.load_into(net, state, path)  # fits
    del state["1.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        weights.load_into(net, state, path, "decoder")
    msg = _one_line(err.value)
    assert "missing keys 1.bias" in msg and "unexpected keys extra" in msg and "decoder" in msg
    state = dict(net.state_dict())
    state["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(WeightsError, match=r"size mismatch for 0\.weight") as err:
        weights.load_into(net, state, path)
    _one_line(err.value)
    with pytest.raises(WeightsError, match="no 'decoder' entry"):
        weights.entry({"head": {}}, "decoder", path)


def test_describe_load_error_compacts_torch_messages():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict({"weight": torch.zeros(2, 2), "junk": torch.zeros(1)})
    assert "\n" in str(err.value)
    text = weights.describe_load_error(err.value)
    assert text == "missing keys bias; unexpected keys junk"
    assert weights.describe_load_error(KeyError("refiner")) == "no entry 'refiner'"


def test_weights_errors_are_model_errors():
    assert issubclass(ChecksumError, WeightsError)
    assert issubclass(WeightsError, ModelError) and issubclass(WeightsError, ZeropathError)


# ----------------------------------------------------- model folders through the CLI (zanet)


def _zanet_dir(tmp_path: Path, name: str, edit) -> Path:
    from zeropath.nuclei.zanet import WEIGHTS, bundled_model_dir

    d = tmp_path / name
    shutil.copytree(bundled_model_dir(), d)
    edit(d / WEIGHTS)
    return d


def _drop_segnet_tensor(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    del state["segnet"]["weights"][next(iter(state["segnet"]["weights"]))]
    torch.save(state, path)


def _drop_refiner(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    del state["refiner"]
    torch.save(state, path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled_object(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["refiner"]["history"] = Namespace(lr=0.1)  # an object, not plain data
    torch.save(state, path)


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (_drop_segnet_tensor, "missing keys"),
        (_drop_refiner, "no 'refiner' entry"),
        (_truncate, "damaged, truncated"),
        (_pickled_object, "not a plain weights file"),
    ],
)
def test_nuclei_segment_with_broken_model_dir_is_one_error_line(tmp_path: Path, edit, expect):
    from PIL import Image

    model = _zanet_dir(tmp_path, "model", edit)
    img = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(img)
    out = tmp_path / "out"
    args = ["nuclei", "segment", str(img), "--model", str(model), "--out", str(out)]
    r = subprocess.run(
        [sys.executable, "-m", "zeropath", *args, "--mpp", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "weights_only" not in r.stderr
    assert "weights.pt" in lines[0] and expect in lines[0], lines[0]


def test_zanet_records_the_hash_of_what_it_loaded_and_refuses_a_changed_dir(tmp_path: Path):
    import json
    import pickle

    from zeropath.nuclei.zanet import MODEL_JSON, ZANetModel, ZANetSegmenter, model_sha256

    d = _zanet_dir(tmp_path, "model", lambda p: None)
    model = ZANetModel.load(d)
    assert model.sha256 == model_sha256(d)
    seg = ZANetSegmenter(d)
    opened = seg.sha256
    meta = json.loads((d / MODEL_JSON).read_text())  # edited after opening, before loading
    meta["instances"]["threshold"] = 0.9
    (d / MODEL_JSON).write_text(json.dumps(meta))
    assert seg.describe()["sha256"] == opened  # the model this process loaded
    worker = pickle.loads(pickle.dumps(seg))  # a worker process reloads the directory
    with pytest.raises(ChecksumError, match="changed since it was opened") as err:
        worker.describe()
    _one_line(err.value)
    assert model_sha256(d) != opened
