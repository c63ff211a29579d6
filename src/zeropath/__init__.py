"""zeropath: segment H&E pathology images with no annotations, or with very few.

The top-level import is cheap on purpose: heavy libraries (torch, dask, openslide) load
inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
