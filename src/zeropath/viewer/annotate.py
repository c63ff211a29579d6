"""The ``annotate`` mode: label the regions an active-learning run queued.

Routes (ids are those of ``OUT/queue/index.json`` only; anything else is a 404):

* ``GET /api/annotate/queue`` — ``{"queue", "regions": [{"id", "round", "done"}], "done",
  "total", "warnings"}``;
* ``GET /api/annotate/regions/<id>`` — the region: image name and size, ``box``, ``round``,
  ``classes`` (index, name, colour), ``unlabelled`` (the value saved for unpainted pixels, or
  null when every pixel needs a class), ``empty`` (the value of unpainted pixels in the page
  and in ``…/mask``), ``done``, ``dzi`` (URL of the image's Deep Zoom descriptor),
  ``position`` in the queue and the ``previous``/``next`` ids;
* ``GET /api/annotate/regions/<id>/image.png[?margin=PX]`` — the box's pixels (plus an
  optional margin) as a PNG crop;
* ``GET /api/annotate/regions/<id>/mask`` — the saved mask as JSON run lengths
  ``{"width", "height", "rle": [value, count, ...], "exists"}`` (all ``empty`` when none);
  ``…/mask.png`` — the stored PNG itself (404 when none);
* ``POST /api/annotate/regions/<id>/mask`` — save: a JSON body ``{"width", "height",
  "rle"}`` (``Content-Type: application/json``) or a greyscale PNG body (``image/png``),
  with the server's token (see :mod:`zeropath.viewer.server`); 400 for a malformed body,
  422 for a wrong size, a value that is not a class, or unpainted pixels where the queue
  has no unlabelled value;
* ``GET /annotate/dzi/<n>/image.dzi`` and ``…/image_files/L/C_R.jpeg`` — the image pyramid
  (one per image, shared by the regions cut from it).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import InputError
from zeropath.viewer.dzi import DeepZoom, DziGeometry, LRUCache, encode_image, slide_renderer
from zeropath.viewer.labelqueue import (
    AnnotationQueue,
    MaskError,
    QueueRegion,
    decode_mask_png,
    rle_decode,
    rle_encode,
)
from zeropath.viewer.server import HTTPError, Request, Response, Router, json_response

__all__ = ["AnnotateSession", "register_annotate_api"]

#: Widest margin of context the crop route adds around a box (level-0 pixels).
_MAX_MARGIN = 4096


class AnnotateSession:
    """The queue plus the opened images (one Deep Zoom pyramid each), shared by requests."""

    def __init__(self, queue: AnnotationQueue, cache_bytes: int = 128 << 20) -> None:
        self.queue = queue
        self.cache = LRUCache(cache_bytes)
        self._images: dict[Path, tuple[Any, DeepZoom]] = {}
        self._keys: dict[Path, int] = {}
        self._paths: list[Path] = []
        self._lock = threading.Lock()
        self._image_locks: dict[Path, threading.Lock] = {}

    @property
    def warnings(self) -> list[str]:
        return self.queue.warnings

    def image_key(self, path: Path) -> int:
        """A small stable number for ``path`` (the images' URLs never carry paths)."""
        with self._lock:
            if path not in self._keys:
                self._keys[path] = len(self._paths)
                self._paths.append(path)
            return self._keys[path]

    def image(self, path: Path) -> tuple[Any, DeepZoom]:
        """``(ImageSource, DeepZoom)`` of ``path``, opened on first use."""
        with self._lock:
            lock = self._image_locks.setdefault(path, threading.Lock())
        with lock:
            if path not in self._images:
                from zeropath.io.reader import open_image

                source = open_image(path)
                dz = DeepZoom(
                    DziGeometry(source.width, source.height),
                    slide_renderer(source),
                    "jpeg",
                    self.cache,
                    key=("annotate", str(path)),
                )
                self._images[path] = (source, dz)
            return self._images[path]

    def image_by_key(self, key: int) -> tuple[Any, DeepZoom]:
        with self._lock:
            if not 0 <= key < len(self._paths):
                raise KeyError(f"image {key}")
            path = self._paths[key]
        return self.image(path)

    def region_info(self, region: QueueRegion) -> dict[str, Any]:
        source, _ = self.image(region.image)
        ids = self.queue.ids
        pos = ids.index(region.id)
        _, _, x1, y1 = region.box
        info = region.to_dict()
        del info["image"]  # the page needs no server path
        info.update(
            {
                "image_width": source.width,
                "image_height": source.height,
                "inside": x1 <= source.width and y1 <= source.height,
                "done": self.queue.is_done(region.id),
                "dzi": f"annotate/dzi/{self.image_key(region.image)}/image.dzi",
                "position": pos,
                "total": len(ids),
                "previous": ids[pos - 1] if pos > 0 else None,
                "next": ids[pos + 1] if pos + 1 < len(ids) else None,
            }
        )
        return info

    def close(self) -> None:
        with self._lock:
            images = list(self._images.values())
            self._images.clear()
        for source, _ in images:
            try:
                source.close()
            except Exception:  # closing is best effort
                pass


def _region(session: AnnotateSession, request: Request) -> QueueRegion:
    rid = request.params["id"]
    try:
        return session.queue.region(rid)
    except KeyError:
        raise HTTPError(404, f"no region {rid!r} in the queue") from None


def _mask_from_request(request: Request, region: QueueRegion) -> np.ndarray:
    if request.content_type == "image/png":
        try:
            return decode_mask_png(request.body)
        except MaskError as exc:
            raise HTTPError(400, str(exc)) from None
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPError(400, "expected a JSON object {width, height, rle} or a PNG body")
    width, height = body.get("width"), body.get("height")
    if type(width) is not int or type(height) is not int:
        raise HTTPError(400, "the mask's width and height must be integers")
    if (width, height) != (region.width, region.height):
        raise MaskError(
            f"mask is {width}×{height} pixels, region {region.id!r} is "
            f"{region.width}×{region.height}"
        )
    if "rle" not in body:
        raise HTTPError(400, "the JSON body has no 'rle'")
    try:
        return rle_decode(body["rle"], region.width, region.height)
    except MaskError as exc:
        raise HTTPError(400, str(exc)) from None


def register_annotate_api(router: Router, session: AnnotateSession) -> None:
    """Add the ``annotate`` mode's API and tile routes to ``router``."""
    rid = r"(?P<id>[^/]+)"  # checked against the index by the queue

    @router.route("GET", r"/api/annotate/queue")
    def queue(request: Request) -> Response:
        return json_response(session.queue.summary())

    @router.route("GET", rf"/api/annotate/regions/{rid}")
    def region(request: Request) -> Response:
        return json_response(session.region_info(_region(session, request)))

    @router.route("GET", rf"/api/annotate/regions/{rid}/image\.png")
    def crop(request: Request) -> Response:
        reg = _region(session, request)
        margin = int(max(0.0, min(request.number("margin", 0.0), _MAX_MARGIN)))
        source, _ = session.image(reg.image)
        x0, y0, x1, y1 = reg.box
        pixels = source.read_region(
            x0 - margin, y0 - margin, x1 - x0 + 2 * margin, y1 - y0 + 2 * margin
        )
        return Response(
            200, encode_image(pixels, "png"), "image/png", {"Cache-Control": "no-cache"}
        )

    @router.route("GET", rf"/api/annotate/regions/{rid}/mask")
    def get_mask(request: Request) -> Response:
        reg = _region(session, request)
        mask = session.queue.read_mask(reg.id)
        exists = mask is not None
        if mask is None or mask.shape != (reg.height, reg.width):
            if exists:
                raise InputError(
                    session.queue.mask_path(reg.id),
                    f"the saved mask is {mask.shape[1]}×{mask.shape[0]}, "  # type: ignore[union-attr]
                    f"the region {reg.width}×{reg.height}",
                )
            mask = np.full((reg.height, reg.width), reg.empty, np.uint8)
        return json_response(
            {"width": reg.width, "height": reg.height, "rle": rle_encode(mask), "exists": exists}
        )

    @router.route("GET", rf"/api/annotate/regions/{rid}/mask\.png")
    def get_mask_png(request: Request) -> Response:
        reg = _region(session, request)
        path = session.queue.mask_path(reg.id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise HTTPError(404, f"region {reg.id!r} has no saved mask") from None
        return Response(200, data, "image/png", {"Cache-Control": "no-store"})

    @router.route("POST", rf"/api/annotate/regions/{rid}/mask")
    def post_mask(request: Request) -> Response:
        reg = _region(session, request)
        mask = _mask_from_request(request, reg)
        session.queue.save_mask(reg.id, mask)  # MaskError → 422
        values, counts = np.unique(mask, return_counts=True)
        per_class = {
            str(int(v)): int(n) for v, n in zip(values, counts, strict=True) if v != reg.empty
        }
        summary = session.queue.summary()
        return json_response(
            {
                "saved": reg.id,
                "labelled": int(sum(per_class.values())),
                "counts": per_class,
                "done": summary["done"],
                "total": summary["total"],
            }
        )

    @router.route("GET", r"/annotate/dzi/(?P<key>\d+)/image\.dzi")
    def descriptor(request: Request) -> Response:
        _, dz = session.image_by_key(int(request.params["key"]))
        return Response(
            200, dz.descriptor().encode(), "application/xml", {"Cache-Control": "no-cache"}
        )

    @router.route(
        "GET",
        r"/annotate/dzi/(?P<key>\d+)/image_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.jpeg",
    )
    def tile(request: Request) -> Response:
        _, dz = session.image_by_key(int(request.params["key"]))
        p = request.params
        data = dz.tile(int(p["level"]), int(p["col"]), int(p["row"]))
        return Response(200, data, dz.media_type, {"Cache-Control": "no-cache"})
