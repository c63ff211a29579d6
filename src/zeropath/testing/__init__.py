"""Test-only models shipped with the package, for tests and benchmarks (never for real work).

- :mod:`zeropath.testing.synthetic`: :class:`~zeropath.testing.synthetic.SyntheticEncoder`,
  a deterministic colour → class encoder whose similarities are known exactly (numpy only);
- :mod:`zeropath.testing.tiny_clip`: ``test-tiny``, a random tiny CLIP that exercises the real
  CLIP code path offline (needs torch + transformers).

- :mod:`zeropath.testing.images`: :func:`render_nuclei`, H&E-like tiles with exact labels;
- :mod:`zeropath.testing.segmenters`: :class:`ThresholdSegmenter`, a model-free segmenter.

The two encoders are rows of the model registry (``--encoder synthetic``,
``--encoder test-tiny``) marked ``test_only``: ``zeropath models list`` shows them only
with ``--all``.
"""

from zeropath.testing.images import render_nuclei
from zeropath.testing.segmenters import ThresholdSegmenter

__all__ = ["ThresholdSegmenter", "render_nuclei"]
