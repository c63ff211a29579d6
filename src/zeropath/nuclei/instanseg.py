"""InstanSeg ``brightfield_nuclei`` (Goldsborough et al., 2024) as a supervised peer.

Not a zeropath method: it was trained with annotations, and serves as the supervised
reference row of the benchmarks and as ``--model instanseg-brightfield-nuclei``. The
TorchScript file comes from the model registry (checksum verified) and runs the way its users
run it: per-channel 0.1/99.9 percentile scaling, 0.5 µm/px, padded to a multiple of 32.
The file is hashed whenever it is loaded: a cached copy damaged in place is refused, and
:meth:`InstanSegSegmenter.describe` reports the SHA-256 of the bytes actually loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeropath.nuclei.base import Segmenter, TileSpec
from zeropath.stain import as_rgb

MODEL_NAME = "instanseg-brightfield-nuclei"


def percentile_normalise(rgb: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """Per-channel percentile scaling to about [0, 1], float32 ``H×W×3``."""
    x = as_rgb(rgb).astype(np.float32)
    lo, hi = np.percentile(x, [low, high], axis=(0, 1))
    return ((x - lo) / np.maximum(hi - lo, 1e-3)).astype(np.float32)


class InstanSegSegmenter(Segmenter):
    """The InstanSeg TorchScript model as a :class:`~zeropath.nuclei.base.Segmenter` (the
    engine gives it tiles at 0.5 µm/px; threads are the CLI's, set once)."""

    name = MODEL_NAME
    target_mpp = 0.5
    tile = TileSpec(halo_um=16.0)
    devices = ("cpu", "cuda", "mps")

    def __init__(self, path: str | None = None) -> None:
        from zeropath.models import get_spec, resolve
        from zeropath.models.weights import verify_file

        self._path = str(resolve(path or MODEL_NAME))
        #: the digest the file must have (the registry's; None for a user's own file)
        self.expected_sha256 = get_spec(MODEL_NAME).sha256 if path is None else None
        self._name = MODEL_NAME if path is None else None
        #: the digest of the file, checked now (a damaged cached copy is refused before any
        #: input is read) and again against the bytes each process loads (``_load``)
        self.sha256: str | None = verify_file(self._path, self.expected_sha256, name=self._name)
        self._model: Any = None
        self.device = "cpu"

    def to(self, device: str) -> InstanSegSegmenter:
        """Run the TorchScript model on ``device`` (moved when each process loads it)."""
        self.device = device
        if self._model is not None:
            self._model.to(device)
        return self

    def __getstate__(self) -> dict[str, Any]:  # the TorchScript module is reloaded per process
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def _load(self) -> Any:
        if self._model is None:
            from zeropath.models.weights import load_torchscript

            loaded = load_torchscript(
                self._path, self.expected_sha256 or self.sha256, name=self._name
            )
            self.sha256 = loaded.sha256
            self._model = loaded.value
            self._model.eval()
            self._model.to(self.device)
        return self._model

    def segment_work(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        import torch

        x = percentile_normalise(rgb)
        h, w = x.shape[:2]
        ph, pw = (-h) % 32, (-w) % 32
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        if ph or pw:
            t = torch.nn.functional.pad(t, (0, pw, 0, ph))
        with torch.inference_mode():
            out = self._load()(t)
        labels = out[0, 0, :h, :w].cpu().numpy()
        return labels.astype(np.uint32)

    def describe(self) -> dict[str, Any]:
        """Name, the SHA-256 of the weights (of the bytes loaded, once loaded), parameters."""
        params = {"mpp": self.target_mpp, "device": self.device}
        return {"name": self.name, "sha256": self.sha256, "params": params}
