"""The label-free nucleus model (ZA-Net style): refiner + segmentation network + instances.

A model directory (:mod:`zeropath.nuclei.modeldir`: ``model.json`` + ``weights.pt``, one sha256
rule) holds the complete configuration — ``work_mpp``, the tile spec (``tile``) and every
instance setting (``instances``) — and the fit provenance; the weights hold the refiner's and
the segmentation network's state dicts. :class:`ZANetSegmenter` runs it through the tile
engine: detect nucleus centres with the refined confidence-map network, predict nucleus
probability with the segmentation network, and split touching nuclei with a watershed seeded by
the detected centres; a three-class network (background / interior / boundary) seeds it with
the maxima of its interior probability instead (those standing out from their saddle, so that
touching nuclei with joined interiors still part), and the centres only seed the nuclei no
interior maximum reached.

Formats: ``zeropath.zanet/2`` records every setting; loading one that lacks a setting is an
error. ``zeropath.zanet/1`` (before 0.2) may lack settings added later (``marker_h``,
``marker_sigma_um``, ``tile``, …): they are filled from :data:`V1_MIGRATION`, the values the
code assumed for such files, and ``describe()`` lists what was filled under ``migrated``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError
from zeropath.nuclei.base import Segmenter, TileSpec
from zeropath.nuclei.modeldir import (
    MODEL_JSON,
    WEIGHTS,
    combined_sha256,
    complete_config,
    model_sha256,
    read_model_json,
    save_model_dir,
)

__all__ = [
    "FORMAT",
    "FORMATS",
    "MODEL_JSON",
    "V1_MIGRATION",
    "WEIGHTS",
    "WORK_MPP",
    "InstanceParams",
    "ZANetModel",
    "ZANetSegmenter",
    "bundled_model_dir",
    "model_sha256",
]

FORMAT = "zeropath.zanet/2"
#: the formats :meth:`ZANetModel.load` reads (``/1`` through :data:`V1_MIGRATION`)
FORMATS = (FORMAT, "zeropath.zanet/1")
#: the µm/px ``nuclei fit`` trains at (a model's own is its ``work_mpp``)
WORK_MPP = 0.5
#: the tile spec ``nuclei fit`` writes: context around each tile core
DEFAULT_TILE = TileSpec(halo_um=24.0)


@dataclass
class InstanceParams:
    """How the probability map and the points become instances (see ``instances.py``).

    The defaults are what ``nuclei fit`` writes into a new model; a loaded model takes every
    value from its ``model.json``.
    """

    threshold: float = 0.5
    min_area_um2: float = 4.0
    distance_weight: float = 0.5
    tta: bool = False  # flips: no gain on kumar_val (AJI 0.385 vs 0.383), 1.7x slower
    # three-class networks (background / interior / boundary): interior markers are the maxima
    # of the interior probability (smoothed by marker_sigma_um) rising marker_h above their
    # saddle; marker_h = 0: the parts of interior > marker_threshold (AJI 0.404 -> 0.430 on
    # kumar_train + kumar_val, fewer merged touching nuclei)
    marker_threshold: float = 0.5
    marker_h: float = 0.3
    marker_sigma_um: float = 0.25
    use_points: bool = True  # also seed components no interior marker reached at the points

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: ``zeropath.zanet/1`` files written before a setting existed ran with these values (the
#: code's defaults of 0.1.x, frozen here): a /1 file lacking one is upgraded with them,
#: explicitly, and the filled settings are reported by ``describe()["params"]["migrated"]``.
V1_MIGRATION: dict[str, dict[str, Any]] = {
    "model": {"work_mpp": 0.5},
    "instances": {
        "threshold": 0.5,
        "min_area_um2": 4.0,
        "distance_weight": 0.5,
        "tta": False,
        "marker_threshold": 0.5,
        "marker_h": 0.3,
        "marker_sigma_um": 0.25,
        "use_points": True,
    },
    "tile": {"halo_um": 24.0, "tile_um": None, "tile_px": None, "overlap_px": None},
}


@dataclass
class ZANetModel:
    """A fitted model: the two networks, its complete settings and provenance."""

    refiner: Any  # zeropath.nuclei.refine.Refiner
    segnet: Any  # zeropath.nuclei.segnet.SegNet
    instances: InstanceParams = field(default_factory=InstanceParams)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 of the model as loaded (``model.json`` + ``weights.pt``; see :func:`model_sha256`)
    sha256: str | None = None
    work_mpp: float = WORK_MPP
    tile: TileSpec = DEFAULT_TILE
    #: settings a ``zeropath.zanet/1`` file lacked, filled from :data:`V1_MIGRATION`
    migrated: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The complete ``model.json`` (format, settings, provenance)."""
        return {
            "format": FORMAT,
            "work_mpp": float(self.work_mpp),
            "tile": self.tile.to_dict(),
            "instances": self.instances.to_dict(),
            "provenance": self.provenance,
        }

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write ``model.json`` and ``weights.pt`` atomically into ``model_dir``."""
        state = {"refiner": self.refiner.state_dict(), "segnet": self.segnet.state_dict()}
        return save_model_dir(model_dir, self.config(), state)

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], sha256: str | None = None) -> ZANetModel:
        """Load a model directory; a missing, foreign, incomplete or damaged one is a
        ModelError.

        Both files are hashed as they are read; the model's ``sha256`` (see
        :func:`model_sha256`) is that of the bytes loaded, and must equal ``sha256`` when given.
        Weights that lack an entry, are damaged, or do not fit their configuration raise a
        :class:`~zeropath.errors.WeightsError` of one line naming ``weights.pt``.
        """
        from zeropath.errors import ChecksumError, WeightsError
        from zeropath.models import weights
        from zeropath.nuclei.refine import Refiner
        from zeropath.nuclei.segnet import SegNet

        d = Path(model_dir)
        meta, json_sha = read_model_json(d, FORMATS)
        settings = _settings(meta, d)
        path = d / WEIGHTS
        loaded = weights.load_state_dict(path)
        digest = combined_sha256(json_sha, loaded.sha256)
        if sha256 is not None and digest != sha256:
            raise ChecksumError(
                f"{d}: the model changed since it was opened (sha256 {digest[:12]}…, expected "
                f"{sha256[:12]}…); refusing to mix two models in one run"
            )
        state = loaded.value
        parts = {}
        for key, build in (
            ("refiner", Refiner.from_state_dict),
            ("segnet", SegNet.from_state_dict),
        ):
            part = weights.entry(state, key, path)
            try:
                parts[key] = build(part)
            except WeightsError:
                raise
            except (ModelError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
                raise WeightsError(
                    f"{path}: the {key!r} weights do not fit the network "
                    f"({weights.describe_load_error(exc)})"
                ) from None
        return cls(
            refiner=parts["refiner"],
            segnet=parts["segnet"],
            provenance=meta.get("provenance", {}),
            sha256=digest,
            **settings,
        )

    def segment_work(self, rgb: np.ndarray) -> np.ndarray:
        """Instance labels of an RGB image already at the model's ``work_mpp``."""
        from zeropath.nuclei.instances import instances_from_interior, instances_from_probability

        p = self.instances
        if getattr(self.segnet, "n_classes", 2) == 3:
            maps = self.segnet.predict_maps(rgb, tta=p.tta)
            points = self.refiner.detect_work(rgb) if p.use_points else None
            return instances_from_interior(
                1.0 - maps[0],
                maps[1],
                points,
                mpp=self.work_mpp,
                threshold=p.threshold,
                marker_threshold=p.marker_threshold,
                marker_h=p.marker_h,
                marker_sigma_um=p.marker_sigma_um,
                min_area_um2=p.min_area_um2,
            )
        points = self.refiner.detect_work(rgb)
        prob = self.segnet.predict_proba(rgb, tta=p.tta)
        return instances_from_probability(
            prob,
            points,
            mpp=self.work_mpp,
            threshold=p.threshold,
            min_area_um2=p.min_area_um2,
            distance_weight=p.distance_weight,
        )


def _settings(meta: dict[str, Any], where: Path) -> dict[str, Any]:
    """The model's settings from ``model.json``, complete: every one must be there (a /1 file
    is upgraded explicitly from :data:`V1_MIGRATION`, what was filled kept in ``migrated``)."""
    v1 = meta.get("format") == "zeropath.zanet/1"
    migrated: dict[str, Any] = {}
    if "work_mpp" in meta:
        work_mpp = float(meta["work_mpp"])
    elif v1:
        work_mpp = migrated["work_mpp"] = V1_MIGRATION["model"]["work_mpp"]
    else:
        raise ModelError(f"{where}: model.json lacks work_mpp")
    out: dict[str, Any] = {"work_mpp": work_mpp}
    for key, cls in (("instances", InstanceParams), ("tile", TileSpec)):
        value, filled = complete_config(
            cls, meta.get(key), f"{where}: {key}", V1_MIGRATION[key] if v1 else None
        )
        out[key] = value
        if filled:
            migrated[key] = filled
    if migrated:
        migrated = {"from": meta["format"], **migrated}
    return {**out, "migrated": migrated}


def bundled_model_dir() -> Path:
    """The default model shipped with the package (trained by ``nuclei fit`` without labels)."""
    from importlib.resources import files

    return Path(str(files("zeropath") / "data" / "models" / "zanet-default"))


class ZANetSegmenter(Segmenter):
    """The engine's segmenter around a :class:`ZANetModel` directory."""

    devices = ("cpu", "cuda", "mps")

    def __init__(
        self, model_dir: str | os.PathLike[str], name: str | None = None, device: str = "cpu"
    ) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        if not (self.model_dir / MODEL_JSON).is_file():
            raise ModelError(
                f"{self.model_dir}: no {MODEL_JSON} here; train one with "
                "`zeropath nuclei fit IMAGES --out MODEL_DIR` or omit --model for the default"
            )
        self.name = name or self.model_dir.name
        # loaded (and so checked) now, in the main process: a damaged or mismatched weights
        # file is one error before any input is read; workers reload the same bytes
        self._model: ZANetModel | None = ZANetModel.load(self.model_dir)
        self.sha256 = self._model.sha256
        self.target_mpp = self._model.work_mpp
        self.tile = self._model.tile
        self.to(device)

    def to(self, device: str) -> ZANetSegmenter:
        """Run both networks on ``device`` (checked by :func:`~zeropath.models.device.
        resolve_device`); worker processes move their own copy there when they load it."""
        self.device = device
        if self._model is not None:
            self._model.refiner.to(device)
            self._model.segnet.to(device)
        return self

    def __getstate__(self) -> dict[str, Any]:  # networks are reloaded in each worker process
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    @property
    def model(self) -> ZANetModel:
        if self._model is None:
            # the directory must still hold the model this segmenter was opened on
            self._model = ZANetModel.load(self.model_dir, sha256=self.sha256)
            self.sha256 = self._model.sha256
            self.to(self.device)
        return self._model

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        return self.model.segment_work(rgb)

    def describe(self) -> dict[str, Any]:
        m = self.model
        params: dict[str, Any] = {
            "path": str(self.model_dir),
            "device": self.device,
            "work_mpp": m.work_mpp,
            "instances": m.instances.to_dict(),
            "fit": m.provenance.get("command"),
        }
        if m.migrated:
            params["migrated"] = m.migrated
        return {"name": self.name, "sha256": m.sha256, "params": params}
