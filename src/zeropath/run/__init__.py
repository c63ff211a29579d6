"""Running segmenters over inputs.

* :mod:`zeropath.run.segment` — one image or slide: tiles, core ownership, stitching, outputs
* :mod:`zeropath.run.batch` — many inputs: serial, local processes or a Dask cluster
"""
