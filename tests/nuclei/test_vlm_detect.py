"""Text-prompted detector: real OWLv2/OWL-ViT classes with tiny random weights, offline."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from zeropath.errors import ModelError
from zeropath.nuclei.centres import Points
from zeropath.nuclei.detect import Detector
from zeropath.nuclei.vlm_detect import TextPromptDetector, _tile_origins
from zeropath.testing import render_nuclei

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

PROMPTS = ("a dark purple round nucleus", "a cell nucleus")


def _tiny_tokenizer(tmp_path):
    """A CLIP tokenizer over single letters, built from files written here (no download).

    OWL-ViT treats a query whose first token id is 0 as padding, so id 0 is a spare token.
    """
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    cls = transformers.CLIPTokenizer
    if "vocab" in inspect.signature(cls.__init__).parameters:  # transformers >= 5
        return cls(vocab=vocab, merges=[]), len(vocab)
    return cls(
        vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt")
    ), len(vocab)


def _tiny_model(kind: str, vocab_size: int):
    config_cls, model_cls = {
        "owlv2": (transformers.Owlv2Config, transformers.Owlv2ForObjectDetection),
        "owlvit": (transformers.OwlViTConfig, transformers.OwlViTForObjectDetection),
    }[kind]
    config = config_cls(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
        vision_config={
            "image_size": 64,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    return model_cls(config).eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny OWLv2 (random weights + tokenizer) loadable with from_pretrained."""
    path = tmp_path_factory.mktemp("owlv2-tiny")
    tok, n = _tiny_tokenizer(path)
    model = _tiny_model("owlv2", n)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_loads_local_folder_and_detects(tiny_dir, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    det = TextPromptDetector(
        model=str(tiny_dir),
        prompts=PROMPTS,
        tile_px=128,
        overlap_px=16,
        score_threshold=0.0,
        diameter_um=(0.0, 1e9),  # random weights: any box size
    )
    assert isinstance(det, Detector)
    rgb, _, _ = render_nuclei((300, 260), n=10, seed=0)
    before = rgb.copy()
    pts = det.detect(rgb, 0.25)  # 0.25 µm/px input → 150×130 at the 0.5 µm/px detection grid
    assert np.array_equal(rgb, before)
    assert isinstance(pts, Points) and len(pts) > 0
    assert pts.xy.dtype == np.float64 and pts.score.dtype == np.float32
    assert np.all((pts.score >= 0) & (pts.score <= 1))
    assert np.all((pts.xy[:, 0] >= -0.5) & (pts.xy[:, 0] <= 259.5))
    assert np.all((pts.xy[:, 1] >= -0.5) & (pts.xy[:, 1] <= 299.5))
    # merged across tiles: no two points closer than the NMS radius (2.5 µm = 10 px here)
    d = np.linalg.norm(pts.xy[:, None] - pts.xy[None], axis=2) + np.eye(len(pts)) * 1e9
    assert d.min() >= 10 - 1e-6
    again = det.detect(rgb, 0.25)
    assert np.array_equal(again.xy, pts.xy) and np.array_equal(again.score, pts.score)


def test_owlvit_module_given_directly(tmp_path) -> None:
    tok, n = _tiny_tokenizer(tmp_path)
    det = TextPromptDetector(
        model=_tiny_model("owlvit", n),
        tokenizer=tok,
        prompts=PROMPTS,
        tile_px=96,
        overlap_px=8,
        score_threshold=0.0,
        diameter_um=(0.0, 1e9),
    )
    tile = render_nuclei((96, 96), n=4, seed=1)[0]
    pts = det.detect_tile(tile, 0.5)
    assert 0 < len(pts) <= 64  # at most one box per 8×8 patch of the 64² input
    with pytest.raises(ValueError):
        TextPromptDetector(model=_tiny_model("owlvit", n))  # module without tokenizer


def test_boxes_to_points_post_processing(tmp_path) -> None:
    tok, n = _tiny_tokenizer(tmp_path)
    det = TextPromptDetector(
        model=_tiny_model("owlvit", n),
        tokenizer=tok,
        tile_px=100,
        overlap_px=10,
        score_threshold=0.3,
        min_distance_um=2.0,
        diameter_um=(2.0, 20.0),
    )
    logits = np.array([[3.0, -1.0], [-3.0, -2.0], [0.0, 2.0], [1.0, 1.0], [4.0, 0.0]])
    boxes = np.array(
        [
            [0.105, 0.205, 0.1, 0.1],  # centre (10, 20) px, 10 px = 5 µm wide: kept
            [0.5, 0.5, 0.1, 0.1],  # score sigmoid(-2) < 0.3: dropped
            [0.805, 0.605, 0.01, 0.01],  # 1 px = 0.5 µm: too small, dropped
            [0.955, 0.955, 0.1, 0.1],  # centre (95, 95) outside an 80×80 tile: dropped
            [0.115, 0.205, 0.1, 0.1],  # 1 px from the first, higher score: wins the NMS
        ]
    )
    pts = det.boxes_to_points(logits, boxes, 100, (80, 80), 0.5)
    assert len(pts) == 1
    assert np.allclose(pts.xy[0], [11.0, 20.0])
    assert pts.score[0] == pytest.approx(1 / (1 + np.exp(-4.0)))


def test_tiles_cover_and_merge_without_duplicates(monkeypatch) -> None:
    """A fake model that reports the darkest spot of each tile: blobs on tile borders are
    found once, in input coordinates."""

    class FakeOutput:
        def __init__(self, logits, boxes):
            self.logits, self.pred_boxes = logits, boxes

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.config = type("C", (), {"vision_config": type("V", (), {"image_size": 64})()})()

        def forward(self, pixel_values, input_ids, attention_mask):
            img = pixel_values[0].sum(0)
            flat = int(torch.argmin(img))
            r, c = divmod(flat, img.shape[1])
            box = torch.tensor([[[(c + 0.5) / 64, (r + 0.5) / 64, 0.1, 0.1]]])
            return FakeOutput(torch.tensor([[[5.0, 5.0]]]), box)

    class Tok:
        def __call__(self, texts, **kw):
            ids = torch.zeros(len(texts), 16, dtype=torch.long)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    blobs = [(60, 62), (150, 40), (100, 150)]  # (row, col); the first straddles tile borders
    yy, xx = np.mgrid[0:200, 0:200]
    dark = np.zeros((200, 200))
    for r, c in blobs:
        dark = np.maximum(dark, np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 18.0))
    rgb = np.repeat((230 - 190 * dark)[..., None], 3, axis=2).round().astype(np.uint8)
    det = TextPromptDetector(
        model=Fake(),
        tokenizer=Tok(),
        tile_px=64,
        overlap_px=8,
        score_threshold=0.5,
        min_distance_um=4.0,
        diameter_um=(0.0, 1e9),
    )
    pts = det.detect(rgb, 0.5)
    got = sorted(map(tuple, np.round(pts.xy[:, ::-1]).astype(int).tolist()))
    assert got == sorted(blobs)
    origins = _tile_origins(200, 200, 64, 8)
    covered = np.zeros((200, 200), bool)
    for r0, c0 in origins:
        covered[r0 : r0 + 64, c0 : c0 + 64] = True
    assert covered.all()


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    det = TextPromptDetector(model="google/owlv2-base-patch16-ensemble")
    rgb = np.full((64, 64, 3), 200, np.uint8)
    with pytest.raises(ModelError) as err:
        det.detect(rgb, 0.5)
    msg = str(err.value)
    assert "zeropath[vlm]" in msg and "huggingface-cli download" in msg
    assert "--detector-model" in msg
    with pytest.raises(ModelError, match="does not exist"):
        TextPromptDetector(model=str(tmp_path / "nowhere")).detect(rgb, 0.5)
