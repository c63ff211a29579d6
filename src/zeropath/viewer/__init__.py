"""``zeropath view``: a local web page over a slide and its zeropath outputs.

``catalog`` finds slides and outputs, ``session`` builds their layers lazily (``dzi`` for the
slide pyramid, ``tissuemap`` for the class overlay, ``nuclei`` for the polygon index),
``api`` exposes them as routes on the small ``server``, and ``app`` puts one mode together.
The page itself (OpenSeadragon + a canvas overlay) lives in ``static/``.
"""
