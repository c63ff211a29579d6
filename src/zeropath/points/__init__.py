"""Nuclei from one click each: the self-refining SAM pipeline on MobileSAM.

Module map:

* :mod:`zeropath.points.io` — point annotations (``DIR/STEM.csv`` with ``x,y`` columns or QuPath
  ``DIR/STEM.geojson`` Point/MultiPoint) as ``(N, 2)`` level-0 xy; :func:`~.io.jitter_points`.
* :mod:`zeropath.points.targets` — EMA target ``m_u`` and its schedule ``α_t``, binary entropy,
  prompt labels ``(S_P, M_P)``, consensus labels ``S_I`` (with reason codes), hard negatives,
  instance map and HoVer-style offset targets.
* :mod:`zeropath.points.losses` — BCE + soft IoU, offset L1, instance contrastive loss with its
  projection head and prototype, weighted total.
* :mod:`zeropath.points.instances` — instances from the prompt-free maps ``B`` and ``D``.
* :mod:`zeropath.points.fit` — training-loop sketch (:func:`~.fit.fit_points`) and
  :func:`~.fit.predict_maps`.

Model parts live under :mod:`zeropath.models`: encoder adapters in
:mod:`zeropath.models.mobilesam.adapters`, the prompt-free decoder in
:mod:`zeropath.models.nuclei_decoder`. Nothing here is imported eagerly (torch stays unloaded
until a torch module is used).
"""
