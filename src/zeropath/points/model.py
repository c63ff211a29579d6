"""A fitted point-supervised model on disk, and its segmenter.

A model directory (:mod:`zeropath.nuclei.modeldir`: ``model.json`` + ``weights.pt``, one sha256
rule) holds in ``model.json`` the format, the base model reference, the architecture, the
working µm/px, the tile spec, every instance setting and the fit provenance, and in
``weights.pt`` the ``{"adapters", "decoder", "head"}`` state dicts (plain tensors, loaded with
``torch.load(weights_only=True)``). The base MobileSAM weights are **not** copied: ``model.json``
names them (registry name + sha256) and :func:`load_base` fetches them from the model registry
when the model is loaded.

:class:`PointsSegmenter` is a :class:`zeropath.nuclei.base.Segmenter` run by ``nuclei segment
--model DIR`` (``points segment`` is an alias): the engine reads each tile at the model's µm/px;
the tile (core + halo) is one SAM input (``tile.tile_um``), larger inputs are cut into
overlapping SAM crops; the adapted encoder and the prompt-free decoder give ``B`` and ``D`` and
:func:`~zeropath.nuclei.instances.instances_from_offsets` the nuclei. No prompt is needed.

Formats: ``zeropath.points/2`` records every setting (a missing one is an error);
``zeropath.points/1`` files are upgraded explicitly from :data:`V1_MIGRATION` (reported by
``describe()`` under ``migrated``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.errors import ModelError
from zeropath.nuclei import modeldir
from zeropath.nuclei.base import Segmenter, TileSpec
from zeropath.nuclei.modeldir import MODEL_JSON, WEIGHTS, model_sha256

__all__ = [
    "FORMAT",
    "FORMATS",
    "MODEL_JSON",
    "V1_MIGRATION",
    "WEIGHTS",
    "PointsInstanceParams",
    "PointsSegmenter",
    "base_id",
    "load_base",
    "load_points_model",
    "model_sha256",
    "read_meta",
    "save_points_model",
]

FORMAT = "zeropath.points/2"
#: the formats this module reads (``/1`` through :data:`V1_MIGRATION`)
FORMATS = (FORMAT, "zeropath.points/1")
BASE_NAME = "mobilesam"
DEFAULT_HALO_UM = 12.0


@dataclass(frozen=True)
class PointsInstanceParams:
    """Instance settings, in pixels of the decoder maps (4 working pixels each); the defaults
    (what ``points fit`` writes: edge threshold and marker radius chosen on kumar_val maps of a
    model fitted on 4 kumar_train images) are never used for a loaded model."""

    threshold: float = 0.5
    edge_threshold: float = 0.25
    marker_radius: float = 0.5
    sigma: float = 1.0
    min_marker_px: int = 4
    min_area_px: int = 10
    fill_holes_px: int = 16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``zeropath.points/1`` files ran with these values where a setting was missing (the code's
#: defaults of 0.1.x, frozen here); a /1 file is upgraded with them, explicitly.
V1_MIGRATION: dict[str, Any] = {
    "instances": PointsInstanceParams().to_dict(),
    "halo_um": DEFAULT_HALO_UM,
}


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


def save_points_model(
    model,
    model_dir: str | os.PathLike[str],
    base: dict[str, Any],
    options=None,
    halo_um: float = DEFAULT_HALO_UM,
    instances: PointsInstanceParams | None = None,
) -> Path:
    """Write ``model`` (a :class:`~zeropath.points.fit.PointsModel`) into ``model_dir``:
    ``weights.pt`` (adapters, decoder, head) and the complete ``model.json``. ``base`` is the
    base model reference ``{"name", "sha256", "config"}``; ``options`` the
    :class:`~zeropath.points.fit.PointsFitOptions` used (recorded)."""
    from zeropath.models.mobilesam.adapters import adapter_state_dict

    state = {
        "adapters": adapter_state_dict(model.sam),
        "decoder": {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
    }
    head = model.head
    img_size = int((base.get("config") or {}).get("img_size", model.sam.img_size))
    meta = {
        "format": FORMAT,
        "base": base,
        "work_mpp": float(model.mpp),
        "tile": _tile_spec(float(halo_um), float(model.mpp), img_size).to_dict(),
        "decoder": {"in_chans": model.decoder.in_chans, "widths": list(model.decoder.widths)},
        "head": {
            "in_dim": head.fc1.in_channels,
            "hidden": head.fc1.out_channels,
            "out_dim": head.fc2.out_channels,
        },
        "window_cells": getattr(options, "window_cells", None),
        "instances": (instances or PointsInstanceParams()).to_dict(),
        "fit_options": _options_dict(options),
        "provenance": model.provenance,
        "history": [
            h for i, h in enumerate(model.history) if i % 10 == 0 or i >= len(model.history) - 5
        ],
    }
    return modeldir.save_model_dir(model_dir, meta, state)


def _tile_spec(halo_um: float, mpp: float, img_size: int) -> TileSpec:
    """Tiles whose core with its halo on both sides is one SAM input of ``img_size`` px."""
    halo_px = int(np.ceil(halo_um / mpp))
    core_um = max(16.0, (img_size - 2 * halo_px - 2) * mpp)
    return TileSpec(halo_um=halo_um, tile_um=core_um, tile_px=img_size)


def _options_dict(options) -> dict[str, Any] | None:
    if options is None:
        return None
    return json.loads(json.dumps(asdict(options), default=modeldir.json_default))


def read_meta(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``model.json`` of a points model directory (a ModelError if it is not one)."""
    return modeldir.read_model_json(model_dir, FORMATS, "points")[0]


def model_settings(meta: dict[str, Any], where: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"work_mpp", "tile", "instances", "migrated"}`` from ``model.json``, complete: a
    missing setting is a ModelError, except in a /1 file (:data:`V1_MIGRATION`, recorded)."""
    v1 = meta.get("format") == "zeropath.points/1"
    if "work_mpp" not in meta:
        raise ModelError(f"{where}: model.json lacks work_mpp")
    work_mpp = float(meta["work_mpp"])
    migrated: dict[str, Any] = {}
    instances, filled = modeldir.complete_config(
        PointsInstanceParams,
        meta.get("instances"),
        f"{where}: instances",
        V1_MIGRATION["instances"] if v1 else None,
    )
    if filled:
        migrated["instances"] = filled
    if v1:  # /1 kept halo_um at the top level and derived the tile from the SAM input size
        if "halo_um" not in meta:
            migrated["halo_um"] = V1_MIGRATION["halo_um"]
        halo = float(meta.get("halo_um", V1_MIGRATION["halo_um"]))
        img_size = int(((meta.get("base") or {}).get("config") or {}).get("img_size", 1024))
        tile = _tile_spec(halo, work_mpp, img_size)
    else:
        tile, _ = modeldir.complete_config(TileSpec, meta.get("tile"), f"{where}: tile")
    if migrated:
        migrated = {"from": meta["format"], **migrated}
    return {"work_mpp": work_mpp, "tile": tile, "instances": instances, "migrated": migrated}


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
    meta, json_sha = modeldir.read_model_json(d, FORMATS, "points")
    settings = model_settings(meta, d)
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
    model = PointsModel(sam, decoder.eval(), head.eval(), settings["work_mpp"])
    model.provenance = meta.get("provenance", {})
    model.weights_sha256 = loaded.sha256  # the bytes of weights.pt actually loaded
    model.sha256 = modeldir.combined_sha256(json_sha, loaded.sha256)  # the model as loaded
    model.base_sha256 = found  # the base weights actually loaded (see base_id)
    return model


class PointsSegmenter(Segmenter):
    """The engine's segmenter around a points model directory (see the module doc)."""

    def __init__(self, model_dir: str | os.PathLike[str], name: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / MODEL_JSON).is_file():
            raise ModelError(
                f"{self.model_dir}: no {MODEL_JSON} here; train one with "
                "`zeropath points fit IMAGES --points DIR --out MODEL_DIR`"
            )
        self.meta = read_meta(self.model_dir)
        settings = model_settings(self.meta, self.model_dir)
        self.name = name or self.model_dir.name
        self.sha256 = model_sha256(self.model_dir)
        self.target_mpp = settings["work_mpp"]
        self.tile = settings["tile"]
        self.instances: PointsInstanceParams = settings["instances"]
        self.migrated: dict[str, Any] = settings["migrated"]
        self._model = None

    def __getstate__(self) -> dict[str, Any]:  # networks are reloaded in each worker process
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    @property
    def model(self):
        if self._model is None:
            model = load_points_model(self.model_dir)
            if model.sha256 != self.sha256:  # every worker must load the model the run records
                from zeropath.errors import ChecksumError

                raise ChecksumError(
                    f"{self.model_dir}: the model changed since it was opened (sha256 "
                    f"{model.sha256[:12]}…, expected {self.sha256[:12]}…); refusing to mix two "
                    "models"
                )
            self._model = model
        return self._model

    def tile_um(self) -> float:
        """Core size in µm such that a tile with its halo on both sides is one SAM input."""
        assert self.tile.tile_um is not None
        return self.tile.tile_um

    def segment_work(self, rgb: np.ndarray, mpp: float | None = None, predict=None) -> np.ndarray:
        """Instance labels of an RGB image already at the model's µm/px."""
        from zeropath.nuclei.instances import instances_from_offsets

        if predict is None:
            from zeropath.points.fit import predict_maps as predict
        prob, offsets = predict(self.model, rgb)
        sam = self.model.sam
        f = sam.img_size / (4 * sam.config.embedding_size)  # working px per map px
        p = self.instances
        return instances_from_offsets(
            prob,
            offsets,
            threshold=float(p.threshold),
            edge_threshold=float(p.edge_threshold) / f,
            marker_radius=float(p.marker_radius),
            sigma=float(p.sigma) * f,
            min_marker_px=int(round(p.min_marker_px * f * f)),
            min_area_px=int(round(p.min_area_px * f * f)),
            fill_holes_px=int(round(p.fill_holes_px * f * f)),
        )

    def describe(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "path": str(self.model_dir),
            "work_mpp": self.target_mpp,
            "halo_um": self.halo_um,
            "base": self.meta.get("base"),
            "instances": self.instances.to_dict(),
            "fit": (self.meta.get("provenance") or {}).get("command"),
        }
        if self.migrated:
            params["migrated"] = self.migrated
        return {"name": self.name, "sha256": self.sha256, "params": params}
