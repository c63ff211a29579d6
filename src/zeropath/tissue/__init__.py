"""Zero-shot tissue segmentation of whole slides from text prompts (ZEUS).

One module per idea:

* :mod:`~zeropath.tissue.prompts` — the prompt YAML, the shipped prompt library and the
  per-class text-embedding ensemble;
* :mod:`~zeropath.tissue.describe` — optional class descriptions from an OpenAI-compatible LLM;
* :mod:`~zeropath.tissue.grid` — the score grid: cells, tile origins, which tiles hold tissue;
* :mod:`~zeropath.tissue.cache` — tile embeddings cached on disk (zarr) per slide × encoder;
* :mod:`~zeropath.tissue.scoring` — tiles → embeddings → cosine scores accumulated per cell,
  smoothing and the masked argmax;
* :mod:`~zeropath.tissue.outputs` — ``STEM.tissue.tif``, ``STEM.tissue.geojson``, the overlay
  with its legend and ``STEM.scores.zarr``;
* :mod:`~zeropath.tissue.zeus` — one slide end to end, and the picklable per-slide task that
  :mod:`zeropath.run.batch` sends to worker processes or a Dask cluster;
* :mod:`~zeropath.tissue.evaluate` — per-class Dice / IoU against label masks.

Nothing here is imported by ``import zeropath``; heavy libraries load inside functions.
"""
