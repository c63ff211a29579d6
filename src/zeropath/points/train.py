"""``points fit`` on files: read images and their point files, resample, fit, save.

Each image is read around its points (their bounding box plus a margin, so a whole slide with
a few annotated regions reads only those), resampled to the working µm/px and handed with its
points (level-0 px → working px) to :func:`~zeropath.points.fit.fit_points`. Base embeddings
are cached under the zeropath cache (``home()/sam-embeddings``) so refits skip the encoder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from zeropath.errors import InputError

__all__ = ["DEFAULT_WORK_MPP", "fit_points_files", "load_training_images"]

#: MobileSAM's point masks on H&E are markedly better at 0.125 µm/px than at 0.25 (80× vs 40×)
DEFAULT_WORK_MPP = 0.125
#: context read around the points' bounding box, µm
MARGIN_UM = 32.0
#: at most this many working pixels are read per image
MAX_WORK_PIXELS = 64 * 1024 * 1024


def load_training_images(
    inputs: Sequence[str | os.PathLike[str]],
    points_dir: str | os.PathLike[str],
    mpp: float | None,
    work_mpp: float,
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    """``(images at work_mpp, points in their pixels, per-image records)``.

    Every input needs ``points_dir/STEM.csv`` or ``.geojson``; all point files are checked
    before any pixel is read (a missing one is an :class:`InputError` naming the image)."""
    from zeropath.io.reader import image_stem, list_inputs, open_image
    from zeropath.io.tiler import Box, read_box
    from zeropath.points.io import find_points_file, read_points

    files = list_inputs(inputs)
    point_files = {}
    for f in files:
        try:
            point_files[f] = find_points_file(points_dir, image_stem(f))
        except InputError as exc:
            raise InputError(f, f"no points: {exc.message}") from None
    images, points, records = [], [], []
    for f in files:
        xy = read_points(point_files[f])
        with open_image(f, mpp=mpp) as src:
            w, h = src.dimensions
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
            xy = xy[inside]
            if not len(xy):
                raise InputError(point_files[f], f"no point lies inside {f.name} ({w}×{h} px)")
            margin = MARGIN_UM / src.mpp
            x0 = max(0, int(np.floor(xy[:, 0].min() - margin)))
            y0 = max(0, int(np.floor(xy[:, 1].min() - margin)))
            x1 = min(w, int(np.ceil(xy[:, 0].max() + margin)) + 1)
            y1 = min(h, int(np.ceil(xy[:, 1].max() + margin)) + 1)
            scale = src.mpp / work_mpp
            if (x1 - x0) * (y1 - y0) * scale * scale > MAX_WORK_PIXELS:
                raise InputError(
                    f, "the points span too large a region; annotate smaller regions or images"
                )
            rgb = read_box(src, Box(x0, y0, x1, y1), work_mpp)
            sx, sy = rgb.shape[1] / (x1 - x0), rgb.shape[0] / (y1 - y0)
            local = np.stack(
                [(xy[:, 0] - x0 + 0.5) * sx - 0.5, (xy[:, 1] - y0 + 0.5) * sy - 0.5], 1
            )
            images.append(rgb)
            points.append(local)
            records.append(
                {
                    "input": str(f),
                    "stem": src.stem,
                    "sha256": src.checksum,
                    "points_file": str(point_files[f]),
                    "n_points": int(len(xy)),
                    "n_points_outside": int((~inside).sum()),
                    "mpp": float(src.mpp),
                    "mpp_origin": getattr(src, "mpp_origin", None),
                    "region": [x0, y0, x1, y1],
                }
            )
    return images, points, records


def fit_points_files(
    inputs: Sequence[str | os.PathLike[str]],
    points_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mpp: float | None = None,
    work_mpp: float = DEFAULT_WORK_MPP,
    options=None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress=None,
    command: str | None = None,
):
    """Fit a points model on image files with their point files and save it into ``out``.

    Returns the fitted :class:`~zeropath.points.fit.PointsModel` (its ``provenance`` holds
    the inputs, counts and timings). Torch's thread count is the caller's (the CLI sets it
    once); the one used is recorded in the provenance."""
    import torch

    from zeropath.points import model as pm
    from zeropath.points.fit import PointsFitOptions, fit_points

    opts = options or PointsFitOptions()
    t0 = time.perf_counter()
    images, points, records = load_training_images(inputs, points_dir, mpp, work_mpp)
    t_read = time.perf_counter() - t0
    base_ref = {"name": pm.BASE_NAME}
    sam = pm.load_base(base_ref)
    base_ref["sha256"] = pm.base_id(sam)
    base_ref["config"] = _config_json(sam.config)
    if cache_dir is None:
        from zeropath.models.cache import home

        cache_dir = home() / "sam-embeddings"
    model = fit_points(
        images, points, work_mpp, opts, sam=sam, cache_dir=str(cache_dir), progress=progress
    )
    total = time.perf_counter() - t0
    model.provenance = {
        **model.provenance,
        "command": command,
        "inputs": records,
        "n_training_images": len(images),
        "threads": torch.get_num_threads(),
        "timings": {
            **model.provenance.get("timings", {}),
            "read_s": round(t_read, 2),
            "total_s": round(total, 2),
        },
    }
    pm.save_points_model(model, out, base_ref, opts)
    return model


def _config_json(cfg) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
