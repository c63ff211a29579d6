"""Prompt files: parsing, one-line errors, the shipped library, the embedding ensemble, and the
optional LLM description hook (against a tiny local HTTP server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from zeropath.cli.main import cli
from zeropath.errors import ConfigError
from zeropath.models.encoders.base import Encoder, l2_normalise
from zeropath.tissue.describe import DescriptionError, generate_descriptions, with_descriptions
from zeropath.tissue.prompts import (
    DEFAULT_TEMPLATES,
    class_embeddings,
    ensemble,
    library_names,
    load_prompts,
    parse_prompts,
)

INTERFACE_EXAMPLE = """\
templates: ["an H&E image of {}.", "a histopathology image showing {}."]   # "{}" takes each name
classes:
  tumor:
    names: ["tumor", "carcinoma", "malignant spindle cells"]
    color: [220, 40, 40]
  normal:
    names: ["normal skin", "dermis", "epidermis"]
    color: [40, 160, 60]
background: null   # optional: a class name to assign outside the tissue mask instead of 0
"""


def write(tmp_path, text, name="prompts.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- parsing


def test_interface_example_parses(tmp_path):
    p = load_prompts(write(tmp_path, INTERFACE_EXAMPLE))
    assert p.templates == ("an H&E image of {}.", "a histopathology image showing {}.")
    assert [(c.name, c.index) for c in p.classes] == [("tumor", 1), ("normal", 2)]
    assert p.classes[0].names == ("tumor", "carcinoma", "malignant spindle cells")
    assert p.background_index == 0
    assert p.table() == [
        {"index": 0, "name": "background", "color": [255, 255, 255]},
        {"index": 1, "name": "tumor", "color": [220, 40, 40]},
        {"index": 2, "name": "normal", "color": [40, 160, 60]},
    ]
    assert list(p.scored_indices) == [1, 2]
    texts = p.classes[1].texts(p.templates)
    assert texts[0] == "an H&E image of normal skin." and len(texts) == 6


def test_background_class_takes_index_zero_and_background_key(tmp_path):
    text = """
classes:
  tumor: [tumor, carcinoma]
  background: {names: [glass]}
  stroma: {color: [1, 2, 3]}
background: stroma
"""
    p = load_prompts(write(tmp_path, text))
    assert [(c.name, c.index) for c in p.classes] == [
        ("background", 0),
        ("tumor", 1),
        ("stroma", 2),
    ]
    assert p.templates == DEFAULT_TEMPLATES
    assert p.classes[2].names == ("stroma",)  # no names: the class name itself
    assert p.background_index == 2
    assert list(p.scored_indices) == [0, 1, 2]
    assert p.table()[0]["name"] == "background"
    again = parse_prompts(p.to_dict(), source=p.source)
    assert again == p
    assert again.fingerprint() == p.fingerprint()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("classes: [unclosed", "invalid YAML at line 1"),
        ("- a\n- b\n", "must be a mapping"),
        ("templates: ['{}']\n", "'classes' must be a non-empty mapping"),
        ("classes: {}\n", "'classes' must be a non-empty mapping"),
        ("classes:\n  tumor: {names: []}\n", "classes.tumor.names is empty"),
        ("classes:\n  tumor: {names: [1, 2]}\n", "classes.tumor.names must be a list of strings"),
        ("classes:\n  tumor: {color: [300, 0, 0]}\n", "classes.tumor.color must be three integers"),
        ("classes:\n  tumor: {color: red}\n", "classes.tumor.color must be three integers"),
        ("classes:\n  tumor: {nams: [x]}\n", "classes.tumor: unknown key 'nams'"),
        ("templates: ['an image']\nclasses: {tumor: [x]}\n", "has no '{}'"),
        ("classes: {tumor: [x], gland: [y]}\nbackground: stroma\n", "'background' names 'stroma'"),
        ("classes: {tumor: [x]}\n", "only one class ('tumor')"),
        ("classes: {tumor: [x]}\nbackground: tumor\n", "only one class ('tumor')"),
        ("classes: {tumor: [x]}\nclases: 1\n", "unknown key 'clases'"),
        ("classes: {tumor: [x], Tumor: [y]}\n", "differ only in case"),
    ],
)
def test_bad_prompt_files_are_one_line_config_errors(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_prompts(path)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_missing_file_or_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="no such prompt file and not a shipped prompt set"):
        load_prompts(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"shipped: .*crc"):
        load_prompts("no-such-set")
    with pytest.raises(ConfigError, match="not a file"):
        load_prompts(tmp_path)


def test_shipped_library():
    assert {"crc", "skin", "breast"} <= set(library_names())
    crc = load_prompts("crc")
    names = [c.name for c in crc.classes]
    assert len(names) == 9
    assert names[0] == "background" and crc.classes[0].index == 0
    for expected in (
        "adipose",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ):
        assert expected in names
    assert [r["index"] for r in crc.table()] == list(range(9))
    skin = load_prompts("skin")
    assert [c.name for c in skin.classes] == ["tumor", "normal"]
    assert len(load_prompts("breast").classes) >= 4


def test_a_path_wins_over_a_library_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "classes: {only: [x], other: [y]}\n", name="crc")
    assert [c.name for c in load_prompts("crc").classes] == ["only", "other"]


# --------------------------------------------------------------------------- ensemble maths


def test_ensemble_normalises_rows_then_mean_then_renormalises():
    v = np.array([[2.0, 0.0], [0.0, 0.5]])
    before = v.copy()
    out = ensemble(v)
    np.testing.assert_allclose(out, [2**-0.5, 2**-0.5], rtol=1e-6)
    np.testing.assert_array_equal(v, before)  # input untouched
    np.testing.assert_allclose(ensemble(np.array([[0.0, 3.0, 4.0]])), [0, 0.6, 0.8], rtol=1e-6)
    # three vectors: mean of unit rows (1,0,0), (0,1,0), (0.6,0.8,0) then unit length
    w = np.array([[5.0, 0, 0], [0, 2.0, 0], [3.0, 4.0, 0]])
    expected = np.array([1.6, 1.8, 0.0]) / np.linalg.norm([1.6, 1.8, 0.0])
    np.testing.assert_allclose(ensemble(w), expected, rtol=1e-6)
    with pytest.raises(ValueError):
        ensemble(np.zeros((0, 3)))


class TableEncoder(Encoder):
    """Texts → fixed vectors from a table; records every call."""

    name = "table"
    input_size = 32
    mpp = 1.0
    embed_dim = 3
    provenance: ClassVar[dict] = {}

    def __init__(self, table):
        self.table = table
        self.calls: list[list[str]] = []

    def encode_images(self, images):
        raise AssertionError("not used")

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        return l2_normalise(np.array([self.table[t] for t in texts], np.float32))


def test_class_embeddings_average_every_name_in_every_template():
    prompts = parse_prompts(
        {
            "templates": ["a {}.", "the {}!"],
            "classes": {"x": {"names": ["p", "q"]}, "y": {"names": ["r"], "descriptions": ["D"]}},
        }
    )
    table = {
        "a p.": [1, 0, 0],
        "the p!": [0, 1, 0],
        "a q.": [0, 0, 2],
        "the q!": [0, 0, 1],
        "a r.": [1, 1, 0],
        "the r!": [1, 1, 0],
        "D": [0, 0, 1],
    }
    enc = TableEncoder(table)
    out = class_embeddings(enc, prompts)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == 7  # one encoder call for all texts
    x = np.array([1, 1, 2.0]) / np.linalg.norm([1, 1, 2.0])  # mean of unit vectors, renormalised
    y_mean = (np.array([1, 1, 0]) / 2**0.5 * 2 + np.array([0, 0, 1])) / 3
    y = y_mean / np.linalg.norm(y_mean)
    np.testing.assert_allclose(out, np.stack([x, y]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_class_embeddings_with_the_synthetic_encoder_are_its_class_vectors():
    from zeropath.testing.synthetic import SyntheticEncoder

    enc = SyntheticEncoder({"tumor": (130, 60, 140), "stroma": (230, 150, 190)})
    p = parse_prompts({"classes": {"tumor": ["tumor", "tumor cells"], "stroma": ["stroma"]}})
    np.testing.assert_allclose(class_embeddings(enc, p), enc.class_vectors[:2], atol=1e-6)


# --------------------------------------------------------------------------- LLM hook


class _ChatHandler(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []
    headers_seen: ClassVar[list[dict]] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        type(self).headers_seen.append(dict(self.headers))
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        name = user.split(" visual descriptions of ")[1].split(" (")[0]
        content = "```json\n" + json.dumps([f"{name} look {i}" for i in range(3)]) + "\n```"
        answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _ChatHandler.requests = []
    _ChatHandler.headers_seen = []
    _ChatHandler.status = 200
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_generate_descriptions_queries_once_and_caches(tmp_path, chat_server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sekret")
    cache = tmp_path / "descriptions.yaml"
    classes = {"tumor": ["tumor", "carcinoma"], "stroma": ["stroma"]}
    out = generate_descriptions(classes, chat_server, "tiny", "TEST_LLM_KEY", n=3, cache=cache)
    assert out == {
        "tumor": ["tumor look 0", "tumor look 1", "tumor look 2"],
        "stroma": ["stroma look 0", "stroma look 1", "stroma look 2"],
    }
    assert len(_ChatHandler.requests) == 2
    assert _ChatHandler.requests[0]["path"] == "/v1/chat/completions"
    assert _ChatHandler.requests[0]["model"] == "tiny"
    assert _ChatHandler.headers_seen[0]["Authorization"] == "Bearer sekret"
    assert yaml.safe_load(cache.read_text())["tiny"]["tumor"][0] == "tumor look 0"
    again = generate_descriptions(classes, chat_server, "tiny", "TEST_LLM_KEY", n=3, cache=cache)
    assert again == out and len(_ChatHandler.requests) == 2  # all from the cache

    prompts = parse_prompts({"classes": {"tumor": ["tumor"], "stroma": ["stroma"]}})
    richer = with_descriptions(prompts, out)
    assert richer.classes[0].descriptions == tuple(out["tumor"])
    assert "tumor look 1" in richer.classes[0].texts(richer.templates)
    assert prompts.classes[0].descriptions == ()  # the original is unchanged


def test_generate_descriptions_errors(chat_server):
    _ChatHandler.status = 500
    with pytest.raises(DescriptionError, match="HTTP 500"):
        generate_descriptions({"tumor": ["tumor"]}, chat_server, "tiny", None)
    with pytest.raises(DescriptionError, match="cannot reach"):
        generate_descriptions(
            {"tumor": ["tumor"]}, "http://127.0.0.1:9/v1", "tiny", None, timeout=2
        )


def test_describe_cli_writes_a_loadable_prompt_file(tmp_path, chat_server):
    src = write(tmp_path, INTERFACE_EXAMPLE)
    out = tmp_path / "richer.yaml"
    result = CliRunner().invoke(
        cli,
        [
            "tissue",
            "describe",
            str(src),
            "--url",
            chat_server,
            "--model",
            "m",
            "--out",
            str(out),
            "--n",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    p = load_prompts(out)
    assert p.classes[0].descriptions == ("tumor look 0", "tumor look 1")
    assert p.classes[0].names == ("tumor", "carcinoma", "malignant spindle cells")
