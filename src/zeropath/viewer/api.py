"""The routes of the ``view`` mode: JSON API and Deep Zoom tiles.

* ``GET /api/slides`` — ``{"slides": [{"stem", "name"}], "warnings"}`` of the catalog;
* ``GET /api/info?stem=`` — slide size and µm/px, tissue classes, nucleus classes and
  counts, measurement names, layer errors;
* ``GET /api/nuclei?stem=&x0=&y0=&x1=&y1=[&limit=]`` — outlines overlapping a level-0 box:
  ``{"count", "truncated", "nuclei": [{"id", "c" (class index), "rings" (flat x, y)}]}``,
  with no outlines when there are more than ``limit`` (the page then asks to zoom in);
* ``GET /api/nucleus/<id>?stem=`` — one nucleus: classification, measurements, centroid,
  bbox, rings;
* ``GET /api/hit?stem=&x=&y=[&r=]`` — ``{"nucleus": {...} | null}`` under a level-0 point;
* ``GET /dzi/<stem>/slide.dzi`` and ``…/slide_files/L/C_R.jpeg`` — the slide pyramid;
* ``GET /dzi/<stem>/tissue.dzi`` and ``…/tissue_files/L/C_R.png`` — the tissue overlay,
  with the slide's geometry so the two line up.
"""

from __future__ import annotations

from zeropath.viewer.dzi import DeepZoom
from zeropath.viewer.server import HTTPError, Request, Response, Router, json_response
from zeropath.viewer.session import SlideLayers, ViewerSession

__all__ = ["DEFAULT_NUCLEI_LIMIT", "register_view_api"]

#: Most outlines one ``/api/nuclei`` answer carries; beyond it the page asks to zoom in.
DEFAULT_NUCLEI_LIMIT = 20000
_MAX_NUCLEI_LIMIT = 200000


def _layers(session: ViewerSession, request: Request) -> SlideLayers:
    stem = request.params.get("stem") or request.arg("stem") or None
    try:
        return session.layers(stem)
    except KeyError:
        raise HTTPError(404, f"no slide {stem!r} in this viewer") from None


def _nuclei(layers: SlideLayers):  # -> NucleusIndex
    index = layers.nuclei
    if index is None:
        reason = layers.errors.get("nuclei", "no nuclei GeoJSON for this slide")
        raise HTTPError(404, reason)
    return index


def register_view_api(router: Router, session: ViewerSession) -> None:
    """Add the ``view`` mode's API and tile routes to ``router``."""

    @router.route("GET", r"/api/slides")
    def slides(request: Request) -> Response:
        return json_response({"slides": session.slides(), "warnings": session.warnings})

    @router.route("GET", r"/api/info")
    def info(request: Request) -> Response:
        return json_response(_layers(session, request).info())

    @router.route("GET", r"/api/nuclei")
    def nuclei(request: Request) -> Response:
        index = _nuclei(_layers(session, request))
        x0, y0 = request.number("x0"), request.number("y0")
        x1, y1 = request.number("x1"), request.number("y1")
        limit = int(request.number("limit", DEFAULT_NUCLEI_LIMIT))
        limit = max(0, min(limit, _MAX_NUCLEI_LIMIT))
        rows = index.query(x0, y0, x1, y1)
        truncated = len(rows) > limit
        outlines = [] if truncated else [index.outline(int(r)) for r in rows]
        return json_response(
            {
                "box": [x0, y0, x1, y1],
                "count": len(rows),
                "truncated": truncated,
                "nuclei": outlines,
            }
        )

    @router.route("GET", r"/api/nucleus/(?P<id>-?\d+)")
    def nucleus(request: Request) -> Response:
        index = _nuclei(_layers(session, request))
        row = index.row_of(int(request.params["id"]))
        if row is None:
            raise HTTPError(404, f"no nucleus with id {request.params['id']}")
        return json_response(index.details(row))

    @router.route("GET", r"/api/hit")
    def hit(request: Request) -> Response:
        index = _nuclei(_layers(session, request))
        x, y = request.number("x"), request.number("y")
        radius = max(0.0, min(request.number("r", 0.0), 1000.0))
        row = index.hit(x, y, radius)
        return json_response({"nucleus": None if row is None else index.details(row)})

    def pyramid(request: Request) -> DeepZoom:
        layers = _layers(session, request)
        if request.params["layer"] == "slide":
            return layers.slide
        if layers.tissue_dzi is None:
            reason = layers.errors.get("tissue", "no tissue map for this slide")
            raise HTTPError(404, reason)
        return layers.tissue_dzi

    @router.route("GET", r"/dzi/(?P<stem>[^/]+)/(?P<layer>slide|tissue)\.dzi")
    def descriptor(request: Request) -> Response:
        dz = pyramid(request)
        return Response(
            200, dz.descriptor().encode(), "application/xml", {"Cache-Control": "no-cache"}
        )

    @router.route(
        "GET",
        r"/dzi/(?P<stem>[^/]+)/(?P<layer>slide|tissue)_files/(?P<level>\d+)/"
        r"(?P<col>\d+)_(?P<row>\d+)\.(?P<fmt>jpeg|png)",
    )
    def tile(request: Request) -> Response:
        dz = pyramid(request)
        if request.params["fmt"] != dz.format:
            raise HTTPError(404, f"tiles of this layer are {dz.format}")
        p = request.params
        data = dz.tile(int(p["level"]), int(p["col"]), int(p["row"]))
        return Response(200, data, dz.media_type, {"Cache-Control": "no-cache"})
