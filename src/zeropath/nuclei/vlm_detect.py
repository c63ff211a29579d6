"""Text-prompted coarse nucleus detection with an open-vocabulary detector (ZA-Net stage 1).

:class:`TextPromptDetector` runs OWLv2 / OWL-ViT from the ``transformers`` library
(``Owlv2ForObjectDetection`` / ``OwlViTForObjectDetection``) with prompts such as "a dark
purple round nucleus" over overlapping square tiles of the image at a chosen µm/px, turns
every predicted box into its centre point with the best prompt's score, keeps boxes of a
nucleus-like size, and merges the tiles with non-maximum suppression.

``transformers`` is an optional dependency (``pip install "zeropath[vlm]"``) and the weights
are downloaded by Hugging Face on first use; both are loaded lazily, on the first
:meth:`~TextPromptDetector.detect`. When they cannot be loaded a
:class:`~zeropath.errors.ModelError` says how to get them. ``HF_HUB_OFFLINE=1`` is respected
(only local files are tried).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError
from zeropath.nuclei.centres import Points, nms_points
from zeropath.nuclei.detect import from_work, to_work

__all__ = ["DEFAULT_MODEL", "DEFAULT_PROMPTS", "TextPromptDetector", "weights_help"]

DEFAULT_MODEL = "google/owlv2-base-patch16-ensemble"
DEFAULT_PROMPTS = (
    "a dark purple round nucleus",
    "a cell nucleus",
    "a purple stained nucleus in a histology image",
)
# CLIP's image normalisation, used by OWL-ViT and OWLv2.
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
_TEXT_MAX_LENGTH = 16  # OWL-ViT/OWLv2 text encoders have 16 positions


def weights_help(model: str = DEFAULT_MODEL) -> str:
    """How to make the detector's weights available (the message of a missing-model error)."""
    return (
        f"the text-prompted detector needs the transformers library and the weights of {model!r}. "
        'Install the extra with `pip install "zeropath[vlm]"`, then either run once on a machine '
        "with internet access (Hugging Face caches the weights), or download them with "
        f"`huggingface-cli download {DEFAULT_MODEL} --local-dir DIR` and pass "
        "`--detector-model DIR` (a local folder holding config.json, the weights and the "
        "tokenizer files). With HF_HUB_OFFLINE=1 only local files are tried."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


class TextPromptDetector:
    """Open-vocabulary nucleus detector; a :class:`~zeropath.nuclei.detect.Detector`.

    ``model`` is a Hugging Face model id, a local folder, or an already built
    ``Owlv2ForObjectDetection``/``OwlViTForObjectDetection`` module (then ``tokenizer`` must be
    given too). Tiles are ``tile_px`` square at ``detect_mpp`` µm/px, overlapping by
    ``overlap_px``, each resized to the model's input size. Boxes whose equivalent diameter
    lies outside ``diameter_um`` are dropped; points closer than ``min_distance_um`` are merged
    (best score kept).
    """

    name = "text-prompt"

    def __init__(
        self,
        model: str | os.PathLike[str] | Any = DEFAULT_MODEL,
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        tile_px: int = 256,
        overlap_px: int = 32,
        detect_mpp: float = 0.5,
        score_threshold: float = 0.1,
        min_distance_um: float = 2.5,
        diameter_um: tuple[float, float] = (2.0, 20.0),
        device: str = "cpu",
        tokenizer: Any = None,
    ) -> None:
        if not prompts:
            raise ValueError("at least one prompt is needed")
        if tile_px <= 2 * overlap_px:
            raise ValueError(f"tile_px ({tile_px}) must exceed twice overlap_px ({overlap_px})")
        self.prompts = tuple(str(p) for p in prompts)
        self.tile_px = int(tile_px)
        self.overlap_px = int(overlap_px)
        self.detect_mpp = float(detect_mpp)
        self.score_threshold = float(score_threshold)
        self.min_distance_um = float(min_distance_um)
        self.diameter_um = (float(diameter_um[0]), float(diameter_um[1]))
        self.device = device
        self._model_ref = model
        self._model: Any = None if isinstance(model, (str, os.PathLike)) else model
        self._tokenizer = tokenizer
        self._text: dict[str, Any] | None = None
        if self._model is not None and tokenizer is None:
            raise ValueError("a model given as a module needs its tokenizer")

    @property
    def model_name(self) -> str:
        ref = self._model_ref
        return str(ref) if isinstance(ref, (str, os.PathLike)) else type(ref).__name__

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "model": self.model_name,
            "prompts": list(self.prompts),
            "tile_px": self.tile_px,
            "overlap_px": self.overlap_px,
            "detect_mpp": self.detect_mpp,
            "score_threshold": self.score_threshold,
            "min_distance_um": self.min_distance_um,
            "diameter_um": list(self.diameter_um),
        }

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> TextPromptDetector:
        """Load the model and tokenizer now (otherwise done on the first detection)."""
        if self._model is None:
            self._model, self._tokenizer = _load_pretrained(self._model_ref, self.device)
        self._model.eval()
        if self._text is None:
            enc = self._tokenizer(
                list(self.prompts),
                padding="max_length",
                truncation=True,
                max_length=_TEXT_MAX_LENGTH,
                return_tensors="pt",
            )
            self._text = {
                "input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device),
            }
        return self

    def _image_size(self) -> int:
        size = self._model.config.vision_config.image_size
        return int(size if isinstance(size, int) else size[0])

    # -- detection -----------------------------------------------------------------------------

    def detect(self, rgb: np.ndarray, mpp: float) -> Points:
        """Nucleus centres of ``rgb`` (at ``mpp`` µm/px) in its own pixel coordinates."""
        work, ratios = to_work(rgb, mpp, self.detect_mpp)
        wmpp = mpp / ratios[0] if ratios != (1.0, 1.0) else mpp
        self.load()
        h, w = work.shape[:2]
        found = []
        for r0, c0 in _tile_origins(h, w, self.tile_px, self.overlap_px):
            tile = work[r0 : r0 + self.tile_px, c0 : c0 + self.tile_px]
            pts = self.detect_tile(tile, wmpp)
            if len(pts) == 0:
                continue
            keep = _in_core(pts.xy, r0, c0, h, w, self.tile_px, self.overlap_px)
            pts = pts.select(keep)
            found.append(Points(pts.xy + np.array([c0, r0], np.float64), pts.score))
        if not found:
            return Points.empty()
        merged = Points(
            np.concatenate([p.xy for p in found]), np.concatenate([p.score for p in found])
        )
        merged = nms_points(merged, self.min_distance_um / wmpp)
        return from_work(merged, ratios)

    def detect_tile(self, tile: np.ndarray, mpp: float) -> Points:
        """Points of one tile (at most ``tile_px`` square), in the tile's pixel coordinates."""
        import torch

        self.load()
        pixel_values = self._preprocess(tile)
        with torch.inference_mode():
            out = self._model(pixel_values=pixel_values, **self._text)
        logits = out.logits[0].float().cpu().numpy()  # (patches, prompts)
        boxes = out.pred_boxes[0].float().cpu().numpy()  # (patches, 4) cx, cy, w, h in [0, 1]
        return self.boxes_to_points(logits, boxes, self.tile_px, tile.shape[:2], mpp)

    def boxes_to_points(
        self,
        logits: np.ndarray,
        boxes: np.ndarray,
        square_px: int,
        shape: tuple[int, int],
        mpp: float,
    ) -> Points:
        """Model outputs of one (padded) square tile → centre points with scores.

        ``boxes`` are normalised ``(cx, cy, w, h)`` relative to the ``square_px`` square the
        tile was padded to; points outside the tile's ``shape`` or of an implausible size
        are dropped.
        """
        from scipy.special import expit

        score = expit(np.asarray(logits, np.float64).max(axis=1))
        boxes = np.asarray(boxes, np.float64) * square_px
        xy = boxes[:, :2] - 0.5  # pixel centres: a box from 0 to n is centred at n/2 - 0.5
        diameter = np.sqrt(np.clip(boxes[:, 2] * boxes[:, 3], 0, None)) * mpp
        keep = (
            (score >= self.score_threshold)
            & (diameter >= self.diameter_um[0])
            & (diameter <= self.diameter_um[1])
            & (xy[:, 0] >= -0.5)
            & (xy[:, 0] <= shape[1] - 0.5)
            & (xy[:, 1] >= -0.5)
            & (xy[:, 1] <= shape[0] - 0.5)
        )
        if not keep.any():
            return Points.empty()
        pts = Points(xy[keep], score[keep].astype(np.float32))
        return nms_points(pts, self.min_distance_um / mpp)

    def _preprocess(self, tile: np.ndarray) -> Any:
        """Pad to a grey ``tile_px`` square (bottom/right, like OWLv2), resize to the model's
        input size, CLIP-normalise; returns a ``(1, 3, S, S)`` float tensor."""
        import torch
        import torch.nn.functional as F

        size = self._image_size()
        arr = tile.astype(np.float32) / 255.0
        h, w = arr.shape[:2]
        square = np.full((self.tile_px, self.tile_px, 3), 0.5, np.float32)
        square[:h, :w] = arr[: self.tile_px, : self.tile_px]
        t = torch.from_numpy(square).permute(2, 0, 1)[None]
        if size != self.tile_px:
            t = F.interpolate(
                t,
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=size < self.tile_px,
            )
        mean = torch.from_numpy(_CLIP_MEAN)[None, :, None, None]
        std = torch.from_numpy(_CLIP_STD)[None, :, None, None]
        dtype = next(self._model.parameters()).dtype
        return ((t - mean) / std).to(device=self.device, dtype=dtype)


def _tile_origins(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of overlapping tiles covering an ``h × w`` image (last ones flush)."""
    step = tile - 2 * overlap

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, step))
        s.append(n - tile)
        return sorted(set(s))

    return [(r, c) for r in starts(h) for c in starts(w)]


def _in_core(
    xy: np.ndarray, r0: int, c0: int, h: int, w: int, tile: int, overlap: int
) -> np.ndarray:
    """Points of a tile that lie in its core (the overlap is trimmed except at image edges)."""
    x = xy[:, 0] + c0
    y = xy[:, 1] + r0
    lo_x = c0 + overlap if c0 > 0 else -np.inf
    lo_y = r0 + overlap if r0 > 0 else -np.inf
    hi_x = c0 + tile - overlap if c0 + tile < w else np.inf
    hi_y = r0 + tile - overlap if r0 + tile < h else np.inf
    return (x >= lo_x) & (x < hi_x) & (y >= lo_y) & (y < hi_y)


def _load_pretrained(ref: str | os.PathLike[str], device: str) -> tuple[Any, Any]:
    """Model and tokenizer from a Hugging Face id or a local folder, or a ModelError."""
    name = str(ref)
    try:
        import transformers
    except ImportError as exc:
        raise ModelError(weights_help(name)) from exc
    looks_local = os.sep in name or name.startswith(".") or Path(name).exists()
    if looks_local and not Path(name).is_dir():
        raise ModelError(f"detector model folder {name!r} does not exist; " + weights_help(name))
    local_only = _offline() or looks_local
    try:
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=local_only)
        classes = {
            "owlv2": transformers.Owlv2ForObjectDetection,
            "owlvit": transformers.OwlViTForObjectDetection,
        }
        if config.model_type not in classes:
            raise ModelError(
                f"{name!r} is a {config.model_type!r} model; the text-prompted detector needs "
                "an OWL-ViT or OWLv2 detection model"
            )
        model = classes[config.model_type].from_pretrained(
            name, config=config, local_files_only=local_only
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except ModelError:
        raise
    except Exception as exc:  # network, cache, file-format errors: all mean "no usable weights"
        raise ModelError(
            f"cannot load {name!r} ({exc.__class__.__name__}); {weights_help(name)}"
        ) from exc
    return model.to(device).eval(), tokenizer
