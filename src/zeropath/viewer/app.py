"""Assemble a viewer: catalog → session → routes → bound server.

A mode is a page plus the routes it calls: ``view`` (a slide and its outputs, ``api.py``)
and ``annotate`` (the queue of an active-learning run, ``annotate.py``). Each mode brings its
own session object; both offer ``warnings`` and ``close()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zeropath.errors import InputError
from zeropath.viewer.api import register_view_api
from zeropath.viewer.catalog import discover
from zeropath.viewer.server import Response, Router, ViewerServer, page_handler, static_handler
from zeropath.viewer.session import ViewerSession

__all__ = ["MODES", "build_router", "create_viewer"]

#: Mode → its HTML page in ``static/``.
MODES = {"view": "index.html", "annotate": "annotate.html"}


def build_router(session: Any, mode: str = "view") -> Router:
    """The routes of ``mode``: its page at ``/``, static assets, its API.

    ``session`` is a :class:`ViewerSession` for ``view`` and an
    :class:`~zeropath.viewer.annotate.AnnotateSession` for ``annotate``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown viewer mode {mode!r}; choose from {sorted(MODES)}")
    router = Router()
    router.add("GET", r"/", page_handler(MODES[mode]))
    router.add("GET", r"/static/(?P<path>.+)", static_handler())
    router.add("GET", r"/favicon\.ico", lambda request: Response(204))
    if mode == "annotate":
        from zeropath.viewer.annotate import register_annotate_api

        register_annotate_api(router, session)
    else:
        register_view_api(router, session)
    return router


def create_viewer(
    path: str | Path,
    outputs: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    mode: str = "view",
) -> tuple[ViewerServer, Any]:
    """Find what ``path`` holds, open its first slide and bind a server (not yet serving).

    Raises :class:`~zeropath.errors.InputError` for a missing path or an unreadable first
    slide, :class:`~zeropath.viewer.server.ServerError` when the port cannot be bound.
    The nucleus index of the first slide starts loading in the background.

    With ``mode="annotate"``, ``path`` is an active-learning run folder (or its ``queue/``)
    and the session is an :class:`~zeropath.viewer.annotate.AnnotateSession`; a folder
    without a queue raises :class:`~zeropath.errors.InputError`.
    """
    if mode == "annotate":
        from zeropath.viewer.annotate import AnnotateSession
        from zeropath.viewer.labelqueue import AnnotationQueue

        queue = AnnotationQueue.open(path)
        if not queue.ids:
            raise InputError(queue.index_path, "the annotation queue is empty: nothing to label")
        annotate = AnnotateSession(queue)
        return ViewerServer(build_router(annotate, mode), host, port), annotate
    session = ViewerSession(discover(path, outputs))
    session.layers()  # fail now, not in the browser, if the first slide is unreadable
    server = ViewerServer(build_router(session, mode), host, port)
    session.preload()
    return server, session
