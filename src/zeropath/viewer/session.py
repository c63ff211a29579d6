"""The state behind one viewer: the catalog and, per slide, its lazily built layers.

Layers (the slide's Deep Zoom pyramid, the tissue overlay, the nucleus index) are built on
first use and kept; a lock per slide makes concurrent requests wait for one build instead
of each starting its own. A layer that fails to load is remembered as an error message, so
the page can show it while the other layers keep working.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from zeropath.errors import InputError, ZeropathError
from zeropath.viewer.catalog import Catalog, SlideEntry
from zeropath.viewer.dzi import DeepZoom, DziGeometry, LRUCache, slide_renderer
from zeropath.viewer.nuclei import NucleusIndex
from zeropath.viewer.tissuemap import TissueMap

__all__ = ["SlideLayers", "ViewerSession"]


@dataclass
class SlideLayers:
    """Everything the viewer serves for one slide."""

    entry: SlideEntry
    source: Any  # zeropath.io.reader.ImageSource
    slide: DeepZoom
    tissue: TissueMap | None = None
    tissue_dzi: DeepZoom | None = None
    _nuclei: NucleusIndex | None = None
    errors: dict[str, str] = field(default_factory=dict)
    _nuclei_lock: threading.Lock = field(default_factory=threading.Lock)
    _loader: threading.Thread | None = None
    _loader_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nuclei(self) -> NucleusIndex | None:
        """The nucleus index, read from the GeoJSON on first use (None when absent/broken)."""
        if self.entry.nuclei is None or "nuclei" in self.errors:
            return None
        with self._nuclei_lock:
            if self._nuclei is None and "nuclei" not in self.errors:
                try:
                    self._nuclei = NucleusIndex(self.entry.nuclei)
                except ZeropathError as exc:
                    self.errors["nuclei"] = str(exc)
            return self._nuclei

    def nuclei_loading(self) -> bool:
        """True while the nucleus index is still being read; starts reading it in a
        background thread the first time, so that no request has to wait for it."""
        if self.entry.nuclei is None or "nuclei" in self.errors or self._nuclei is not None:
            return False
        with self._loader_lock:  # not _nuclei_lock: that one is held while loading
            if self._loader is None:
                self._loader = threading.Thread(
                    target=lambda: self.nuclei, name="zeropath-viewer-nuclei", daemon=True
                )
                self._loader.start()
        return self._nuclei is None and "nuclei" not in self.errors

    def info(self) -> dict[str, Any]:
        """What the page needs to set itself up (``/api/info``); ``nuclei`` is
        ``{"loading": true}`` until the index is ready (the page asks again)."""
        src = self.source
        loading = self.nuclei_loading()
        nuclei = None if loading else self.nuclei
        tissue = None
        if self.tissue is not None:
            tissue = {
                "classes": self.tissue.legend(),
                "mpp": self.tissue.mpp,
                "shape": list(self.tissue.shape),
            }
        nuclei_info: dict[str, Any] | None = {"loading": True} if loading else None
        if nuclei is not None:
            counts = nuclei.class_counts()
            nuclei_info = {
                "count": len(nuclei),
                "classes": [
                    {**c.to_dict(), "count": counts[i]} for i, c in enumerate(nuclei.classes)
                ],
                "measurements": nuclei.measurement_names,
            }
        return {
            "stem": self.entry.stem,
            "slide": {
                "name": src.path.name,
                "width": src.width,
                "height": src.height,
                "mpp": src.mpp,
                "mpp_origin": src.mpp_origin,
                "levels": src.level_count,
            },
            "tissue": tissue,
            "nuclei": nuclei_info,
            "errors": dict(self.errors),
        }


class ViewerSession:
    """The catalog plus a cache of built :class:`SlideLayers`, shared by all requests."""

    def __init__(self, catalog: Catalog, cache_bytes: int = 128 << 20) -> None:
        self.catalog = catalog
        self.cache = LRUCache(cache_bytes)
        self._layers: dict[str, SlideLayers] = {}
        self._locks = {stem: threading.Lock() for stem in catalog.stems}

    @property
    def warnings(self) -> list[str]:
        return self.catalog.warnings

    def slides(self) -> list[dict[str, Any]]:
        return [{"stem": e.stem, "name": e.slide.name} for e in self.catalog.entries]

    def layers(self, stem: str | None = None) -> SlideLayers:
        """The layers of ``stem`` (the first slide for None), built on first use.

        Raises KeyError for an unknown stem and :class:`InputError` for an unreadable slide.
        """
        entry = self.catalog.get(stem)
        with self._locks[entry.stem]:
            if entry.stem not in self._layers:
                self._layers[entry.stem] = self._build(entry)
            return self._layers[entry.stem]

    def _build(self, entry: SlideEntry) -> SlideLayers:
        from zeropath.io.reader import open_image

        source = open_image(entry.slide)
        geometry = DziGeometry(source.width, source.height)
        slide = DeepZoom(
            geometry, slide_renderer(source), "jpeg", self.cache, key=(entry.stem, "slide")
        )
        layers = SlideLayers(entry=entry, source=source, slide=slide)
        if entry.tissue is not None:
            try:
                tissue = TissueMap(entry.tissue, source.dimensions)
            except InputError as exc:
                layers.errors["tissue"] = str(exc)
            else:
                layers.tissue = tissue
                layers.tissue_dzi = DeepZoom(
                    geometry, tissue.render, "png", self.cache, key=(entry.stem, "tissue")
                )
        return layers

    def preload(self, stem: str | None = None) -> None:
        """Start reading ``stem``'s nucleus index in the background (layers must build)."""
        self.layers(stem).nuclei_loading()

    def close(self) -> None:
        for layers in self._layers.values():
            try:
                layers.source.close()
            except Exception:  # closing is best effort
                pass
        self._layers.clear()
