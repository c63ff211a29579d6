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
    #: SHA-256 of the model as loaded (``model.json`` + ``weights.pt``; see :func:`model_sha256`)
    sha256: str | None = None

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
    def load(cls, model_dir: str | os.PathLike[str], sha256: str | None = None) -> ZANetModel:
        """Load a model directory; a missing, foreign or damaged directory is a ModelError.

        Both files are hashed as they are read; the model's ``sha256`` (see
        :func:`model_sha256`) is that of the bytes loaded, and must equal ``sha256`` when given.
        Weights that lack an entry, are damaged, or do not fit their configuration raise a
        :class:`~zeropath.errors.WeightsError` of one line naming ``weights.pt``.
        """
        import hashlib

        from zeropath.errors import ChecksumError, WeightsError
        from zeropath.models import weights
        from zeropath.nuclei.refine import Refiner
        from zeropath.nuclei.segnet import SegNet

        d = Path(model_dir)
        try:
            raw = (d / MODEL_JSON).read_bytes()
            meta = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{d}: not a zeropath nucleus model directory ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise ModelError(f"{d}: unknown model format {fmt!r}")
        path = d / WEIGHTS
        loaded = weights.load_state_dict(path)
        digest = _combined_sha256(
            {MODEL_JSON: hashlib.sha256(raw).hexdigest(), WEIGHTS: loaded.sha256}
        )
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
            instances=_instance_params(meta.get("instances", {})),
            provenance=meta.get("provenance", {}),
            sha256=digest,
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
    from zeropath.models.cache import sha256_file

    digests = {}
    for name in (MODEL_JSON, WEIGHTS):
        path = Path(model_dir) / name
        if path.is_file():
            digests[name] = sha256_file(path)
    return _combined_sha256(digests)


def _combined_sha256(digests: dict[str, str]) -> str:
    """The digest of ``name NUL filedigest LF`` over ``model.json`` then ``weights.pt``."""
    import hashlib

    h = hashlib.sha256()
    for name in (MODEL_JSON, WEIGHTS):
        if name in digests:
            h.update(f"{name}\0{digests[name]}\n".encode())
    return h.hexdigest()


def bundled_model_dir() -> Path:
    """The default model shipped with the package (trained by ``nuclei fit`` without labels)."""
    from importlib.resources import files

    return Path(str(files("zeropath") / "data" / "models" / "zanet-default"))


class ZANetSegmenter:
    """Engine-compatible segmenter around a :class:`ZANetModel` directory."""

    target_mpp = WORK_MPP
    halo_um = 24.0

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
            "sha256": m.sha256,
            "params": {
                "path": str(self.model_dir),
                "device": self.device,
                "work_mpp": WORK_MPP,
                "instances": m.instances.to_dict(),
                "fit": m.provenance.get("command"),
            },
        }
