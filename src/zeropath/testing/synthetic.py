"""A deterministic encoder whose answers are known exactly, for testing pipelines that use VLMs
(registry row ``synthetic``, test-only: ``--encoder synthetic``).

:class:`SyntheticEncoder` maps texts and colours into one embedding space by construction:

- **text**: a text is assigned to the class whose name (or alias) occurs in it, case-insensitively
  (the longest match wins; among equally long ones the *last* in the text, since English puts
  the head noun last — "cancer-associated stroma" is stroma); its embedding is that
  class's fixed unit vector ``e_k`` (class ``k`` is the ``k``-th standard basis vector, so the
  class vectors are orthonormal). A text that names no class gets a unit vector orthogonal to
  every class vector, derived from the SHA-256 of the normalised text (so it is the same on
  every machine and in every run).
- **image**: the tile is centre-cropped to a square and box-averaged to ``input_size`` (the same
  geometry as the real models' shortest-side resize + centre crop, with an area filter so the
  arithmetic is exact); its mean RGB ``m`` gives class weights ``w = softmax(-|m - c_k|² / T)``
  over the class colours ``c_k``, and the embedding is ``Σ w_k e_k`` normalised.

So ``cos(image, text(k)) = w_k / |w|``: a tile whose mean colour is class ``k``'s colour is most
similar to ``k``'s prompts, and a tile mixing two class colours 70/30 is more similar to the 70 %
class than to the 30 % one (always: its mean colour is nearer the majority colour). Whether it is
also nearer the majority than to every *other* class depends on the palette (see
:data:`DEFAULT_CLASSES`). :meth:`SyntheticEncoder.encode_patches` applies the same rule to each
16-px patch of the resized tile.

Default classes (:data:`DEFAULT_CLASSES`) are H&E-like colours for the common tissue names; pass
``classes`` to use your own. Nothing here needs torch.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.models.encoders.base import Encoder, EncoderError, l2_normalise

if TYPE_CHECKING:
    from zeropath.models.spec import ModelSpec

__all__ = [
    "DEFAULT_ALIASES",
    "DEFAULT_CLASSES",
    "PATCH_SIZE",
    "SyntheticEncoder",
    "synthetic_encoder",
]

#: Side in pixels (at ``input_size``) of one :meth:`SyntheticEncoder.encode_patches` cell.
PATCH_SIZE = 16

#: H&E-like RGB colours of the default classes (what a tile of that tissue roughly averages to).
#: Class names are matched as case-insensitive substrings, so "tumor" also matches "tumors" and
#: "lymphocyte" matches "lymphocytes"; the colours are at least 35 RGB units apart. A 70/30 mix
#: of tumor and stroma has its highest cosine with the majority class among *all* of them;
#: for other pairs only "majority beats minority" is guaranteed (a third colour can lie
#: between two others: fat sits between stroma and background, as it does on a slide).
DEFAULT_CLASSES: dict[str, tuple[int, int, int]] = {
    "tumor": (130, 60, 140),  # dense haematoxylin-rich epithelium: dark purple
    "stroma": (230, 150, 190),  # collagen, eosin: pink
    "normal": (155, 125, 185),  # benign glands / mucosa / epidermis: lavender purple
    "necrosis": (180, 110, 110),  # eosinophilic debris: dusky red-pink
    "lymphocyte": (70, 40, 120),  # packed small round nuclei: very dark blue-purple
    "fat": (235, 215, 225),  # adipocytes: white with thin pink membranes
    "muscle": (210, 90, 120),  # smooth/skeletal muscle: deep pink-red
    "blood": (220, 40, 60),  # erythrocytes: bright red
    "mucus": (190, 180, 215),  # mucin: pale blue-lilac
    "background": (245, 245, 245),  # glass, no tissue: near white
}

#: Other words the default classes answer to (used only when ``classes`` is the default table).
#: Chosen so that the class names of the shipped prompt library (``zeropath/data/prompts``) land
#: on the obvious default class.
DEFAULT_ALIASES: dict[str, str] = {
    "tumour": "tumor",
    "cancer": "tumor",
    "carcinoma": "tumor",
    "malignant": "tumor",
    "abnormal": "tumor",  # longer than "normal", so it wins
    "melanoma": "tumor",
    "dcis": "tumor",
    "benign": "normal",
    "gland": "normal",
    "mucosa": "normal",
    "crypt": "normal",
    "dermis": "normal",
    "terminal duct": "normal",
    "collagen": "stroma",
    "connective": "stroma",
    "necrotic": "necrosis",
    "debris": "necrosis",
    "immune": "lymphocyte",
    "lymphoid": "lymphocyte",
    "lymphocytic": "lymphocyte",
    "adipose": "fat",
    "adipocyte": "fat",
    "muscularis": "muscle",
    "mucin": "mucus",
    "erythrocyte": "blood",
    "glass": "background",
    "blank": "background",
}

_CONFIG_FILE = "zeropath-encoder.json"


def _hash_unit_floats(text: str, n: int) -> np.ndarray:
    """``n`` floats in ``[-1, 1)`` from SHA-256 of ``text`` (counter mode): platform independent."""
    out = np.empty(n, np.float64)
    filled, counter = 0, 0
    while filled < n:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (value,) in struct.iter_unpack("<I", block):
            if filled == n:
                break
            out[filled] = value / 2**31 - 1.0
            filled += 1
        counter += 1
    return out


def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` area-averaging weights: cell ``i`` covers ``[i, i+1) * n_in/n_out``."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


class SyntheticEncoder(Encoder):
    """Colour → class-vector encoder with exactly known similarities (see the module docstring).

    ``classes`` maps class names to RGB colours (default :data:`DEFAULT_CLASSES`);
    ``temperature`` is in squared RGB units (the default 1000 makes a colour 50 units from a
    class weigh ``e^-2.5`` ≈ 8 % of an exact match); ``embed_dim`` must exceed the number of
    classes so that texts naming no class have room to be orthogonal to all of them.
    """

    def __init__(
        self,
        classes: Mapping[str, tuple[int, int, int]] | None = None,
        input_size: int = 224,
        mpp: float = 1.0,
        embed_dim: int = 16,
        temperature: float = 1000.0,
        *,
        aliases: Mapping[str, str] | None = None,
        name: str = "synthetic",
    ) -> None:
        if classes is None:
            classes = DEFAULT_CLASSES
            if aliases is None:
                aliases = DEFAULT_ALIASES
        if not classes:
            raise EncoderError("SyntheticEncoder needs at least one class")
        if embed_dim <= len(classes):
            raise EncoderError(
                f"SyntheticEncoder: embed_dim={embed_dim} must exceed the number of classes "
                f"({len(classes)}) so that unmatched texts can be orthogonal to every class"
            )
        if input_size < PATCH_SIZE or temperature <= 0:
            raise EncoderError("SyntheticEncoder: input_size must be >= 16 and temperature > 0")
        self.class_names: list[str] = list(classes)
        self.colours = np.array([tuple(classes[k]) for k in self.class_names], np.float64)
        if self.colours.shape != (len(self.class_names), 3):
            raise EncoderError("SyntheticEncoder: every class colour must be an (R, G, B) triple")
        lowered = [k.lower() for k in self.class_names]
        if len(set(lowered)) != len(lowered):
            raise EncoderError("SyntheticEncoder: class names must differ ignoring case")
        self.aliases: dict[str, str] = {}
        for word, target in (aliases or {}).items():
            if target not in classes:
                raise EncoderError(
                    f"SyntheticEncoder: alias {word!r} names unknown class {target!r}"
                )
            self.aliases[word.lower()] = target
        self.name = name
        self.input_size = int(input_size)
        self.mpp = float(mpp)
        self.embed_dim = int(embed_dim)
        self.temperature = float(temperature)
        self.grid = self.input_size // PATCH_SIZE
        #: ``(C, D)`` orthonormal class vectors: row ``k`` is the ``k``-th standard basis vector.
        self.class_vectors = np.eye(len(self.class_names), self.embed_dim, dtype=np.float32)
        # (needle, class index) pairs matched against lower-cased text
        self._needles = [(k.lower(), i) for i, k in enumerate(self.class_names)] + [
            (word, self.class_names.index(target)) for word, target in self.aliases.items()
        ]
        digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()
        self.provenance = {
            "name": name,
            "licence": "Apache-2.0",
            "source": "builtin",
            "revision": f"config-{digest[:16]}",  # identifies the behaviour, like a weights hash
            "config_sha256": digest,
        }

    # ----------------------------------------------------------------------------- text side
    def class_of(self, text: str) -> str | None:
        """The class ``text`` names (longest match, then the last, then class order) or ``None``."""
        low = text.lower()
        best: tuple[int, int, int] | None = None  # (-length, -position, class index)
        for needle, index in self._needles:
            pos = low.rfind(needle)
            if pos >= 0:
                key = (-len(needle), -pos, index)
                if best is None or key < best:
                    best = key
        return None if best is None else self.class_names[best[2]]

    def text_vector(self, text: str) -> np.ndarray:
        """The unit embedding of one text (see :meth:`encode_texts`)."""
        cls = self.class_of(text)
        if cls is not None:
            return self.class_vectors[self.class_names.index(cls)].copy()
        n = len(self.class_names)
        vec = np.zeros(self.embed_dim, np.float64)
        vec[n:] = _hash_unit_floats(" ".join(text.lower().split()), self.embed_dim - n)
        if not np.any(vec):  # vanishingly unlikely; keep the vector unit length anyway
            vec[n] = 1.0
        return l2_normalise(vec)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Each text → its class vector, or a hash-seeded unit vector orthogonal to all classes."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        for i, text in enumerate(texts):
            out[i] = self.text_vector(text)
        return out

    # ---------------------------------------------------------------------------- image side
    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
        return images

    def patch_colours(self, images: np.ndarray) -> np.ndarray:
        """``(N, g, g, 3)`` float64 mean RGB of each 16-px patch of the tiles resized to
        ``input_size`` (centre square crop, then exact area averaging); ``g = input_size // 16``.
        """
        images = self._check(images)
        n, h, w, _ = images.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        a = _box_matrix(side, self.grid)
        out = np.empty((n, self.grid, self.grid, 3), np.float64)
        for start in range(0, n, 16):  # bounded float64 temporaries for big batches of big tiles
            crop = images[start : start + 16, top : top + side, left : left + side]
            out[start : start + 16] = np.einsum(
                "ip,npqc,jq->nijc", a, crop.astype(np.float64), a, optimize=True
            )
        return out

    def weights(self, colours: np.ndarray) -> np.ndarray:
        """``(..., C)`` weights softmax(-|colour - c_k|² / T) for ``(..., 3)`` mean colours."""
        colours = np.asarray(colours, np.float64)
        d2 = ((colours[..., None, :] - self.colours) ** 2).sum(axis=-1)
        logits = -d2 / self.temperature
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def _embed_colours(self, colours: np.ndarray) -> np.ndarray:
        return l2_normalise(self.weights(colours) @ self.class_vectors.astype(np.float64))

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Mean colour of the resized tile → class-weighted unit vector, ``(N, embed_dim)``."""
        colours = self.patch_colours(images).mean(axis=(1, 2))
        return self._embed_colours(colours)

    def encode_patches(self, images: np.ndarray) -> np.ndarray:
        """The :meth:`encode_images` rule per 16-px patch: ``(N, g, g, embed_dim)``."""
        return self._embed_colours(self.patch_colours(images))

    # ------------------------------------------------------------------------------- helpers
    def tile(self, name: str, size: int | None = None) -> np.ndarray:
        """A uniform ``(size, size, 3)`` uint8 tile of class ``name``'s colour (for tests)."""
        size = self.input_size if size is None else int(size)
        colour = self.colours[self.class_names.index(name)]
        return np.broadcast_to(colour.astype(np.uint8), (size, size, 3)).copy()

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-able data (what :meth:`save` writes)."""
        return {
            "kind": "synthetic",
            "classes": {
                k: [int(v) for v in c] for k, c in zip(self.class_names, self.colours, strict=True)
            },
            "aliases": dict(self.aliases),
            "input_size": self.input_size,
            "mpp": self.mpp,
            "embed_dim": self.embed_dim,
            "temperature": self.temperature,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``zeropath-encoder.json`` into ``directory``; ``--encoder DIR`` reloads it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _CONFIG_FILE
        path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return path

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str = "synthetic") -> SyntheticEncoder:
        """Rebuild from :meth:`config` output (unknown keys are an error, to catch typos)."""
        known = {"kind", "classes", "aliases", "input_size", "mpp", "embed_dim", "temperature"}
        extra = set(config) - known
        if extra:
            raise EncoderError(f"synthetic encoder config has unknown keys: {sorted(extra)}")
        classes = config.get("classes")
        return cls(
            classes=None if classes is None else {k: tuple(v) for k, v in classes.items()},
            input_size=int(config.get("input_size", 224)),
            mpp=float(config.get("mpp", 1.0)),
            embed_dim=int(config.get("embed_dim", 16)),
            temperature=float(config.get("temperature", 1000.0)),
            aliases=config.get("aliases"),
            name=name,
        )


def synthetic_encoder(
    spec: ModelSpec | None, path: str | None, device: str = "cpu"
) -> SyntheticEncoder:
    """The registry factory: the default :class:`SyntheticEncoder`, or the one saved in
    ``path`` (``spec`` and ``device`` unused)."""
    if path is None:
        return SyntheticEncoder()
    config_path = Path(path) / _CONFIG_FILE
    if not config_path.is_file():
        raise EncoderError(f"{path}: no {_CONFIG_FILE} describing a synthetic encoder")
    return SyntheticEncoder.from_config(json.loads(config_path.read_text()), name=str(path))
