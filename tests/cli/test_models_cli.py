"""``zeropath models list|fetch`` through click's CliRunner (no network: file:// sources)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from zeropath.cli.models import models
from zeropath.models import registry
from zeropath.models.registry import ModelSpec, Url

PAYLOAD = b"tiny cli weights\n" * 40
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("ZEROPATH_HOME", str(h))
    for var in list(os.environ):
        if var.startswith(("ZEROPATH_MODEL_", "ZEROPATH_PYPI")):
            monkeypatch.delenv(var)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return h


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A 'remote' copy of the tiny model reachable through a file:// URL."""
    src = tmp_path / "remote" / "tiny.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    fields = {"task": "test", "licence": "MIT", "filename": "tiny.bin", "format": "file"}
    sources = (Url(src.as_uri()),)
    registry.register_model(
        ModelSpec("tiny-cli", sha256=SHA, size=len(PAYLOAD), sources=sources, **fields)
    )
    return src


def test_list_table(remote: Path):
    result = CliRunner().invoke(models, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "tiny-cli" in line)
    assert "MIT" in row and SHA[:12] in row and row.split("│")[6].strip() == "no"
    sam = next(line for line in lines if "mobilesam" in line)
    assert "Apache-2.0" in sam and "40.7" in sam and "6dbb90523a35" in sam
    assert any("instanseg-brightfield-nuclei" in line for line in lines)


def test_list_json_reflects_cache(remote: Path, home: Path):
    runner = CliRunner()
    before = json.loads(runner.invoke(models, ["list", "--json"]).stdout)
    assert before["cache"] == str(home / "models")
    rows = {r["name"]: r for r in before["models"]}
    assert {"mobilesam", "instanseg-brightfield-nuclei", "tiny-cli"} <= set(rows)
    assert rows["tiny-cli"]["cached"] is False
    assert rows["mobilesam"]["gated"] is False and rows["mobilesam"]["size"] == 40_728_226
    assert set(rows["tiny-cli"]) >= {"task", "licence", "sha256", "format", "sources", "path"}

    assert runner.invoke(models, ["fetch", "tiny-cli"]).exit_code == 0
    after = json.loads(runner.invoke(models, ["list", "--json"]).stdout)
    assert {r["name"]: r["cached"] for r in after["models"]}["tiny-cli"] is True


def test_fetch_prints_path_and_force(remote: Path, home: Path):
    runner = CliRunner()
    result = runner.invoke(models, ["fetch", "tiny-cli"])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == home / "models" / "tiny-cli" / "tiny.bin" and path.read_bytes() == PAYLOAD

    remote.unlink()
    assert runner.invoke(models, ["fetch", "tiny-cli"]).stdout.strip() == str(path)
    forced = runner.invoke(models, ["fetch", "tiny-cli", "--force"])
    assert forced.exit_code == 2 and "url file:" in forced.stderr


def test_fetch_unknown_name_is_one_line():
    result = CliRunner().invoke(models, ["fetch", "no-such-model"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "unknown model 'no-such-model'" in lines[0] and "mobilesam" in lines[0]


def test_fetch_unavailable_model_is_one_line(remote: Path):
    remote.unlink()
    result = CliRunner().invoke(models, ["fetch", "tiny-cli"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model 'tiny-cli' is not available")
    assert "--model PATH" in lines[0] and "ZEROPATH_HOME" in lines[0]


def test_list_hides_test_only_rows_unless_all():
    runner = CliRunner()
    plain = runner.invoke(models, ["list"])
    assert plain.exit_code == 0, plain.output
    assert "synthetic" not in plain.stdout and "test-tiny" not in plain.stdout
    shown = runner.invoke(models, ["list", "--all"]).stdout
    assert "│ synthetic" in shown and "│ test-tiny" in shown
    for args in (["list", "--json"], ["list", "--json", "--all"]):
        payload = json.loads(runner.invoke(models, args).stdout)
        names = {r["name"] for key in ("models", "encoders", "components") for r in payload[key]}
        assert ("synthetic" in names) == ("--all" in args) == ("test-tiny" in names)
        assert {"classical", "zanet-default", "zeropath.points", "stain"} <= names


def test_fetch_of_a_row_without_weights_is_one_line():
    result = CliRunner().invoke(models, ["fetch", "classical"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no weights file for zeropath to fetch" in lines[0]
