"""Nucleus instance segmenters, and the label-free ZA-Net pipeline that learns one.

Segmenters (each exposes ``segment(rgb, mpp) -> uint32 labels``, ``halo_um`` and
``describe()`` so :mod:`zeropath.run.segment` can tile and stitch it over whole slides):

* :mod:`zeropath.nuclei.zanet` — a model written by ``nuclei fit`` (the bundled
  ``zanet-default`` is one), run at 0.5 µm/px.
* :mod:`zeropath.nuclei.classical` — training-free baseline (colour deconvolution, threshold,
  marker watershed), parameterised in µm.
* :mod:`zeropath.nuclei.instanseg` — the supervised InstanSeg peer (TorchScript, registry).

ZA-Net stages, in pipeline order (``nuclei fit`` = :func:`zeropath.nuclei.fit.fit_zanet`):

1. :mod:`~zeropath.nuclei.detect` — coarse centres from a hematoxylin stain prior;
   :mod:`~zeropath.nuclei.vlm_detect` — or from a text-prompted OWLv2 / OWL-ViT detector.
   :mod:`~zeropath.nuclei.points` holds the point set type and NMS.
2. :mod:`~zeropath.nuclei.refine` — Gaussian confidence-map CNN trained by precision learning.
3. :mod:`~zeropath.nuclei.pseudolabels` — Voronoi, k-means and stain-prior labels by consensus.
4. :mod:`~zeropath.nuclei.segnet` — segmentation network with a partial loss and self-training;
   :mod:`~zeropath.nuclei.instances` — instances from its maps (interior-peak watershed).

:mod:`~zeropath.nuclei.augment` has the HED stain augmentation shared by the trainers.
Nothing here imports torch at import time.
"""
