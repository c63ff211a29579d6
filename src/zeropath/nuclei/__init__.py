"""Nucleus instance segmenters, and the label-free ZA-Net pipeline that learns one.

Segmenters are variants of :class:`zeropath.nuclei.base.Segmenter` (``name``, ``sha256``,
``target_mpp``, ``tile`` spec, ``segment(rgb, mpp) -> uint32 labels``, ``describe()``,
``to(device)``), so :mod:`zeropath.run.segment` can tile and stitch any of them over whole
slides; learned models share one directory format (:mod:`~zeropath.nuclei.modeldir`:
``model.json`` with the complete config + ``weights.pt``, one sha256 rule) and one
post-processing module (:mod:`~zeropath.nuclei.instances`):

* :mod:`zeropath.nuclei.zanet` — a model written by ``nuclei fit`` (the bundled
  ``zanet-default`` is one), run at 0.5 µm/px.
* :mod:`zeropath.nuclei.classical` — training-free baseline (colour deconvolution, threshold,
  marker watershed), parameterised in µm.
* :mod:`zeropath.nuclei.instanseg` — the supervised InstanSeg peer (TorchScript, registry).
* :mod:`zeropath.points.model` — a point-supervised MobileSAM model written by ``points fit``.

ZA-Net stages, in pipeline order (``nuclei fit`` = :func:`zeropath.nuclei.fit.fit_zanet`):

1. :mod:`~zeropath.nuclei.detect` — coarse centres from a hematoxylin stain prior;
   :mod:`~zeropath.nuclei.vlm_detect` — or from a text-prompted OWLv2 / OWL-ViT detector.
   :mod:`~zeropath.nuclei.centres` holds the centre set type (``Points``) and NMS.
2. :mod:`~zeropath.nuclei.refine` — Gaussian confidence-map CNN trained by precision learning.
3. :mod:`~zeropath.nuclei.pseudolabels` — Voronoi, k-means and stain-prior labels by consensus.
4. :mod:`~zeropath.nuclei.segnet` — segmentation network with a partial loss and self-training;
   :mod:`~zeropath.nuclei.instances` — instances from its maps (interior-peak watershed).

Fitting: ``fit.py`` holds the library fit function of each method —
:func:`zeropath.nuclei.fit.fit_zanet` here, :func:`zeropath.points.fit.fit_points` in
:mod:`zeropath.points`; reading inputs from files for the ``points fit`` command is
:mod:`zeropath.points.train`'s job (``fit_zanet`` reads its own: it needs no annotations).

:mod:`~zeropath.nuclei.augment` has the HED stain augmentation shared by the trainers.
Nothing here imports torch at import time.
"""
