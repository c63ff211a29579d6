"""A small synthetic slide plus fake zeropath outputs for the viewer tests.

Written with tifffile/json directly, following docs/reference.md: ``slides/sample.tif`` (RGB,
1500×1200, pink with dark round blobs), and in ``out/``: ``sample.geojson`` (the blobs as
nucleus polygons with measurements, two classes), ``sample.labels.tif``,
``sample.tissue.tif`` (4× coarser class map: background strip, tumour left, stroma right,
JSON class table in ImageDescription) and ``run.json`` naming the slide.

:func:`viewer_process` runs ``zeropath view`` in a subprocess, as a person would.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 1500, 1200
STROMA_PINK = (236, 170, 200)
NUCLEUS_PURPLE = (90, 60, 140)
TUMOR = {"index": 1, "name": "tumor", "color": [255, 140, 0]}
STROMA = {"index": 2, "name": "stroma", "color": [0, 90, 255]}
CLASSES = [{"index": 0, "name": "background", "color": [255, 255, 255]}, TUMOR, STROMA]
NUCLEUS = {"name": "Nucleus", "color": [0, 255, 0]}
LYMPHOCYTE = {"name": "Lymphocyte", "color": [255, 0, 255]}
TISSUE_SCALE = 4  # slide pixels per tissue map pixel
BACKGROUND_ROWS = 25  # top rows of the tissue map that are background


@dataclass
class ViewerData:
    slide: Path
    out: Path
    nuclei: list[dict] = field(default_factory=list)  # id, cx, cy, r, measurements, class

    @property
    def geojson(self) -> Path:
        return self.out / "sample.geojson"

    @property
    def tissue(self) -> Path:
        return self.out / "sample.tissue.tif"


def _circle(cx: float, cy: float, r: float, n: int = 24) -> list[list[float]]:
    pts = [
        [
            round(cx + r * math.cos(2 * math.pi * k / n), 2),
            round(cy + r * math.sin(2 * math.pi * k / n), 2),
        ]
        for k in range(n)
    ]
    return [*pts, pts[0]]


def make_viewer_data(root: Path) -> ViewerData:
    """Write the slide and outputs under ``root`` and describe them."""
    import tifffile

    slides, out = root / "slides", root / "out"
    slides.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    centres = [
        (300, 400, 40), (520, 380, 30), (420, 640, 36), (700, 820, 28),
        (1050, 500, 42), (1200, 900, 32), (950, 1050, 26), (180, 1000, 30),
    ]  # fmt: skip
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:] = STROMA_PINK
    labels = np.zeros((HEIGHT, WIDTH), np.uint32)
    nuclei = []
    features = []
    for i, (cx, cy, r) in enumerate(centres, start=1):
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        rgb[inside] = NUCLEUS_PURPLE
        labels[inside] = i
        cls = LYMPHOCYTE if i % 4 == 0 else NUCLEUS
        measurements = {
            "Area µm^2": round(math.pi * (r * 0.5) ** 2, 4),
            "Perimeter µm": round(2 * math.pi * r * 0.5, 4),
            "Hematoxylin OD mean": round(0.3 + 0.01 * i, 4),
        }
        nuclei.append({"id": i, "cx": cx, "cy": cy, "r": r, "class": cls, "m": measurements})
        features.append(
            {
                "type": "Feature",
                "id": f"00000000-0000-0000-0000-{i:012d}",
                "geometry": {"type": "Polygon", "coordinates": [_circle(cx, cy, r)]},
                "properties": {
                    "objectType": "detection",
                    "classification": cls,
                    "measurements": measurements,
                    "id": i,
                },
            }
        )
    slide = slides / "sample.tif"
    ppcm = 1e4 / 0.5  # 0.5 µm/px
    tifffile.imwrite(
        slide, rgb, photometric="rgb", tile=(256, 256), resolution=(ppcm, ppcm),
        resolutionunit="CENTIMETER", metadata=None,
    )  # fmt: skip
    (out / "sample.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
    )
    tifffile.imwrite(out / "sample.labels.tif", labels, metadata=None)

    th, tw = HEIGHT // TISSUE_SCALE, WIDTH // TISSUE_SCALE
    classes = np.full((th, tw), STROMA["index"], np.uint8)
    classes[:, : tw // 2] = TUMOR["index"]
    classes[:BACKGROUND_ROWS] = 0
    tifffile.imwrite(
        out / "sample.tissue.tif",
        classes,
        description=json.dumps({"classes": CLASSES, "mpp": 0.5 * TISSUE_SCALE}),
        metadata=None,
    )
    (out / "run.json").write_text(
        json.dumps({"version": "test", "inputs": [{"input": str(slide), "stem": "sample"}]}),
        encoding="utf-8",
    )
    return ViewerData(slide=slide, out=out, nuclei=nuclei)


@contextlib.contextmanager
def viewer_process(*args: str) -> Iterator[tuple[str, str, str]]:
    """``zeropath view ARGS --port 0 --no-browser`` in a subprocess: yields its first line,
    the URL and the write token it printed; then stops it with Ctrl+C and checks it exits 0."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeropath", "view", *args, "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("zeropath viewer at http://127.0.0.1:"), line
        url, _, token = line.split()[3].partition("?token=")
        assert len(token) >= 32  # the printed (and opened) URL carries the write token
        yield line, url, token
    finally:
        proc.send_signal(2)  # SIGINT, i.e. Ctrl+C
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
