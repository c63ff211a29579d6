"""A small HTTP server (stdlib ``ThreadingHTTPServer``) with a route table.

Modes of the viewer (``view`` now, ``annotate`` later) differ only in which routes they
register on a :class:`Router`: a page, its JSON API and its tile endpoints. Handlers take a
:class:`Request` and return a :class:`Response`; raising :class:`HTTPError` (or a
:class:`~zeropath.errors.ZeropathError`, KeyError …) becomes a JSON error response.
Nothing here prints: request logs go to the ``zeropath.viewer`` logger.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from zeropath.errors import ZeropathError

__all__ = [
    "HTTPError",
    "Request",
    "Response",
    "Router",
    "ServerError",
    "ViewerServer",
    "json_response",
    "static_handler",
]

log = logging.getLogger("zeropath.viewer")

#: Largest request body accepted (JSON posts of later modes, e.g. annotation masks).
MAX_BODY_BYTES = 64 << 20


class ServerError(ZeropathError):
    """The server cannot start (port in use, bad host …)."""


class HTTPError(Exception):
    """Abort a request with ``status`` and a one-line message (sent as JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """A parsed request: decoded path, first value of each query parameter, route groups."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def number(self, name: str, default: float | None = None) -> float:
        """Query parameter ``name`` as a float; 400 if missing (without default) or invalid."""
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise HTTPError(400, f"missing query parameter {name!r}")
            return default
        try:
            value = float(raw)
        except ValueError:
            raise HTTPError(400, f"query parameter {name!r} is not a number: {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise HTTPError(400, f"query parameter {name!r} is not finite")
        return value

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise HTTPError(400, f"request body is not JSON: {exc}") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, body, "application/json", {"Cache-Control": "no-store"})


Handler = Callable[[Request], Response]


class Router:
    """Ordered ``(method, path regex) → handler`` table; the first full match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Route ``method`` requests whose decoded path fully matches ``pattern``; its named
        groups become :attr:`Request.params`."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return deco

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(request.path)
            if m is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed = True
                continue
            request.params = {k: v for k, v in m.groupdict().items() if v is not None}
            try:
                return handler(request)
            except HTTPError as exc:
                return json_response({"error": exc.message}, exc.status)
            except KeyError as exc:
                return json_response(
                    {"error": f"not found: {exc.args[0] if exc.args else ''}"}, 404
                )
            except IndexError as exc:
                return json_response({"error": str(exc)}, 404)
            except ZeropathError as exc:
                return json_response({"error": str(exc)}, 422)
        if allowed:
            return json_response({"error": f"method {request.method} not allowed"}, 405)
        return json_response({"error": f"not found: {request.path}"}, 404)


def static_handler(package: str = "zeropath.viewer", folder: str = "static") -> Handler:
    """Serve ``params["path"]`` from a package data folder (no path escapes)."""
    root = resources.files(package) / folder

    def handler(request: Request) -> Response:
        rel = request.params.get("path", "")
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p for p in parts):
            raise HTTPError(404, f"not found: {rel}")
        node = root
        for p in parts:
            node = node / p
        if not node.is_file():
            raise HTTPError(404, f"not found: {rel}")
        ctype = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        cache = "public, max-age=86400" if "vendor" in parts else "no-cache"
        return Response(200, node.read_bytes(), ctype, {"Cache-Control": cache})

    return handler


def page_handler(name: str, package: str = "zeropath.viewer", folder: str = "static") -> Handler:
    """Serve one HTML page of the static folder (a mode's entry point)."""
    static = static_handler(package, folder)

    def handler(request: Request) -> Response:
        request.params = {"path": name}
        return static(request)

    return handler


def _handler_class(router: Router) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "zeropath-viewer"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(json_response({"error": "request body too large"}, 413))
                return
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, unquote(parts.path), query, body=body)
            try:
                response = router.dispatch(request)
            except Exception as exc:  # a bug in a handler must not kill the connection
                log.exception("error serving %s", self.path)
                response = json_response({"error": f"internal error: {exc}"}, 500)
            self._send(response)

        def _send(self, response: Response) -> None:
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for k, v in response.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser gave up on this request (e.g. a tile panned away)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return _Handler


class ViewerServer:
    """A bound (not yet serving) HTTP server for a :class:`Router`."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 8765) -> None:
        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), _handler_class(router))
        except OSError as exc:
            hint = "; pass another --port (0 picks a free one)" if port else ""
            raise ServerError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None
        self.httpd.daemon_threads = True
        self.router = router
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (or KeyboardInterrupt)."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ViewerServer:
        """Serve in a daemon thread (tests, notebooks)."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="zeropath-viewer", daemon=True
        )
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
