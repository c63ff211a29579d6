"""A small HTTP server (stdlib ``ThreadingHTTPServer``) with a route table.

Modes of the viewer (``view`` now, ``annotate`` later) differ only in which routes they
register on a :class:`Router`: a page, its JSON API and its tile endpoints. Handlers take a
:class:`Request` and return a :class:`Response`; raising :class:`HTTPError` (or a
:class:`~zeropath.errors.ZeropathError`, KeyError …) becomes a JSON error response.
Nothing here prints: request logs go to the ``zeropath.viewer`` logger.

Every request passes :class:`_Guard` first (any web page the user has open can reach a
server on localhost): its ``Host`` must name this server (no DNS rebinding), its ``Origin``
(if any) must be this server's; writes (POST/PUT/DELETE) must also carry the per-server
:attr:`ViewerServer.token` in ``X-Zeropath-Token`` and a JSON or PNG ``Content-Type``.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
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
#: Header that carries :attr:`ViewerServer.token` on writes (the page reads it from its URL).
TOKEN_HEADER = "X-Zeropath-Token"
#: Methods that change something: they need the token.
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
#: Media types a request body may have.
BODY_TYPES = ("application/json", "image/png")
#: Names of a loopback server that ``Host`` may use (plus the bound address).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


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
    #: media type of the body, lower case, without parameters (``application/json``)
    content_type: str = ""

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
        if self.body and self.content_type != "application/json":
            raise HTTPError(415, "a JSON body needs Content-Type: application/json")
        try:
            return json.loads(self.body or b"null")
        except (ValueError, RecursionError) as exc:
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


def _netloc(host: str) -> str:
    """``host`` as a URL writes it: lower case, an IPv6 address in brackets."""
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _Guard:
    """Who may talk to a server: requests that name it in ``Host``/``Origin``; writes also
    need its token (a page of another site knows neither)."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()
        self.hosts: frozenset[str] = frozenset()
        self.origins: frozenset[str] = frozenset()

    def allow(self, names: Iterable[str], port: int) -> None:
        """Accept the loopback names and ``names`` (the bound address), on ``port``."""
        hosts = {_netloc(n) for n in (*LOOPBACK_NAMES, *names) if n}
        self.hosts = frozenset(hosts | {f"{h}:{port}" for h in hosts})
        origins = {f"http://{h}:{port}" for h in hosts}
        if port == 80:
            origins |= {f"http://{h}" for h in hosts}
        self.origins = frozenset(origins)

    def _same_origin(self, url: str) -> bool:
        try:
            parts = urlsplit(url.strip())
            return f"{parts.scheme}://{parts.netloc}".lower() in self.origins
        except ValueError:
            return False

    def refusal(self, method: str, headers: Message) -> str | None:
        """Why a request with these headers is refused (403), or None."""
        host = headers.get("Host", "").strip().lower()
        if host not in self.hosts:
            return f"Host {host!r} is not this server"
        origin = headers.get("Origin")
        if origin is not None and origin.strip().lower() not in self.origins:
            return f"cross-origin request from {origin!r} refused"
        if method not in WRITE_METHODS:
            return None
        referer = headers.get("Referer")
        if origin is None and referer is not None and not self._same_origin(referer):
            return "cross-origin request refused (Referer)"
        token = headers.get(TOKEN_HEADER, "").encode()
        if not hmac.compare_digest(token, self.token):
            return f"missing or wrong {TOKEN_HEADER}: open the URL that `zeropath view` printed"
        return None


def _body_length(headers: Message) -> int:
    """The declared body size; :class:`HTTPError` 400/411/413 when it is unusable."""
    if "Transfer-Encoding" in headers:
        raise HTTPError(411, "send the body with a Content-Length, not chunked")
    values = headers.get_all("Content-Length") or ["0"]
    raw = values[0].strip()
    if len(values) > 1 or not re.fullmatch(r"[0-9]+", raw):
        raise HTTPError(400, f"bad Content-Length {', '.join(values)!r}")
    if len(raw) > 18 or int(raw) > MAX_BODY_BYTES:
        raise HTTPError(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    return int(raw)


def _handler_class(
    router: Router, guard: _Guard, socket_timeout: float | None
) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "zeropath-viewer"
        timeout = socket_timeout  # a client that stops sending cannot hold a thread forever

        def _serve(self) -> None:
            refusal = guard.refusal(self.command, self.headers)
            if refusal is not None:
                log.info("refused %s %s: %s", self.command, self.path, refusal)
                self._refuse(403, refusal)
                return
            try:
                length = _body_length(self.headers)
            except HTTPError as exc:
                self._refuse(exc.status, exc.message)
                return
            ctype = self.headers.get_content_type() if length else ""
            if length and ctype not in BODY_TYPES:
                message = f"unsupported Content-Type {ctype!r}: send {' or '.join(BODY_TYPES)}"
                self._refuse(415, message)
                return
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                self._refuse(400, "the request body is shorter than its Content-Length")
                return
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            request = Request(
                self.command, unquote(parts.path), query, body=body, content_type=ctype
            )
            try:
                response = router.dispatch(request)
            except Exception as exc:  # a bug in a handler must not kill the connection
                log.exception("error serving %s", self.path)
                response = json_response({"error": f"internal error: {exc}"}, 500)
            self._send(response)

        def _refuse(self, status: int, message: str) -> None:
            """Answer before reading the body, then close: what is left is not a request."""
            response = json_response({"error": message}, status)
            response.headers["Connection"] = "close"
            self._send(response)

        def _send(self, response: Response) -> None:
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "same-origin")
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

    def __init__(
        self,
        router: Router,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        timeout: float | None = 30.0,
    ) -> None:
        #: secret of this server: writes must send it in ``X-Zeropath-Token``
        self.token = secrets.token_urlsafe(32)
        guard = _Guard(self.token)
        try:
            self.httpd = ThreadingHTTPServer(
                (host, int(port)), _handler_class(router, guard, timeout)
            )
        except OSError as exc:
            hint = "; pass another --port (0 picks a free one)" if port else ""
            raise ServerError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None
        self.httpd.daemon_threads = True
        guard.allow((host, self.host), self.port)
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

    @property
    def page_url(self) -> str:
        """:attr:`url` with the token: the address to open (its page sends the token)."""
        return f"{self.url}?token={self.token}"

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
