"""Dataset loaders: label images, MoNuSeg Aperio XML annotations, and sample listings.

Everything returns plain numpy arrays and paths; every bad input raises
:class:`zeropath.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np

from zeropath.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "MONUSEG_SPLITS",
    "Sample",
    "check_xml_grid",
    "folder_samples",
    "label_stem",
    "load_labels",
    "monuseg_samples",
    "read_label_image",
    "read_monuseg_xml",
    "xml_image",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".xml")
# split name -> (folder under the MoNuSeg root, key in splits_kumar.json or None for "all")
MONUSEG_SPLITS: dict[str, tuple[str, str | None]] = {
    "train": ("train", None),
    "test": ("test", None),
    "kumar_train": ("train", "train"),
    "kumar_val": ("train", "val"),
    "kumar_test": ("train", "test"),
    "kumar_testA": ("train", "testA"),
    "kumar_testB": ("train", "testB"),
}


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its instance labels (``None`` when unlabelled)."""

    stem: str
    image_path: Path
    label_path: Path | None = None


def label_stem(path: str | Path) -> str:
    """The stem a label/prediction file pairs on: ``A.labels.tif`` -> ``A``, ``A.xml`` -> ``A``."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (".labels.tiff", ".labels.tif"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# --------------------------------------------------------------------------------------------
# MoNuSeg Aperio XML


def _parse_aperio_regions(path: Path) -> list[np.ndarray]:
    """Vertices ``(n, 2)`` as (x, y) of every ``<Region>`` in file order.

    Parsed with expat directly so that DTDs and entity declarations are refused outright
    (no entity expansion, no external fetches).
    """
    regions: list[list[tuple[float, float]]] = []
    state = {"root": None, "in_region": False}

    def start(name: str, attrs: dict[str, str]) -> None:
        if state["root"] is None:
            state["root"] = name
        if name == "Region":
            regions.append([])
            state["in_region"] = True
        elif name == "Vertex":
            if not state["in_region"]:
                raise InputError(path, "<Vertex> outside a <Region>")
            try:
                x, y = float(attrs["X"]), float(attrs["Y"])
            except (KeyError, ValueError) as exc:
                raise InputError(path, f"bad <Vertex> attributes {attrs!r}") from exc
            if not (np.isfinite(x) and np.isfinite(y)):
                raise InputError(path, f"non-finite vertex {attrs!r}")
            regions[-1].append((x, y))

    def end(name: str) -> None:
        if name == "Region":
            state["in_region"] = False

    def refuse(*_args: object) -> None:
        raise InputError(path, "DTDs and entity declarations are not allowed in annotation XML")

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    except expat.ExpatError as exc:
        raise InputError(path, f"malformed XML: {exc}") from exc
    if state["root"] != "Annotations":
        raise InputError(path, f"not an Aperio annotation file (root <{state['root']}>)")
    return [np.asarray(v, np.float64).reshape(-1, 2) for v in regions]


#: Image suffixes searched for the raster grid of an XML annotation, in order.
_XML_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

#: Vertices may lie this far outside their image (MoNuSeg's reach 1001 on a 1000 grid).
_XML_EDGE_SLACK = 2.0


def xml_image(path: str | Path) -> Path | None:
    """The image an XML annotation was drawn on: ``STEM.<image suffix>`` beside it or in a
    sibling ``images/`` folder (the MoNuSeg layout ``annotations/`` + ``images/``)."""
    path = Path(path)
    folders = [path.parent, path.parent.parent / "images", path.parent / "images"]
    for folder in folders:
        for suffix in _XML_IMAGE_SUFFIXES:
            for name in (path.stem + suffix, path.stem + suffix.upper()):
                candidate = folder / name
                if candidate.is_file():
                    return candidate
    return None


def check_xml_grid(path: str | Path, shape: Sequence[int]) -> str:
    """Check that ``shape`` is the grid the XML annotation ``path`` belongs to.

    With the annotated image found (:func:`xml_image`) its size must equal ``shape``;
    without it, no vertex may lie more than two pixels outside ``shape`` (a grid cropped
    from the image fails; a padded one cannot be told apart). Returns ``"image"`` or
    ``"extent"`` (which check was made); raises :class:`InputError` on a mismatch.
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)[:2]
    image = xml_image(path)
    if image is not None:
        expected = image_shape(image)
        if expected != shape:
            raise InputError(
                path,
                f"prediction shape {shape} differs from the annotated image {image.name} "
                f"{expected}",
            )
        return "image"
    for vertices in _parse_aperio_regions(path):
        if vertices.shape[0] == 0:
            continue
        x_max, y_max = vertices.max(axis=0)
        if y_max > shape[0] + _XML_EDGE_SLACK or x_max > shape[1] + _XML_EDGE_SLACK:
            raise InputError(
                path,
                f"annotations reach x={x_max:g}, y={y_max:g}, outside the prediction's "
                f"{shape[1]}×{shape[0]} grid (a cropped or rescaled prediction?)",
            )
    return "extent"


def read_monuseg_xml(path: str | Path, shape: Sequence[int]) -> np.ndarray:
    """Rasterise a MoNuSeg (Aperio) XML annotation into a uint32 instance label image.

    Region ``k`` (1-based, file order) is filled with ``skimage.draw.polygon(rows=Y, cols=X)``
    on a grid of ``shape`` with value ``k``; later regions overwrite earlier ones, and parts
    outside the grid are clipped. This is the MoNuSeg convention the benchmark numbers use.
    """
    from skimage.draw import polygon

    path = Path(path)
    shape = tuple(int(s) for s in shape)[:2]
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(path, f"invalid raster shape {shape}")
    labels = np.zeros(shape, np.uint32)
    for k, vertices in enumerate(_parse_aperio_regions(path), start=1):
        if vertices.shape[0] == 0:
            continue
        rr, cc = polygon(vertices[:, 1], vertices[:, 0], shape=shape)
        labels[rr, cc] = k
    return labels


# --------------------------------------------------------------------------------------------
# Label images


def _as_label_array(path: Path, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = arr.squeeze()  # single-channel / single-page axes
    if arr.ndim != 2:
        raise InputError(
            path, f"not a label image: shape {arr.shape} (RGB or multi-channel labels)"
        )
    if min(arr.shape) < 1:
        raise InputError(path, "empty label image")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(path, f"label image of dtype {arr.dtype} has non-integer values")
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(path, f"unsupported label dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger):
        if arr.size and int(arr.min()) < 0:
            raise InputError(path, "label image has negative values")
        if arr.size and int(arr.max()) <= np.iinfo(np.uint32).max:
            arr = arr.astype(np.uint32)
    return arr


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a PNG/TIFF instance label image (8/16/32-bit, single channel) as a 2-D array.

    Single-channel axes are squeezed; RGB/multi-channel images, float images with
    non-integer values and negative labels are refused with :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "label file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path, key=0)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
                    raise InputError(path, f"not a label image: {im.mode} colour image")
                arr = np.array(im)
        else:
            raise InputError(path, f"unsupported label file type {path.suffix!r}")
    except InputError:
        raise
    except Exception as exc:  # any decoder error -> one clear line
        raise InputError(path, f"cannot read label image: {exc}") from exc
    return _as_label_array(path, arr)


def image_shape(path: str | Path) -> tuple[int, int]:
    """(rows, cols) of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception as exc:
        raise InputError(path, f"cannot read image header: {exc}") from exc


def load_labels(
    sample_or_path: Sample | str | Path, shape: Sequence[int] | None = None
) -> np.ndarray:
    """Instance labels of a sample or a label file, dispatching on the suffix.

    ``.xml`` (MoNuSeg) needs the raster ``shape``: given, or taken from the sample's image.
    """
    if isinstance(sample_or_path, Sample):
        if sample_or_path.label_path is None:
            raise InputError(sample_or_path.image_path, "sample has no labels")
        path = Path(sample_or_path.label_path)
        image_path: Path | None = Path(sample_or_path.image_path)
    else:
        path = Path(sample_or_path)
        image_path = None
    if path.suffix.lower() == ".xml":
        if shape is None:
            if image_path is None:
                raise InputError(path, "an XML annotation needs the image shape to rasterise")
            shape = image_shape(image_path)
        return read_monuseg_xml(path, shape)
    labels = read_label_image(path)
    if shape is not None and labels.shape != tuple(shape)[:2]:
        raise InputError(path, f"label shape {labels.shape} differs from {tuple(shape)[:2]}")
    return labels


# --------------------------------------------------------------------------------------------
# Sample listings


def monuseg_samples(root: str | Path, split: str) -> list[Sample]:
    """Samples of a MoNuSeg split under ``root`` (the folder holding ``train/`` and ``test/``).

    ``train``/``test`` are the official 30/14 images (labels: ``train/labels/*.png``,
    ``test/annotations/*.xml``); ``kumar_*`` are the Kumar/Qu subsets of the official training
    images listed in ``root/splits_kumar.json`` (train 12, val 4, test 14 = testA 8 + testB 6).
    """
    root = Path(root)
    if split not in MONUSEG_SPLITS:
        choices = ", ".join(MONUSEG_SPLITS)
        raise InputError(root, f"unknown MoNuSeg split {split!r}; use one of {choices}")
    folder, key = MONUSEG_SPLITS[split]
    images = root / folder / "images"
    if not images.is_dir():
        raise InputError(images, "MoNuSeg image folder not found")
    if key is None:
        stems = sorted(p.stem for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        split_file = root / "splits_kumar.json"
        try:
            stems = list(json.loads(split_file.read_text())["split"][key])
        except OSError as exc:
            raise InputError(split_file, f"cannot read: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(split_file, f"no split {key!r} in it ({exc})") from exc
    samples = []
    for stem in stems:
        image = images / f"{stem}.tif"
        label = (
            root / "train" / "labels" / f"{stem}.png"
            if folder == "train"
            else root / "test" / "annotations" / f"{stem}.xml"
        )
        if not image.is_file():
            raise InputError(image, "MoNuSeg image listed in the split is missing")
        if not label.is_file():
            raise InputError(label, "MoNuSeg label file is missing")
        samples.append(Sample(stem=stem, image_path=image, label_path=label))
    if not samples:
        raise InputError(images, f"no images in MoNuSeg split {split!r}")
    return samples


def folder_samples(root: str | Path) -> list[Sample]:
    """Samples of a generic ``root/images/*`` + ``root/labels/*`` layout, paired by stem.

    Labels may be label images or MoNuSeg XML (``STEM.png``, ``STEM.tif``, ``STEM.labels.tif``,
    ``STEM.xml``); images without a label get ``label_path=None``.
    """
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise InputError(images, "image folder not found (expected ROOT/images and ROOT/labels)")
    labels: dict[str, Path] = {}
    label_dir = root / "labels"
    if label_dir.is_dir():
        rank = {s: i for i, s in enumerate(LABEL_SUFFIXES)}
        for p in sorted(label_dir.iterdir()):
            if not p.is_file() or p.suffix.lower() not in rank:
                continue
            stem = label_stem(p)
            old = labels.get(stem)
            if old is None or rank[p.suffix.lower()] < rank[old.suffix.lower()]:
                labels[stem] = p
    samples = [
        Sample(stem=p.stem, image_path=p, label_path=labels.get(p.stem))
        for p in sorted(images.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise InputError(images, "no images found")
    return samples
