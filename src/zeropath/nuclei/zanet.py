"""The label-free nucleus model (ZA-Net style): refiner + segmentation network + instances.

A model directory holds ``model.json`` (configuration and fit provenance) and ``weights.pt``
(plain tensors, loaded with ``torch.load(weights_only=True)``). :class:`ZANetSegmenter` runs it
through the tile engine: detect nucleus centres with the refined confidence-map network,
predict nucleus probability with the segmentation network, and split touching nuclei with a
watershed seeded by the detected centres; a three-class network (background / interior /
boundary) seeds it with the maxima of its interior probability instead (those standing out
from their saddle, so that touching nuclei with joined interiors still part), and the centres
only seed the nuclei no interior maximum reached.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError

FORMAT = "zeropath.zanet/1"
WORK_MPP = 0.5
MODEL_JSON = "model.json"
WEIGHTS = "weights.pt"


@dataclass
class InstanceParams:
    """How the probability map and the points become instances (see ``instances.py``)."""

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


@dataclass
class ZANetModel:
    """A fitted model: the two networks, instance settings and provenance."""

    refiner: Any  # zeropath.nuclei.refine.Refiner
    segnet: Any  # zeropath.nuclei.segnet.SegNet
    instances: InstanceParams = field(default_factory=InstanceParams)
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write ``model.json`` and ``weights.pt`` atomically into ``model_dir``."""
        import torch

        from zeropath.io.writers import atomic_write

        out = Path(model_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / WEIGHTS) as tmp:
            torch.save(
                {"refiner": self.refiner.state_dict(), "segnet": self.segnet.state_dict()}, tmp
            )
        meta = {
            "format": FORMAT,
            "work_mpp": WORK_MPP,
            "instances": self.instances.to_dict(),
            "provenance": self.provenance,
        }
        with atomic_write(out / MODEL_JSON) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=2, default=_json_default))
        return out

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> ZANetModel:
        """Load a model directory; a missing or foreign directory is a :class:`ModelError`."""
        import torch

        from zeropath.nuclei.refine import Refiner
        from zeropath.nuclei.segnet import SegNet

        d = Path(model_dir)
        try:
            meta = json.loads((d / MODEL_JSON).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{d}: not a zeropath nucleus model directory ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise ModelError(f"{d}: unknown model format {meta.get('format')!r}")
        try:
            state = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{d / WEIGHTS}: cannot load weights ({exc})") from exc
        return cls(
            refiner=Refiner.from_state_dict(state["refiner"]),
            segnet=SegNet.from_state_dict(state["segnet"]),
            instances=_instance_params(meta.get("instances", {})),
            provenance=meta.get("provenance", {}),
        )

    def segment_work(self, rgb: np.ndarray) -> np.ndarray:
        """Instance labels of an RGB image already at :data:`WORK_MPP`."""
        from zeropath.nuclei.instances import instances_from_probability

        p = self.instances
        if getattr(self.segnet, "n_classes", 2) == 3:
            from zeropath.nuclei.instances import instances_from_maps

            maps = self.segnet.predict_maps(rgb, tta=p.tta)
            points = self.refiner.detect_work(rgb) if p.use_points else None
            return instances_from_maps(
                1.0 - maps[0],
                maps[1],
                points,
                mpp=WORK_MPP,
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
            mpp=WORK_MPP,
            threshold=p.threshold,
            min_area_um2=p.min_area_um2,
            distance_weight=p.distance_weight,
        )


def _instance_params(d: dict[str, Any]) -> InstanceParams:
    """:class:`InstanceParams` from ``model.json``: missing settings take their defaults
    (models saved before they existed), unknown ones (from a newer version) are ignored."""
    from dataclasses import fields

    known = {f.name for f in fields(InstanceParams)}
    return InstanceParams(**{k: v for k, v in d.items() if k in known})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def model_sha256(model_dir: str | os.PathLike[str]) -> str:
    """Checksum of a model: ``model.json`` and ``weights.pt``, by name and content.

    Other files in the directory (a README, notes) do not change a model's identity.
    """
    import hashlib

    from zeropath.models.cache import sha256_file

    h = hashlib.sha256()
    for name in (MODEL_JSON, WEIGHTS):
        path = Path(model_dir) / name
        if path.is_file():
            h.update(f"{name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def bundled_model_dir() -> Path:
    """The default model shipped with the package (trained by ``nuclei fit`` without labels)."""
    from importlib.resources import files

    return Path(str(files("zeropath") / "data" / "models" / "zanet-default"))


class ZANetSegmenter:
    """Engine-compatible segmenter around a :class:`ZANetModel` directory."""

    target_mpp = WORK_MPP
    halo_um = 24.0

    def __init__(self, model_dir: str | os.PathLike[str], name: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / MODEL_JSON).is_file():
            raise ModelError(
                f"{self.model_dir}: no {MODEL_JSON} here; train one with "
                "`zeropath nuclei fit IMAGES --out MODEL_DIR` or omit --model for the default"
            )
        self.name = name or self.model_dir.name
        self.sha256 = model_sha256(self.model_dir)
        self._model: ZANetModel | None = None

    def __getstate__(self) -> dict[str, Any]:  # networks are reloaded in each worker process
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    @property
    def model(self) -> ZANetModel:
        if self._model is None:
            self._model = ZANetModel.load(self.model_dir)
        return self._model

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        from zeropath.io.tiler import resize_labels
        from zeropath.nuclei.detect import to_work

        work, _ = to_work(rgb, mpp, WORK_MPP)
        labels = self.model.segment_work(work)
        if labels.shape != rgb.shape[:2]:
            labels = resize_labels(labels, rgb.shape[:2])
        return labels.astype(np.uint32, copy=False)

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "name": self.name,
            "sha256": self.sha256,
            "params": {
                "path": str(self.model_dir),
                "work_mpp": WORK_MPP,
                "instances": m.instances.to_dict(),
                "fit": m.provenance.get("command"),
            },
        }
