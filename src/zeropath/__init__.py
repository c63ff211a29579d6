"""zeropath: segment H&E pathology images with no annotations, or with very few.

Where things live:

* ``zeropath.io`` — readers (images, slides), tissue detection, tiling, dataset loaders, writers
* ``zeropath.stain`` — colour deconvolution (hematoxylin / eosin optical density)
* ``zeropath.metrics`` / ``zeropath.evaluate`` — Dice, AJI, AJI+, PQ, object Dice, detection F1
* ``zeropath.models`` — model registry (sources, checksums, cache, safe loaders) and
  architectures (MobileSAM, U-Net, confidence-map CNN, nuclei decoder)
* ``zeropath.nuclei`` — nucleus segmenters and the label-free ZA-Net pipeline (``nuclei fit``)
* ``zeropath.points`` — the one-click (point-supervised) self-refining SAM pipeline
* ``zeropath.run`` — the tile engine for one input and batches over many (processes, Dask)
* ``zeropath.cli`` — the ``zeropath`` command

The top-level import is cheap on purpose: heavy libraries (torch, dask, openslide) load
inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
