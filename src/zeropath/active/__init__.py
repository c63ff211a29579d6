"""Active learning for tissue segmentation (AcZeroTS-style).

A pool of images is cut into square *regions*; each region is a block of *cells* (16 px by
default) that carry dense features (:mod:`.features`). A ProZS classifier (:mod:`.prototypes`)
joins visual prototypes of labelled classes, text prototypes of unseen ones and a light head;
selection rules (:mod:`.selection`) pick the next regions to label; :mod:`.loop` runs
select → label → update → evaluate rounds until a pixel budget is spent, saving its state
(:mod:`.store`) after every round so that a run resumes exactly, and queueing regions for an
annotator when no oracle answers (:mod:`.queue`, the format the viewer's annotate mode reads).

Importing this package is cheap: torch is imported only where a head is trained.
"""

from __future__ import annotations

__all__ = ["STRATEGIES"]

#: Selection strategies ``active run --strategy`` accepts (``combined`` is the default).
STRATEGIES: tuple[str, ...] = ("combined", "random", "entropy", "coreset", "badge", "coverage")
