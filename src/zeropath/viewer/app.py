"""Assemble a viewer: catalog → session → routes → bound server.

A mode is a page plus the routes it calls; ``view`` is the only one so far. A later mode
(``annotate``) adds its page and its API module here without touching the others.
"""

from __future__ import annotations

from pathlib import Path

from zeropath.viewer.api import register_view_api
from zeropath.viewer.catalog import discover
from zeropath.viewer.server import Response, Router, ViewerServer, page_handler, static_handler
from zeropath.viewer.session import ViewerSession

__all__ = ["MODES", "build_router", "create_viewer"]

#: Mode → its HTML page in ``static/``.
MODES = {"view": "index.html"}


def build_router(session: ViewerSession, mode: str = "view") -> Router:
    """The routes of ``mode``: its page at ``/``, static assets, its API."""
    if mode not in MODES:
        raise ValueError(f"unknown viewer mode {mode!r}; choose from {sorted(MODES)}")
    router = Router()
    router.add("GET", r"/", page_handler(MODES[mode]))
    router.add("GET", r"/static/(?P<path>.+)", static_handler())
    router.add("GET", r"/favicon\.ico", lambda request: Response(204))
    register_view_api(router, session)
    return router


def create_viewer(
    path: str | Path,
    outputs: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    mode: str = "view",
) -> tuple[ViewerServer, ViewerSession]:
    """Find what ``path`` holds, open its first slide and bind a server (not yet serving).

    Raises :class:`~zeropath.errors.InputError` for a missing path or an unreadable first
    slide, :class:`~zeropath.viewer.server.ServerError` when the port cannot be bound.
    The nucleus index of the first slide starts loading in the background.
    """
    session = ViewerSession(discover(path, outputs))
    session.layers()  # fail now, not in the browser, if the first slide is unreadable
    server = ViewerServer(build_router(session, mode), host, port)
    session.preload()
    return server, session
