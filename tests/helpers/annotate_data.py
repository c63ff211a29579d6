"""Tiny annotation queues, as ``zeropath active run`` without an oracle leaves them.

``pool/tile.png`` (300×200 RGB, a smooth colour ramp) and ``out/queue/``:

* :func:`make_queue` — ``index.json`` listing two regions, ``"unlabelled": 255`` (partial masks
  allowed), one ``ID.json`` per region (image path, box as ``[x0, y0, x1, y1]``, round, two
  classes with colours);
* :func:`make_loop_queue` — the layout ``zeropath.active.queue.QueueStore.write`` produces:
  plain ids ``STEM__rROW_cCOL`` in the index with the run's keys, regions with
  ``box = {"x", "y", "width", "height"}`` (64 px grid, one clipped at the image edge), class
  *names* only, no unlabelled value (every pixel needs a class) and a crop ``ID.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 300, 200
BACKGROUND = {"index": 0, "name": "background", "color": [40, 160, 60]}
TUMOR = {"index": 1, "name": "tumor", "color": [220, 40, 40]}
CLASSES = [BACKGROUND, TUMOR]
REGIONS = {
    "r0001": (40, 30, 200, 150),  # 160×120
    "r0002": (150, 100, 290, 190),  # 140×90
}
LOOP_CLASSES = ["background", "foreground"]
LOOP_REGIONS = {
    "tile__r0_c1": (64, 0, 128, 64),
    "tile__r2_c4": (256, 128, 300, 192),  # clipped at the right edge: 44×64
}


@dataclass
class QueueData:
    image: Path
    out: Path

    @property
    def queue(self) -> Path:
        return self.out / "queue"

    def mask(self, rid: str) -> Path:
        return self.queue / f"{rid}.mask.png"


def _image(root: Path) -> tuple[Path, np.ndarray]:
    from PIL import Image

    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack(
        [150 + xx * 80 // WIDTH, 120 + yy * 60 // HEIGHT, np.full_like(xx, 190)], axis=-1
    ).astype(np.uint8)
    image = pool / "tile.png"
    Image.fromarray(rgb).save(image)
    return image, rgb


def make_queue(root: Path, relative_image: bool = False) -> QueueData:
    """A two-region queue that allows partial masks (unpainted pixels saved as 255)."""
    image, _ = _image(root)
    out = root / "out"
    queue = out / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    image_ref = "../../pool/tile.png" if relative_image else str(image)
    index = {"round": 1, "unlabelled": 255, "regions": [{"id": rid} for rid in REGIONS]}
    (queue / "index.json").write_text(json.dumps(index, indent=1))
    for rid, box in REGIONS.items():
        (queue / f"{rid}.json").write_text(
            json.dumps(
                {"id": rid, "image": image_ref, "box": list(box), "round": 1, "classes": CLASSES},
                indent=1,
            )
        )
    return QueueData(image=image, out=out)


def make_loop_queue(root: Path) -> QueueData:
    """The queue as the active-learning loop writes it (see the module docstring)."""
    from PIL import Image

    image, rgb = _image(root)
    out = root / "out"
    queue = out / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    run = {
        "run": "combined-seed0",
        "strategy": "combined",
        "seed": 0,
        "round": 2,
        "classes": LOOP_CLASSES,
        "out": str(out.resolve()),
    }
    for rid, (x0, y0, x1, y1) in LOOP_REGIONS.items():
        entry = {
            "id": rid,
            "image": str(image.resolve()),
            "stem": "tile",
            "box": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0},
            "round": 2,
            "run": "combined-seed0",
            "classes": LOOP_CLASSES,
            "mask": f"{rid}.mask.png",
            "crop": f"{rid}.png",
        }
        (queue / f"{rid}.json").write_text(json.dumps(entry, indent=2))
        Image.fromarray(rgb[y0:y1, x0:x1]).save(queue / f"{rid}.png")
    index = {**run, "regions": list(LOOP_REGIONS)}
    (queue / "index.json").write_text(json.dumps(index, indent=2))
    return QueueData(image=image, out=out)
