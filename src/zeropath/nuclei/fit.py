"""``nuclei fit``: learn a nucleus segmenter from unlabelled images (zero annotations).

1. coarse centres from the stain prior (hematoxylin blobs), no labels;
2. a confidence-map network refined by precision learning (self-training that keeps only
   confident, augmentation-consistent peaks);
3. pixel pseudo-labels from the refined centres: consensus of the Voronoi partition, k-means
   clustering and the training-free stain segmentation (agree → label, disagree → ignore),
   with a nucleus-boundary class from the stain masks split at the centres;
4. a segmentation network (background / interior / boundary) trained on them with a loss that
   ignores unsure pixels and strong stain jitter, then self-training on its confident pixels.

Only image pixels are read: this module never opens a label file. :func:`fit_zanet` is the
library fit function (files in, :class:`~zeropath.nuclei.zanet.ZANetModel` out), as
:func:`zeropath.points.fit.fit_points` is for points models. It is deterministic for
``options.seed`` (each network seeds its own initialisation and keeps the caller's random
state); torch's thread count is the caller's (``nuclei fit --threads`` sets it once).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zeropath.errors import InputError
from zeropath.nuclei.zanet import WORK_MPP, InstanceParams, ZANetModel

ProgressFn = Callable[[int, int | None, str], None]


@dataclass(frozen=True)
class ZANetFitOptions:
    """Settings of :func:`fit_zanet` (defaults chosen on the Kumar train/val images)."""

    seed: int = 0
    #: coarse detector: "stain" (hematoxylin prior, offline) or "text" (OWLv2/OWL-ViT prompts)
    detector: str = "stain"
    detector_model: str | None = None  # hub id or local folder of the text-prompted detector
    prompts: tuple[str, ...] = ()  # text prompts (empty: the detector's defaults)
    refine_rounds: int = 3
    refine_epochs: float = 6.0
    segnet_iterations: int = 600
    self_train_rounds: int = 1
    self_train_iterations: int = 150
    tiles_per_slide: int = 16
    tile_um: float = 256.0
    #: label sources joined by consensus (see :func:`make_pseudolabels`)
    pseudolabel_sources: tuple[str, ...] = ("voronoi", "cluster", "stain")
    #: 3: background / nucleus interior / nucleus boundary (instance-aware); 2: bg / nucleus
    segnet_classes: int = 3
    boundary_um: float = 1.0  # width of the boundary class inside each pseudo-nucleus
    segnet_widths: tuple[int, ...] = (8, 16, 32, 64)
    segnet_crop: int = 128  # training crop side (px at 0.5 µm/px)
    segnet_batch: int = 16
    #: per-image H&E scaling of the segnet's input (zeropath.stain.stain_normalise): pale
    #: slides then look like typical ones (kumar_val: Dice 0.63 -> 0.69, AJI 0.345 -> 0.375)
    stain_normalise: bool = True
    hed_sigma: float = 0.15  # segnet stain jitter (multiplicative, fraction)
    hed_bias: float = 0.05  # segnet stain jitter (additive, OD)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingImage:
    """One work-resolution training image and where it came from."""

    source: str
    sha256: str
    rgb: np.ndarray
    box: tuple[int, int, int, int]  # level-0 x0, y0, x1, y1
    mpp_origin: str


def collect_training_images(
    paths: Sequence[str | os.PathLike[str]],
    mpp: float | None = None,
    options: ZANetFitOptions | None = None,
) -> list[TrainingImage]:
    """Read every input at :data:`WORK_MPP`: plain images whole, slides as tissue tiles."""
    from zeropath.io.reader import list_inputs, open_image
    from zeropath.io.tiler import Box, plan_tiles, read_box

    opts = options or ZANetFitOptions()
    out: list[TrainingImage] = []
    for path in list_inputs(paths):
        with open_image(path, mpp=mpp) as src:
            w, h = src.dimensions
            if not src.is_slide:
                box = Box(0, 0, w, h)
                out.append(
                    TrainingImage(
                        str(path),
                        src.checksum,
                        read_box(src, box, WORK_MPP),
                        (0, 0, w, h),
                        src.mpp_origin,
                    )
                )
                continue
            from zeropath.io.tissue import tissue_mask_for_source

            core = max(64, int(round(opts.tile_um / src.mpp)))
            mask, ds = tissue_mask_for_source(src)
            plan = plan_tiles(w, h, core, 0, mask, ds, min_tissue_fraction=0.5)
            tiles = list(plan)
            if not tiles:
                continue
            pick = np.unique(
                np.linspace(0, len(tiles) - 1, min(opts.tiles_per_slide, len(tiles))).round()
            ).astype(int)
            for i in pick:
                b = tiles[i].core
                out.append(
                    TrainingImage(
                        str(path),
                        src.checksum,
                        read_box(src, b, WORK_MPP),
                        (b.x0, b.y0, b.x1, b.y1),
                        src.mpp_origin,
                    )
                )
    if not out:
        raise InputError(None, "no tissue found in the inputs: nothing to learn from")
    return out


def coarse_detector(options: ZANetFitOptions) -> Any:
    """The stage-1 detector named by ``options.detector`` (a ``detector`` row of the model
    registry); loads text-prompt weights eagerly.

    A missing ``transformers`` or missing weights is a :class:`~zeropath.errors.ModelError`
    that says how to get them, raised before any training starts.
    """
    from zeropath.models.registry import find, get_detector, rows

    spec = find("detector", options.detector)
    if spec is None:
        known = "' or '".join(s.name for s in rows("detector"))
        raise ValueError(f"unknown detector {options.detector!r}: use '{known}'")
    fields = dict(spec.meta.get("options", {}))  # factory keyword -> ZANetFitOptions field
    kw = {k: getattr(options, f) for k, f in fields.items() if getattr(options, f)}
    det = get_detector(spec.name, **kw)
    load = getattr(det, "load", None)
    return load() if callable(load) else det


def fit_zanet(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
    options: ZANetFitOptions | None = None,
    progress: ProgressFn | None = None,
    on_stage: Callable[[str, Any], None] | None = None,
) -> ZANetModel:
    """Fit the label-free nucleus model on unlabelled images; save it to ``out_dir`` if given.

    ``on_stage(name, obj)`` (for benchmarks; its time counts in the fit's timings) is called
    with ``("refiner", refiner)``, ``("pseudolabels", (images, points, labels))``, and
    ``("segnet", model)`` / ``("self_train_<r>", model)`` with a :class:`ZANetModel` after the
    segmentation network's training and after each self-training round.
    """
    import torch

    from zeropath import __version__
    from zeropath.models.unet import UNetConfig
    from zeropath.nuclei.classical import segment_classical
    from zeropath.nuclei.detect import StainPriorDetector
    from zeropath.nuclei.pseudolabels import boundary_targets, make_pseudolabels, split_at_points
    from zeropath.nuclei.refine import fit_refiner
    from zeropath.nuclei.segnet import fit_segnet

    opts = options or ZANetFitOptions()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, done: int, total: int) -> None:
        if progress:
            progress(done, total, name)

    step("reading the images", 0, 4)
    data = collect_training_images(paths, mpp, opts)
    images = [d.rgb for d in data]
    timings["read_s"] = time.perf_counter() - t0

    def refine_round(r: int, _refiner: Any) -> None:
        step(f"precision learning, round {r + 1}/{opts.refine_rounds} done", 1, 4)

    step(f"precision learning on {len(images)} images, {opts.refine_rounds} rounds", 1, 4)
    t = time.perf_counter()
    refiner = fit_refiner(
        images,
        [WORK_MPP] * len(images),
        coarse_detector(opts),
        rounds=opts.refine_rounds,
        epochs_per_round=opts.refine_epochs,
        seed=opts.seed,
        on_round=refine_round,
    )
    timings["refine_s"] = time.perf_counter() - t
    if on_stage:
        on_stage("refiner", refiner)

    step("pseudo-labels", 2, 4)
    t = time.perf_counter()
    coarse = StainPriorDetector()  # fallback where the refiner finds nothing
    points = []
    for img in images:
        pts = refiner.detect_work(img)
        if len(pts) == 0:  # a refiner that finds nothing here (tiny fits): the coarse points
            pts = coarse.detect(img, WORK_MPP)
        points.append(pts)
    pseudo = []
    for img, pts in zip(images, points, strict=True):
        masks = None
        if "stain" in opts.pseudolabel_sources or opts.segnet_classes == 3:
            masks = segment_classical(img, WORK_MPP)
        lab = make_pseudolabels(img, pts, WORK_MPP, use=opts.pseudolabel_sources, stain_masks=masks)
        if opts.segnet_classes == 3:
            lab = boundary_targets(lab, split_at_points(masks, pts), WORK_MPP, opts.boundary_um)
        pseudo.append(lab)
    timings["pseudolabels_s"] = time.perf_counter() - t
    if on_stage:
        on_stage("pseudolabels", (images, points, pseudo))

    step(f"segmentation network, {opts.segnet_iterations} iterations", 3, 4)
    t = time.perf_counter()
    instances = InstanceParams()
    provenance: dict[str, Any] = {}

    def segnet_round(r: int, net: Any) -> None:
        if r < opts.self_train_rounds:
            step(
                f"self-training round {r + 1}/{opts.self_train_rounds}, "
                f"{opts.self_train_iterations} iterations",
                3,
                4,
            )
        if on_stage:
            name = "segnet" if r == 0 else f"self_train_{r}"
            on_stage(name, ZANetModel(refiner, net, instances, provenance))

    segnet = fit_segnet(
        images,
        pseudo,
        mpp=WORK_MPP,
        unet=UNetConfig(widths=tuple(opts.segnet_widths), n_classes=opts.segnet_classes),
        iterations=opts.segnet_iterations,
        seed=opts.seed,
        self_train_rounds=opts.self_train_rounds,
        self_train_iterations=opts.self_train_iterations,
        hed_sigma=opts.hed_sigma,
        hed_bias=opts.hed_bias,
        normalise=opts.stain_normalise,
        crop=opts.segnet_crop,
        batch=opts.segnet_batch,
        on_round=segnet_round,
    )
    timings["segnet_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    step("done", 4, 4)

    provenance.update(
        {
            "zeropath": __version__,
            "command": "nuclei fit",
            "options": opts.to_dict(),
            "threads": torch.get_num_threads(),
            "mpp_override": mpp,
            "inputs": sorted({(d.source, d.sha256) for d in data}),
            "n_training_images": len(data),
            "n_points": int(sum(len(p) for p in points)),
            "refiner_history": refiner.history,
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "labels_read": False,
        }
    )
    model = ZANetModel(refiner, segnet, instances, provenance)
    if out_dir is not None:
        model.save(out_dir)
    return model
