"""What every nucleus segmenter is: the protocol the tile engine runs, and its shared parts.

A segmenter (classical, InstanSeg, ZA-Net, points, or a new one) subclasses :class:`Segmenter`
and sets

* ``name`` and ``sha256`` (of the model's bytes as loaded; None for code-only methods),
* ``target_mpp`` — the µm/px it works at (None: any; it takes the input's pixels as they are),
* ``tile`` — its :class:`TileSpec` (context halo around each tile core, preferred core size,
  the network's own tile and overlap),

and implements :meth:`Segmenter.segment_work` (instance labels of an image already at
``target_mpp``) and :meth:`Segmenter.describe` (name, sha256, parameters for ``run.json``).

**Only the engine resamples.** :func:`zeropath.run.segment.segment_input` reads each tile at
the segmenter's ``target_mpp`` and calls :meth:`Segmenter.segment` with that µm/px, which then
passes the pixels through unchanged. A segmenter called directly as a library function on an
image at another µm/px is resampled by :func:`at_target_mpp`, the one helper for this (the same
5 % tolerance as the engine), and its labels are returned on the input's grid.

Devices: :meth:`Segmenter.to` moves a learned model; the base refuses any device but the CPU
(a :class:`~zeropath.errors.ConfigError`), so a CPU-only method says so instead of pretending.
Threads and seeds are not a segmenter's business: the CLI / run layer sets them once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from zeropath.errors import ConfigError

__all__ = ["MPP_TOLERANCE", "Segmenter", "TileSpec", "at_target_mpp", "torch_seed"]

#: Inputs within this relative difference of a segmenter's µm/px are used as they are.
MPP_TOLERANCE = 0.05


@dataclass(frozen=True)
class TileSpec:
    """How the engine tiles an input for a segmenter (lengths in µm, sizes in px).

    ``halo_um``: context read around each tile core (wider than a nucleus, so an object whose
    centroid lies in the core is whole). ``tile_um``: the core size the segmenter wants (None:
    the CLI's ``--tile-um``). ``tile_px`` / ``overlap_px``: the network's own dense-prediction
    tile and overlap (None: the network's tiler decides).
    """

    halo_um: float
    tile_um: float | None = None
    tile_px: int | None = None
    overlap_px: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def needs_resampling(mpp: float, target_mpp: float | None) -> bool:
    """True when pixels at ``mpp`` must be resampled for a segmenter at ``target_mpp`` (the
    engine's rule: more than :data:`MPP_TOLERANCE` apart, relative to ``mpp``)."""
    return target_mpp is not None and abs(target_mpp / mpp - 1.0) > MPP_TOLERANCE


def at_target_mpp(
    rgb: np.ndarray, mpp: float, target_mpp: float | None
) -> tuple[np.ndarray, float]:
    """``(pixels, µm/px)`` of ``rgb`` for a segmenter at ``target_mpp``: unchanged (and at
    ``mpp``) within :data:`MPP_TOLERANCE`, else resampled to ``target_mpp``."""
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if not needs_resampling(mpp, target_mpp):
        return rgb, float(mpp)
    from zeropath.io.tiler import resize_rgb

    assert target_mpp is not None
    scale = mpp / target_mpp
    h, w = rgb.shape[:2]
    shape = (max(2, int(round(h * scale))), max(2, int(round(w * scale))))
    return resize_rgb(rgb, shape), float(target_mpp)


class Segmenter:
    """Base of the nucleus segmenters the engine runs (see the module doc)."""

    name: str = "segmenter"
    sha256: str | None = None
    target_mpp: float | None = None
    tile: TileSpec = TileSpec(halo_um=12.0)
    device: str = "cpu"
    #: the devices :meth:`to` accepts (a learned model widens it)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    @property
    def halo_um(self) -> float:
        """µm of context the engine reads around each tile core (``tile.halo_um``)."""
        return self.tile.halo_um

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """uint32 instance labels on ``rgb``'s grid (``rgb`` at ``mpp`` µm/px)."""
        from zeropath.stain import as_rgb

        rgb = as_rgb(rgb)
        work, work_mpp = at_target_mpp(rgb, mpp, self.target_mpp)
        labels = self.segment_work(work, work_mpp)
        if labels.shape != rgb.shape[:2]:
            from zeropath.io.tiler import resize_labels

            labels = resize_labels(labels, rgb.shape[:2])
        return labels.astype(np.uint32, copy=False)

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """Instance labels of ``rgb`` at ``mpp`` (``target_mpp`` within the tolerance)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """``{"name", "sha256", "params"}`` for ``run.json``."""
        return {"name": self.name, "sha256": self.sha256, "params": {}}

    def to(self, device: str) -> Segmenter:
        """Run on ``device``; a method that runs on the CPU only refuses any other."""
        if device not in self.devices:
            raise ConfigError(f"--device {device}: the {self.name} model runs on the CPU only")
        self.device = device
        return self


@contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block and restore its state afterwards, so that a
    library fit is deterministic for its seed without changing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
