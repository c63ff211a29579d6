"""Class colours: the one default palette and the one colour parser.

Every class table of the package (tissue prompt files, tissue maps in the viewer, the
annotation queue of an active-learning run, nucleus classes of a GeoJSON) gives classes
without a colour the same tab10 colour for the same index, and reads colours the same way:

* ``[r, g, b]`` (any sequence; extra items such as alpha are ignored, values are clamped
  to 0..255);
* ``"#rrggbb"`` or ``"rrggbb"``;
* QuPath's packed (A)RGB integer (the alpha byte is ignored).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PALETTE", "RGB", "is_rgb", "palette_color", "parse_color"]

RGB = tuple[int, int, int]

#: Colours of classes that do not name one (matplotlib's tab10; no white, no black).
PALETTE: tuple[RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

_HEX = re.compile(r"#?[0-9a-fA-F]{6}")


def palette_color(index: int) -> RGB:
    """The default colour of the ``index``-th class (the palette repeats)."""
    return PALETTE[int(index) % len(PALETTE)]


def parse_color(value: Any, default: RGB | None = None) -> RGB | None:
    """``value`` as an RGB triple (the forms in the module docstring), else ``default``."""
    if isinstance(value, str) and _HEX.fullmatch(value):
        h = value.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = int(value) & 0xFFFFFF
        return ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    try:
        r, g, b = (min(max(int(c), 0), 255) for c in list(value)[:3])
    except (TypeError, ValueError, OverflowError):
        return default
    return (r, g, b)


def is_rgb(value: Any) -> bool:
    """True for exactly three integers 0..255 (a list or tuple; what strict files must give)."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    )
