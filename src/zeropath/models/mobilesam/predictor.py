"""Prompted and automatic MobileSAM masks on numpy images, with cached image embeddings.

:class:`SamPredictor` follows the official ``SamPredictor`` (same resize rule, normalisation,
padding and mask post-processing) and adds what this project needs:

* the image embedding (about a second or more per image on two CPU cores) is cached in an LRU
  dict keyed by a hash of the pixels and the weights, and optionally in a directory of ``.npy``
  files that survives the process;
* many prompts at once: one point (or box) per nucleus, decoded in chunks;
* *windows*: with ``window_px`` each prompt's mask is only computed in a square window around it,
  which is exact inside the window and several times faster (the mask upscaling and the
  resizing to the image dominate the decoder's cost); pixels outside are background;
* :meth:`SamPredictor.predict_labels`: one label per prompt, overlaps resolved by predicted IoU;
* :meth:`SamPredictor.automatic_masks`: the essentials of SAM's automatic mask generator
  (point grid, predicted-IoU and stability filters, box NMS) as an instance label image.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zeropath.models.mobilesam.sam import MobileSAM, load_mobilesam
from zeropath.stain import as_rgb

__all__ = [
    "MaskCrop",
    "SamPredictor",
    "box_nms",
    "get_preprocess_shape",
    "resize_longest_side",
    "stability_score",
]

#: logit given to low-resolution pixels outside a prompt's window
OUTSIDE_LOGIT = -32.0


def get_preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Size ``(h', w')`` with the longest side ``long_side`` (the official rounding rule)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Bilinear (PIL) resize so that the longest side is ``long_side``, like SAM's transform."""
    from PIL import Image

    h, w = rgb.shape[:2]
    nh, nw = get_preprocess_shape(h, w, long_side)
    if (nh, nw) == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))


def stability_score(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """SAM's stability: IoU of the masks thresholded at ``threshold ± offset`` (last 2 axes;
    0 where even the looser mask is empty). Accepts numpy arrays and CPU tensors."""
    lg = np.asarray(logits)
    inter = (lg > threshold + offset).sum(axis=(-1, -2))
    union = (lg > threshold - offset).sum(axis=(-1, -2))
    return inter / np.maximum(union, 1)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression of ``(N, 4)`` x0, y0, x1, y1 boxes: kept indices, best
    first. Box areas are ``(x1 - x0) * (y1 - y0)``, as in torchvision. Memory is O(N)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        if len(rest) == 0:
            break
        w = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])
        h = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive[rest[iou > iou_threshold]] = False
    return order[np.array(keep, np.int64)]


def _interp_matrix(out_len: int, in_len: int) -> np.ndarray:
    """``(out_len, in_len)`` matrix of 1-D bilinear resizing, ``align_corners=False``
    (PyTorch's convention: negative source positions clamp to 0)."""
    scale = in_len / out_len
    src = np.maximum((np.arange(out_len) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    lam = src - i0
    m = np.zeros((out_len, in_len))
    rows = np.arange(out_len)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


class _Axis:
    """Low-res logits → original pixels along one axis: upscale to the model input size, crop
    the padding, resize to the original size; the composition is one sparse matrix."""

    def __init__(self, orig_len: int, input_len: int, img_size: int, low_len: int) -> None:
        up = _interp_matrix(img_size, low_len)[:input_len]
        m = _interp_matrix(orig_len, input_len) @ up
        m[np.abs(m) < 1e-12] = 0.0
        nz = m != 0
        self.matrix = m.astype(np.float32)
        self.first = nz.argmax(1)  # first and last low-res index each output pixel reads
        self.last = low_len - 1 - nz[:, ::-1].argmax(1)

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Output pixels ``[a, b)`` that read only low-res indices in ``[lo, hi)``."""
        a = int(np.searchsorted(self.first, lo, side="left"))
        b = int(np.searchsorted(self.last, hi - 1, side="right"))
        return a, max(a, b)


@dataclass(frozen=True)
class MaskCrop:
    """One predicted mask as a crop of the image: ``mask[r0:r0+h, c0:c0+w]``."""

    r0: int
    c0: int
    mask: np.ndarray  # bool (h, w)
    iou: float  # the model's predicted IoU
    stability: float = float("nan")
    truncated: bool = False  # touches its window's border: the object may extend beyond

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def bbox(self) -> tuple[int, int, int, int] | None:
        """Tight (x0, y0, x1, y1) box, inclusive, in image pixels (None when empty)."""
        rows = np.flatnonzero(self.mask.any(1))
        if len(rows) == 0:
            return None
        cols = np.flatnonzero(self.mask.any(0))
        return (
            self.c0 + int(cols[0]),
            self.r0 + int(rows[0]),
            self.c0 + int(cols[-1]),
            self.r0 + int(rows[-1]),
        )


class SamPredictor:
    """MobileSAM on one image at a time, with embedding caches.

    ``model`` defaults to :func:`load_mobilesam` (the official weights from the registry).
    ``cache_size`` embeddings stay in memory; with ``cache_dir`` they are also saved there as
    ``.npy`` files named by the sha256 of the pixels and the weights. ``chunk_size`` prompts go
    through the decoder at once.
    """

    def __init__(
        self,
        model: MobileSAM | None = None,
        *,
        cache_size: int = 8,
        cache_dir: str | os.PathLike[str] | None = None,
        chunk_size: int = 64,
    ) -> None:
        self.model = (model if model is not None else load_mobilesam()).eval()
        self.cache_size = int(cache_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.chunk_size = max(1, int(chunk_size))
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._weights_tag: str | None = None
        self.stats = {"hits": 0, "disk_hits": 0, "misses": 0}
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.image_key: str | None = None
        self._axes: tuple[_Axis, _Axis] | None = None

    # ------------------------------------------------------------------ image and caches

    @property
    def img_size(self) -> int:
        return self.model.img_size

    def _weights_id(self) -> str:
        if self._weights_tag is None:
            tag = self.model.weights_id
            if tag is None:  # unnamed weights: fingerprint the parameters
                h = hashlib.sha256()
                for name, t in self.model.state_dict().items():
                    h.update(name.encode())
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
                tag = h.hexdigest()
            self._weights_tag = tag
        return self._weights_tag

    def image_hash(self, rgb: np.ndarray) -> str:
        """Cache key of an RGB image: sha256 of its pixels, shape, the input size and weights."""
        arr = np.ascontiguousarray(as_rgb(rgb))
        h = hashlib.sha256()
        h.update(f"mobilesam|{self._weights_id()}|{self.img_size}|{arr.shape}|".encode())
        h.update(arr.tobytes())
        return h.hexdigest()

    def set_image(self, rgb: np.ndarray) -> bool:
        """Compute (or fetch from a cache) the embedding of an ``H×W×3`` RGB image.

        Returns True when the embedding came from a cache.
        """
        arr = as_rgb(rgb)
        h, w = arr.shape[:2]
        if h < 1 or w < 1:
            raise ValueError(f"empty image of shape {arr.shape}")
        key = self.image_hash(arr)
        self.original_size = (h, w)
        self.input_size = get_preprocess_shape(h, w, self.img_size)
        self.image_key = key
        self._axes = None
        feats = self._memory.get(key)
        hit = feats is not None
        if hit:
            self._memory.move_to_end(key)
            self.stats["hits"] += 1
        else:
            feats = self._load_disk(key)
            if feats is not None:
                self.stats["disk_hits"] += 1
                hit = True
            else:
                self.stats["misses"] += 1
                feats = self._encode(arr)
                self._save_disk(key, feats)
            self._remember(key, feats)
        self.features = feats
        return hit

    def _encode(self, rgb: np.ndarray) -> torch.Tensor:
        resized = resize_longest_side(rgb, self.img_size)
        x = torch.from_numpy(np.array(resized, np.uint8)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            x = x.to(self.model.device)
            return self.model.encode(self.model.preprocess(x)).clone()

    def _remember(self, key: str, feats: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        self._memory[key] = feats
        self._memory.move_to_end(key)
        while len(self._memory) > self.cache_size:
            self._memory.popitem(last=False)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.npy"

    def _load_disk(self, key: str) -> torch.Tensor | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable entry: recompute and overwrite
        return torch.from_numpy(np.ascontiguousarray(arr, np.float32)).to(self.model.device)

    def _save_disk(self, key: str, feats: torch.Tensor) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, feats.detach().cpu().numpy().astype(np.float32))
        os.replace(tmp, path)

    def clear_cache(self) -> None:
        """Forget the in-memory embeddings (the cache directory is left alone)."""
        self._memory.clear()

    def _require_image(self) -> None:
        if self.features is None or self.original_size is None:
            raise RuntimeError("call set_image() before predicting")

    # ------------------------------------------------------------------ coordinate frames

    def transform_coords(self, xy: np.ndarray) -> np.ndarray:
        """(x, y) pixels of the original image → the model's input frame."""
        self._require_image()
        h, w = self.original_size
        nh, nw = self.input_size
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] *= nw / w
        out[..., 1] *= nh / h
        return out

    def transform_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """x0, y0, x1, y1 boxes of the original image → the model's input frame."""
        b = np.asarray(boxes, np.float64).reshape(-1, 2, 2)
        return self.transform_coords(b).reshape(-1, 4)

    # ------------------------------------------------------------------ official-style core

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official ``predict_torch``: prompts already in the input frame, one batch.

        Returns masks ``(B, M, H, W)`` at the original size (bool, or logits), IoU predictions
        ``(B, M)`` and low-resolution logits ``(B, M, 256, 256)``.
        """
        self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        low, iou = self.model.decode(self.features, points, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low

    # ------------------------------------------------------------------ batched prompts

    def _prompts(
        self,
        points_xy: np.ndarray | None,
        point_labels: np.ndarray | None,
        boxes: np.ndarray | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, np.ndarray]:
        """Prompts as input-frame tensors, and each prompt's centre in original pixels."""
        coords = labels = box_t = None
        centres = []
        n = None
        if points_xy is not None:
            pts = np.asarray(points_xy, np.float64)
            if pts.ndim == 2:
                pts = pts[:, None, :]
            if pts.ndim != 3 or pts.shape[-1] != 2:
                raise ValueError(f"points_xy must be (N, 2) or (N, K, 2), got {pts.shape}")
            lab = (
                np.ones(pts.shape[:2], np.int64)
                if point_labels is None
                else np.asarray(point_labels, np.int64).reshape(pts.shape[:2])
            )
            n = len(pts)
            coords = torch.as_tensor(self.transform_coords(pts), dtype=torch.float32)
            labels = torch.as_tensor(lab)
            pos = lab > 0
            cnt = np.maximum(pos.sum(1, keepdims=True), 1)
            c = np.where(pos[..., None], pts, 0.0).sum(1) / cnt
            centres.append(np.where(pos.any(1)[:, None], c, pts.mean(1)))
        if boxes is not None:
            b = np.asarray(boxes, np.float64).reshape(-1, 4)
            if n is not None and len(b) != n:
                raise ValueError(f"{len(b)} boxes for {n} point prompts")
            n = len(b)
            box_t = torch.as_tensor(self.transform_boxes(b), dtype=torch.float32)
            centres = [np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)]
        if n is None:
            raise ValueError("give points_xy and/or boxes")
        return coords, labels, box_t, centres[0]

    def _window_cells(self, window_px: float | None) -> int | None:
        emb = self.model.prompt_encoder.image_embedding_size[0]
        if window_px is None:
            return None
        scale = self.img_size / max(self.original_size)
        cells = math.ceil(window_px * scale * emb / self.img_size) + 1
        return cells if cells < emb else None

    def _decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        centres: np.ndarray,
        multimask: bool,
        cells: int | None,
        choice: str | int | None,
    ):
        """Yield numpy ``(index slice, low-res logits (b, M, L, L), iou (b, M), origins (b, 2))``
        per chunk; ``origins`` are low-res (row, col) offsets of the windows."""
        self._require_image()
        emb = self.model.prompt_encoder.image_embedding_size[0]
        low_per_cell = self.model.prompt_encoder.mask_input_size[0] // emb
        n = len(centres)
        cin = self.transform_coords(centres) / (self.img_size / emb)  # embedding cells (x, y)
        for s in range(0, n, self.chunk_size):
            sl = slice(s, min(n, s + self.chunk_size))
            pts = (coords[sl], labels[sl]) if coords is not None else None
            bx = boxes[sl] if boxes is not None else None
            with torch.inference_mode():
                sparse, dense = self.model.prompt_encoder(pts, bx, None)
                if cells is None:
                    origin = torch.zeros((sl.stop - s, 2), dtype=torch.long)
                    wo = None
                else:
                    c = np.floor(cin[sl][:, ::-1] - cells / 2 + 0.5).astype(np.int64)
                    origin = torch.from_numpy(np.clip(c, 0, emb - cells))
                    wo = origin
                low, iou = self.model.mask_decoder.predict_masks(
                    self.features,
                    self.model.prompt_encoder.get_dense_pe(),
                    sparse,
                    dense,
                    window_origin=wo,
                    window_cells=cells or 0,
                )
                sel = slice(1, None) if multimask else slice(0, 1)
                low, iou = low[:, sel], iou[:, sel]
                if choice is not None and low.shape[1] > 1:
                    best = _choose(low, iou, choice)
                    ar = torch.arange(len(best))
                    low, iou = low[ar, best][:, None], iou[ar, best][:, None]
            yield sl, low.numpy(), iou.numpy(), (origin * low_per_cell).numpy()

    def _axes_for_image(self) -> tuple[_Axis, _Axis]:
        if self._axes is None:
            low = self.model.prompt_encoder.mask_input_size[0]
            (h, w), (ih, iw) = self.original_size, self.input_size
            self._axes = (
                _Axis(h, ih, self.img_size, low),
                _Axis(w, iw, self.img_size, low),
            )
        return self._axes

    def _crop_logits(self, low: np.ndarray, origin: tuple[int, int]) -> tuple[int, int, np.ndarray]:
        """Window logits ``(M, L, L)`` at low-res ``origin`` → ``(r0, c0, (M, h, w))`` logits at
        the original resolution over the pixels that read only inside the window.

        numpy on purpose: these small products run single-threaded there, whereas torch's thread
        pool stalls on each of them when the other cores are busy."""
        ay, ax = self._axes_for_image()
        lh, lw = low.shape[-2:]
        (y0, x0) = origin
        r0, r1 = ay.span(y0, y0 + lh)
        c0, c1 = ax.span(x0, x0 + lw)
        my = ay.matrix[r0:r1, y0 : y0 + lh]
        mx = ax.matrix[c0:c1, x0 : x0 + lw]
        return r0, c0, my @ low @ mx.T

    def predict_crops(
        self,
        points_xy: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = False,
        window_px: float | None = 96.0,
        stability_offset: float = 1.0,
        choice: str | int = "iou",
    ) -> list[MaskCrop]:
        """One mask per prompt, as crops: the memory-light form of :meth:`predict` (same
        arguments). A mask is computed inside a ``window_px`` square (original pixels) around
        its prompt; ``None`` computes whole-image masks (exact SAM output, slower).
        """
        coords, labels, box_t, centres = self._prompts(points_xy, point_labels, boxes)
        cells = self._window_cells(window_px)
        out: list[MaskCrop] = []
        thr = self.model.mask_threshold
        for _, low, iou, origins in self._decode(
            coords, labels, box_t, centres, multimask, cells, choice
        ):
            for i in range(len(low)):
                r0, c0, logits = self._crop_logits(low[i], tuple(origins[i].tolist()))
                lg = logits[0]
                mask = lg > thr
                stab = float(stability_score(lg, thr, stability_offset))
                crop = MaskCrop(r0, c0, mask, float(iou[i, 0]), stab)
                if cells is not None and _touches_window(crop, self.original_size):
                    crop = MaskCrop(r0, c0, mask, crop.iou, stab, truncated=True)
                out.append(crop)
        return out

    def predict(
        self,
        points_xy: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = False,
        window_px: float | None = None,
        choice: str | int = "iou",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for N prompts on the current image.

        ``points_xy`` is ``(N, 2)`` (one point per prompt) or ``(N, K, 2)`` in (x, y) pixels of
        the image given to :meth:`set_image`; ``point_labels`` ``(N,)``/``(N, K)`` are 1
        (foreground, the default) or 0 (background); ``boxes`` ``(N, 4)`` x0, y0, x1, y1.

        Without ``multimask`` SAM's single-mask output is returned. With it, one of its three
        masks per prompt by ``choice``: ``"iou"`` (highest predicted IoU, SAM's usual pick),
        ``"smallest"`` (smallest non-empty mask: on H&E single-point prompts it is the nucleus
        far more often than the others, which tend to cover tissue) or an index 0..2.

        Returns ``(masks bool (N, H, W), iou (N,), low_res_logits (N, 256, 256))``. With
        ``window_px`` masks are computed in a window around each prompt and the low-res
        logits outside it are ``OUTSIDE_LOGIT``.
        """
        coords, labels, box_t, centres = self._prompts(points_xy, point_labels, boxes)
        cells = self._window_cells(window_px)
        n = len(centres)
        h, w = self.original_size
        low_len = self.model.prompt_encoder.mask_input_size[0]
        masks = np.zeros((n, h, w), bool)
        ious = np.zeros(n, np.float32)
        lows = np.full((n, low_len, low_len), OUTSIDE_LOGIT, np.float32)
        for sl, low, iou, origins in self._decode(
            coords, labels, box_t, centres, multimask, cells, choice
        ):
            ious[sl] = iou[:, 0]
            for i in range(len(low)):
                k = sl.start + i
                y0, x0 = origins[i].tolist()
                lows[k, y0 : y0 + low.shape[-2], x0 : x0 + low.shape[-1]] = low[i, 0]
            if cells is None:
                for j in range(0, len(low), 8):
                    up = self.model.postprocess_masks(
                        torch.from_numpy(low[j : j + 8]), self.input_size, self.original_size
                    )
                    masks[sl.start + j : sl.start + j + len(up)] = (
                        up[:, 0] > self.model.mask_threshold
                    ).numpy()
            else:
                for i in range(len(low)):
                    r0, c0, lg = self._crop_logits(low[i], tuple(origins[i].tolist()))
                    hh, ww = lg.shape[-2:]
                    masks[sl.start + i, r0 : r0 + hh, c0 : c0 + ww] = (
                        lg[0] > self.model.mask_threshold
                    )
        return masks, ious, lows

    def predict_labels(
        self,
        points_xy: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = False,
        window_px: float | None = 96.0,
        min_iou: float = 0.0,
        drop_truncated: bool = True,
        choice: str | int = "iou",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Instance labels with label ``i + 1`` for prompt ``i``; where masks overlap the one
        with the higher predicted IoU wins. Prompts with predicted IoU below ``min_iou`` (and,
        with ``drop_truncated``, masks cut by their window) get no pixels.

        Returns ``(labels uint32 (H, W), iou float32 (N,))``.
        """
        crops = self.predict_crops(
            points_xy, point_labels, boxes, multimask, window_px, choice=choice
        )
        ious = np.array([c.iou for c in crops], np.float32)
        keep = [
            i
            for i, c in enumerate(crops)
            if c.iou >= min_iou and not (drop_truncated and c.truncated)
        ]
        return _paint(crops, keep, ious, self.original_size), ious

    # ------------------------------------------------------------------ automatic masks

    def automatic_masks(
        self,
        rgb: np.ndarray,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.8,
        stability_thresh: float = 0.9,
        stability_offset: float = 1.0,
        nms_iou: float = 0.7,
        min_area_px: int = 16,
        max_area_frac: float = 0.05,
        window_px: float | None = None,
    ) -> np.ndarray:
        """Label-free instance masks: SAM's automatic mask generator, essentials only.

        A ``points_per_side``² grid of single-point prompts (three masks each) on one image
        embedding; masks are kept when their predicted IoU ≥ ``pred_iou_thresh`` and stability
        score ≥ ``stability_thresh``, their area is within ``[min_area_px, max_area_frac`` of
        the image], then box NMS at ``nms_iou``; survivors are painted best-last (higher
        predicted IoU wins overlaps). ``window_px`` restricts each mask to a window around its
        point (faster; masks cut by the window are dropped, like SAM's crop-edge filter).

        Returns an instance label image, uint32, 0 = background.
        """
        cands = self.automatic_crops(
            rgb,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_thresh=stability_thresh,
            stability_offset=stability_offset,
            nms_iou=nms_iou,
            min_area_px=min_area_px,
            max_area_frac=max_area_frac,
            window_px=window_px,
        )
        h, w = self.original_size
        if not cands:
            return np.zeros((h, w), np.uint32)
        scores = np.array([c.iou for c in cands], np.float64)
        labels_img = _paint(cands, list(range(len(cands))), scores, (h, w))
        from zeropath.io.morphology import drop_small_labels

        return drop_small_labels(labels_img, min_area_px)

    def automatic_crops(
        self,
        rgb: np.ndarray,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.8,
        stability_thresh: float = 0.9,
        stability_offset: float = 1.0,
        nms_iou: float = 0.7,
        min_area_px: int = 16,
        max_area_frac: float = 0.05,
        window_px: float | None = None,
    ) -> list[MaskCrop]:
        """The masks :meth:`automatic_masks` paints (same arguments), before painting: tight
        :class:`MaskCrop` s that passed the filters and box NMS, best predicted IoU first.
        For callers that resolve overlaps or filter masks their own way."""
        self.set_image(rgb)
        h, w = self.original_size
        n = int(points_per_side)
        frac = (np.arange(n) + 0.5) / n
        gx, gy = np.meshgrid(frac * w, frac * h)
        pts = np.stack([gx.ravel(), gy.ravel()], 1)
        coords, labels, _, centres = self._prompts(pts, None, None)
        cells = self._window_cells(window_px)
        max_area = max_area_frac * h * w
        thr = self.model.mask_threshold
        cands: list[MaskCrop] = []
        for _, low, iou, origins in self._decode(coords, labels, None, centres, True, cells, None):
            # filter on predicted IoU before the costly resizing (same result, less work)
            idx_i, idx_m = np.nonzero(iou >= pred_iou_thresh)
            for j in range(0, len(idx_i), 8):
                bi, bm = idx_i[j : j + 8], idx_m[j : j + 8]
                if cells is None:  # whole-image masks, batched
                    logits = self.model.postprocess_masks(
                        torch.from_numpy(low[bi, bm][:, None]), self.input_size, self.original_size
                    )[:, 0]
                    pieces = [(0, 0, lg) for lg in logits.numpy()]
                else:
                    pieces = []
                    for i, m in zip(bi.tolist(), bm.tolist(), strict=True):
                        r0, c0, lg = self._crop_logits(
                            low[i, m : m + 1], tuple(origins[i].tolist())
                        )
                        pieces.append((r0, c0, lg[0]))
                for (r0, c0, lg), i, m in zip(pieces, bi.tolist(), bm.tolist(), strict=True):
                    stab = float(stability_score(lg, thr, stability_offset))
                    if stab < stability_thresh:
                        continue
                    mask = lg > thr
                    area = int(mask.sum())
                    if area < min_area_px or area > max_area:
                        continue
                    crop = _tight(MaskCrop(r0, c0, mask, float(iou[i, m]), stab))
                    if cells is not None and _touches_window(MaskCrop(r0, c0, mask, 0.0), (h, w)):
                        continue
                    cands.append(crop)
        if not cands:
            return []
        boxes = np.array([c.bbox() for c in cands], np.float64)
        scores = np.array([c.iou for c in cands], np.float64)
        keep = box_nms(boxes, scores, nms_iou)
        return [cands[i] for i in keep.tolist()]


def _choose(low: torch.Tensor, iou: torch.Tensor, choice: str | int) -> torch.Tensor:
    """Index of the chosen mask per prompt among ``(B, M, L, L)`` logits."""
    if choice == "iou":
        return iou.argmax(1)
    if choice == "smallest":
        area = (low > 0).sum((-1, -2)).float()
        area = torch.where(area > 0, area, torch.full_like(area, float("inf")))
        return area.argmin(1)
    if isinstance(choice, int) and 0 <= choice < low.shape[1]:
        return torch.full((low.shape[0],), choice, dtype=torch.long)
    raise ValueError(f"choice must be 'iou', 'smallest' or an index < {low.shape[1]}: {choice!r}")


def _tight(crop: MaskCrop) -> MaskCrop:
    """The same mask cropped to its bounding box (keeps candidate lists small)."""
    box = crop.bbox()
    if box is None:
        return crop
    x0, y0, x1, y1 = box
    sub = crop.mask[y0 - crop.r0 : y1 - crop.r0 + 1, x0 - crop.c0 : x1 - crop.c0 + 1]
    return MaskCrop(y0, x0, sub.copy(), crop.iou, crop.stability, crop.truncated)


def _touches_window(crop: MaskCrop, shape: tuple[int, int]) -> bool:
    """True when the mask reaches a side of its crop that is not the image's own edge."""
    m = crop.mask
    h, w = shape
    return bool(
        (crop.r0 > 0 and m[0].any())
        or (crop.r0 + m.shape[0] < h and m[-1].any())
        or (crop.c0 > 0 and m[:, 0].any())
        or (crop.c0 + m.shape[1] < w and m[:, -1].any())
    )


def _paint(
    crops: list[MaskCrop], keep: list[int], scores: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Label ``i + 1`` for each kept crop ``i``; higher score wins where crops overlap."""
    out = np.zeros(shape, np.uint32)
    best = np.full(shape, -np.inf, np.float32)
    for i in keep:
        c = crops[i]
        hh, ww = c.mask.shape
        if hh == 0 or ww == 0:
            continue
        sub_best = best[c.r0 : c.r0 + hh, c.c0 : c.c0 + ww]
        sub_out = out[c.r0 : c.r0 + hh, c.c0 : c.c0 + ww]
        win = c.mask & (scores[i] > sub_best)
        sub_out[win] = i + 1
        sub_best[win] = scores[i]
    return out
