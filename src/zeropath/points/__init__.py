"""Nuclei from one click each: the self-refining SAM pipeline on MobileSAM.

Module map:

* :mod:`zeropath.points.io` — point annotations (``DIR/STEM.csv`` with ``x,y`` columns or QuPath
  ``DIR/STEM.geojson`` Point/MultiPoint) as ``(N, 2)`` level-0 xy; :func:`~.io.jitter_points`.
* :mod:`zeropath.points.targets` — EMA target ``m_u`` and its schedule ``α_t``, binary entropy,
  prompt labels ``(S_P, M_P)``, consensus labels ``S_I`` (with reason codes), hard negatives,
  instance map and HoVer-style offset targets.
* :mod:`zeropath.points.losses` — BCE + soft IoU, offset L1, instance contrastive loss with its
  projection head and prototype, weighted total.
* :mod:`zeropath.points.windows` — point prompts decoded on local embedding windows (cheap,
  differentiable) and the targets computed on those windows.
* :mod:`zeropath.points.fit` — the library fit function: the training loop on SAM-sized crops
  (:func:`~.fit.fit_points`, arrays in, model out) and prompt-free prediction at any image size
  (:func:`~.fit.predict_maps`).
* :mod:`zeropath.points.train` — ``points fit`` on files (points files, resampling, saving).
* :mod:`zeropath.points.model` — the model directory (:mod:`zeropath.nuclei.modeldir` format)
  and :class:`~.model.PointsSegmenter`, a :class:`zeropath.nuclei.base.Segmenter` run by
  ``nuclei segment --model DIR`` (``points segment`` is its alias).

Instances come from the prompt-free maps ``B`` and ``D`` through
:func:`zeropath.nuclei.instances.instances_from_offsets` (the shared post-processing).

Model parts live under :mod:`zeropath.models`: encoder adapters in
:mod:`zeropath.models.mobilesam.adapters`, the prompt-free decoder in
:mod:`zeropath.models.nuclei_decoder`. Nothing here is imported eagerly (torch stays unloaded
until a torch module is used).
"""
