"""A fitted point-supervised model on disk, and its tile-engine adapter.

A model directory holds ``model.json`` (format, base model reference, architecture, working
µm/px, instance settings, fit provenance) and ``weights.pt`` (``{"adapters", "decoder",
"head"}`` state dicts of plain tensors, loaded with ``torch.load(weights_only=True)``). The base
MobileSAM weights are **not** copied: ``model.json`` names them (registry name + sha256) and
:func:`load_base` fetches them from the model registry when the model is loaded.

:class:`PointsSegmenter` runs a model through :func:`zeropath.run.segment.segment_input`:
the engine resamples each tile to the model's µm/px; the tile (core + halo) is one SAM input
(:meth:`PointsSegmenter.tile_um`), larger inputs are cut into overlapping SAM crops; the adapted
encoder and the prompt-free decoder give ``B`` and ``D`` and
:func:`~zeropath.points.instances.instances_from_maps` the nuclei. No prompt is needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError

__all__ = [
    "FORMAT",
    "MODEL_JSON",
    "WEIGHTS",
    "PointsSegmenter",
    "base_id",
    "load_base",
    "load_points_model",
    "model_sha256",
    "save_points_model",
]

FORMAT = "zeropath.points/1"
MODEL_JSON = "model.json"
WEIGHTS = "weights.pt"
BASE_NAME = "mobilesam"
#: instance settings, in pixels of the decoder maps (4 working pixels each); edge threshold and
#: marker radius chosen on kumar_val maps of a model fitted on 4 kumar_train images
DEFAULT_INSTANCES: dict[str, float] = {
    "threshold": 0.5,
    "edge_threshold": 0.25,
    "marker_radius": 0.5,
    "sigma": 1.0,
    "min_marker_px": 4,
    "min_area_px": 10,
    "fill_holes_px": 16,
}
DEFAULT_HALO_UM = 12.0


def base_id(sam) -> str:
    """The base weights' identity: the registry sha256 when loaded from it, otherwise a
    sha256 over the parameter names and bytes (call before adapters are added)."""
    if getattr(sam, "weights_id", None):
        return str(sam.weights_id).split("+adapters:")[0]
    from zeropath.models.mobilesam.adapters import adapter_fingerprint

    return adapter_fingerprint(sam.state_dict())


def load_base(base: dict[str, Any]):
    """The base MobileSAM a model was fitted on (``{"name", "sha256", "config"}``).

    Only the official ``mobilesam`` from the model registry is known; tests replace this
    function to inject a small random model."""
    from zeropath.models.mobilesam.sam import MobileSAMConfig, load_mobilesam

    name = base.get("name")
    if name != BASE_NAME:
        raise ModelError(f"unknown base model {name!r} (only {BASE_NAME!r} is supported)")
    cfg = base.get("config")
    if cfg is not None and MobileSAMConfig(**_config_from_json(cfg)) != MobileSAMConfig():
        raise ModelError("the base model configuration is not the official MobileSAM (vit_t)")
    return load_mobilesam()


def _config_from_json(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def model_sha256(model_dir: str | os.PathLike[str]) -> str:
    """Checksum of a model directory (its files, by name and content)."""
    from zeropath.models import digest

    return digest(Path(model_dir))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_points_model(
    model,
    model_dir: str | os.PathLike[str],
    base: dict[str, Any],
    options=None,
    halo_um: float = DEFAULT_HALO_UM,
    instances: dict[str, float] | None = None,
) -> Path:
    """Write ``model`` (a :class:`~zeropath.points.fit.PointsModel`) into ``model_dir``:
    ``weights.pt`` (adapters, decoder, head) and ``model.json``. ``base`` is the base model
    reference ``{"name", "sha256", "config"}``; ``options`` the
    :class:`~zeropath.points.fit.FitOptions` used (recorded)."""
    import torch

    from zeropath.io.writers import atomic_write
    from zeropath.models.mobilesam.adapters import adapter_state_dict

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "adapters": adapter_state_dict(model.sam),
        "decoder": {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
    }
    with atomic_write(out / WEIGHTS) as tmp:
        torch.save(state, tmp)
    head = model.head
    meta = {
        "format": FORMAT,
        "base": base,
        "work_mpp": float(model.mpp),
        "halo_um": float(halo_um),
        "decoder": {"in_chans": model.decoder.in_chans, "widths": list(model.decoder.widths)},
        "head": {
            "in_dim": head.fc1.in_channels,
            "hidden": head.fc1.out_channels,
            "out_dim": head.fc2.out_channels,
        },
        "window_cells": getattr(options, "window_cells", None),
        "instances": dict(instances or DEFAULT_INSTANCES),
        "fit_options": _options_dict(options),
        "provenance": model.provenance,
        "history": [
            h for i, h in enumerate(model.history) if i % 10 == 0 or i >= len(model.history) - 5
        ],
    }
    with atomic_write(out / MODEL_JSON) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=_json_default))
    return out


def _options_dict(options) -> dict[str, Any] | None:
    if options is None:
        return None
    d = asdict(options)
    return json.loads(json.dumps(d, default=_json_default))


def read_meta(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    d = Path(model_dir)
    try:
        meta = json.loads((d / MODEL_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{d}: not a zeropath points model directory ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ModelError(f"{d}: unknown model format {fmt!r} (expected {FORMAT})")
    return meta


def load_points_model(model_dir: str | os.PathLike[str]):
    """The :class:`~zeropath.points.fit.PointsModel` of a model directory, in eval mode, with
    its base MobileSAM from :func:`load_base` (its sha256 must match the recorded one)."""
    from zeropath.errors import WeightsError
    from zeropath.models.mobilesam.adapters import load_adapter_state_dict
    from zeropath.models.nuclei_decoder import NucleiDecoder
    from zeropath.models.weights import describe_load_error, entry, load_into
    from zeropath.models.weights import load_state_dict as load_weights
    from zeropath.points.fit import PointsModel
    from zeropath.points.losses import ProjectionHead

    d = Path(model_dir)
    meta = read_meta(d)
    path = d / WEIGHTS
    loaded = load_weights(path)  # hashed as read, weights_only, one-line errors
    state = loaded.value
    base = meta.get("base") or {}
    sam = load_base(base).eval()
    found = base_id(sam)
    if base.get("sha256") and found != base["sha256"]:
        raise ModelError(
            f"{d}: base model {base.get('name')} has sha256 {found[:12]}, "
            f"the model was fitted on {str(base['sha256'])[:12]}"
        )
    try:
        load_adapter_state_dict(sam, dict(entry(state, "adapters", path)))
        dec_cfg = meta["decoder"]
        decoder = NucleiDecoder(int(dec_cfg["in_chans"]), tuple(dec_cfg["widths"]))
        head = ProjectionHead(**{k: int(v) for k, v in meta["head"].items()})
    except WeightsError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(
            f"{d}: weights do not match model.json ({describe_load_error(exc, 200)})"
        ) from None
    load_into(decoder, entry(state, "decoder", path), path, "decoder")
    load_into(head, entry(state, "head", path), path, "projection head")
    for p in sam.parameters():
        p.requires_grad_(False)
    model = PointsModel(sam, decoder.eval(), head.eval(), float(meta["work_mpp"]))
    model.provenance = meta.get("provenance", {})
    model.weights_sha256 = loaded.sha256  # the bytes of weights.pt actually loaded
    model.base_sha256 = found  # the base weights actually loaded (see base_id)
    return model


class PointsSegmenter:
    """Engine-compatible segmenter around a points model directory (see the module doc)."""

    def __init__(self, model_dir: str | os.PathLike[str], name: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / MODEL_JSON).is_file():
            raise ModelError(
                f"{self.model_dir}: no {MODEL_JSON} here; train one with "
                "`zeropath points fit IMAGES --points DIR --out MODEL_DIR`"
            )
        self.meta = read_meta(self.model_dir)
        self.name = name or self.model_dir.name
        self.sha256 = model_sha256(self.model_dir)
        self.target_mpp = float(self.meta["work_mpp"])
        self.halo_um = float(self.meta.get("halo_um", DEFAULT_HALO_UM))
        self.instances = {**DEFAULT_INSTANCES, **self.meta.get("instances", {})}
        self._model = None

    def __getstate__(self) -> dict[str, Any]:  # networks are reloaded in each worker process
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    @property
    def model(self):
        if self._model is None:
            model = load_points_model(self.model_dir)
            now = model_sha256(self.model_dir)
            if now != self.sha256:  # every worker must load the model the run records
                from zeropath.errors import ChecksumError

                raise ChecksumError(
                    f"{self.model_dir}: the model changed since it was opened (sha256 "
                    f"{now[:12]}…, expected {self.sha256[:12]}…); refusing to mix two models"
                )
            self._model = model
        return self._model

    @property
    def img_size(self) -> int:
        cfg = (self.meta.get("base") or {}).get("config") or {}
        return int(cfg.get("img_size", 1024))

    def tile_um(self) -> float:
        """Core size in µm such that a tile with its halo on both sides is one SAM input."""
        halo_px = int(np.ceil(self.halo_um / self.target_mpp))
        return max(16.0, (self.img_size - 2 * halo_px - 2) * self.target_mpp)

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        from zeropath.io.tiler import resize_labels
        from zeropath.nuclei.detect import to_work
        from zeropath.points.fit import predict_maps

        work, _ = to_work(rgb, mpp, self.target_mpp)
        labels = self.segment_work(work, predict_maps)
        if labels.shape != rgb.shape[:2]:
            labels = resize_labels(labels, rgb.shape[:2])
        return labels.astype(np.uint32, copy=False)

    def segment_work(self, rgb: np.ndarray, predict=None) -> np.ndarray:
        """Instance labels of an RGB image already at the model's µm/px."""
        from zeropath.points.instances import instances_from_maps

        if predict is None:
            from zeropath.points.fit import predict_maps as predict
        prob, offsets = predict(self.model, rgb)
        sam = self.model.sam
        f = sam.img_size / (4 * sam.config.embedding_size)  # working px per map px
        p = self.instances
        return instances_from_maps(
            prob,
            offsets,
            threshold=float(p["threshold"]),
            edge_threshold=float(p["edge_threshold"]) / f,
            marker_radius=float(p["marker_radius"]),
            sigma=float(p["sigma"]) * f,
            min_marker_px=int(round(p["min_marker_px"] * f * f)),
            min_area_px=int(round(p["min_area_px"] * f * f)),
            fill_holes_px=int(round(p["fill_holes_px"] * f * f)),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "params": {
                "path": str(self.model_dir),
                "work_mpp": self.target_mpp,
                "halo_um": self.halo_um,
                "base": self.meta.get("base"),
                "instances": self.instances,
                "fit": (self.meta.get("provenance") or {}).get("command"),
            },
        }
