"""Pixels in, files out: everything that touches images, slides and output files.

* :mod:`zeropath.io.reader` — one reader API for images and whole slides
* :mod:`zeropath.io.tissue` — tissue detection on thumbnails
* :mod:`zeropath.io.tiler` — tile plans (cores + halos) and resampled tile reads
* :mod:`zeropath.io.datasets` — MoNuSeg and ``images/`` + ``labels/`` loaders
* :mod:`zeropath.io.measure` — per-nucleus measurements and outlines
* :mod:`zeropath.io.writers` — labels TIFF, GeoJSON, CSV, overlay, run.json (atomic)
* :mod:`zeropath.io.colors` — the default class palette and the colour parser
* :mod:`zeropath.io.morphology` — label-image operations shared by the segmenters

Submodules are imported explicitly so that ``import zeropath.io`` stays cheap.
"""
