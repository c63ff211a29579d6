"""Nucleus instance segmenters.

* :mod:`zeropath.nuclei.classical` — training-free baseline (colour deconvolution, threshold,
  marker watershed), parameterised in µm.

Each segmenter exposes ``segment(rgb, mpp) -> uint32 labels``, ``halo_um`` and ``describe()``
so that :mod:`zeropath.run.segment` can tile and stitch it over whole slides.
"""
