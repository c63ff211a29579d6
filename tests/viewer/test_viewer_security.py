"""Attacks on the local viewer server (issue 12): cross-site writes, DNS rebinding, bodies
that crash or block it. Raw ``http.client``/sockets, so every header is ours to choose."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from helpers.annotate_data import make_loop_queue, make_queue
from helpers.viewer_data import make_viewer_data
from zeropath.viewer.annotate import AnnotateSession
from zeropath.viewer.app import build_router, create_viewer
from zeropath.viewer.labelqueue import AnnotationQueue
from zeropath.viewer.server import Router, ViewerServer

MASK = "/api/annotate/regions/r0001/mask"  # 160×120: the target of the attacks
VALID = {"width": 160, "height": 120, "rle": [255, 19200 - 60, 1, 60]}
EVIL = "http://evil.example"


@pytest.fixture
def served(tmp_path):
    data = make_queue(tmp_path)
    server, session = create_viewer(data.out, port=0, mode="annotate")
    with server.start():
        yield data, server
    session.close()


def send(server, method: str, path: str, body: bytes | None = None, **headers):
    """``method path`` with the headers of the server's own page, changed by ``headers``
    (``Host="x"``; ``None`` drops one; ``_`` in names for ``-``): ``(status, JSON body)``."""
    own = f"127.0.0.1:{server.port}"
    base = {"Host": own}
    if method != "GET":
        base |= {
            "Origin": f"http://{own}",
            "Content-Type": "application/json",
            "X-Zeropath-Token": server.token,
        }
    base |= {k.replace("_", "-"): v for k, v in headers.items()}
    if body is not None and "Content-Length" not in base:
        base["Content-Length"] = str(len(body))
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in base.items():
            if v is not None:
                conn.putheader(k, v)
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    is_json = response.getheader("Content-Type") == "application/json"
    return response.status, json.loads(data) if is_json and data else data


def post_json(server, payload, path: str = MASK, **headers):
    return send(server, "POST", path, json.dumps(payload).encode(), **headers)


def assert_healthy(server, data) -> None:
    """The server still reads, and the page's own write (r0002) still saves."""
    status, queue = send(server, "GET", "/api/annotate/queue")
    assert status == 200 and queue["total"] == 2
    status, saved = post_json(
        server, {"width": 140, "height": 90, "rle": [0, 12600]}, MASK.replace("r0001", "r0002")
    )
    assert status == 200 and saved["saved"] == "r0002", saved
    assert data.mask("r0002").exists()
    data.mask("r0002").unlink()


def test_the_pages_own_write_is_accepted(served):
    data, server = served
    assert server.page_url == f"{server.url}?token={server.token}" and len(server.token) >= 32
    status, saved = post_json(server, VALID)
    assert status == 200 and saved["counts"] == {"1": 60}
    assert data.mask("r0001").exists()
    # loopback names (with or without the port) and no Origin at all are fine too
    for host in ("localhost", f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1"):
        assert send(server, "GET", "/api/annotate/queue", Host=host)[0] == 200, host
    status, _ = post_json(
        server, VALID, Host=f"localhost:{server.port}", Origin=f"http://localhost:{server.port}"
    )
    assert status == 200
    assert post_json(server, VALID, Origin=None)[0] == 200
    assert_healthy(server, data)


def test_tokens_differ_between_servers():
    with ViewerServer(Router(), port=0) as a, ViewerServer(Router(), port=0) as b:
        assert a.token != b.token


def test_cross_site_write_is_refused(served):
    """The issue's attack: a form-like text/plain POST from another site, and variants."""
    data, server = served
    body = json.dumps(VALID).encode()
    attacks = [
        {"Origin": EVIL, "Content_Type": "text/plain", "X_Zeropath_Token": None},
        {"Origin": EVIL},  # even with the token
        {"Origin": "null"},  # sandboxed frames, file:// pages
        {"Origin": f"https://127.0.0.1:{server.port}"},
        {"Origin": f"http://127.0.0.1:{server.port + 1}"},
        {"Origin": None, "Referer": f"{EVIL}/page.html"},
    ]
    for headers in attacks:
        status, answer = send(server, "POST", MASK, body, **headers)
        assert status == 403, (headers, status, answer)
        assert not data.mask("r0001").exists()
    assert_healthy(server, data)


def test_writes_need_the_token(served):
    data, server = served
    for token in (None, "", "x", server.token[:-1], server.token + "x", server.token.upper()):
        status, answer = post_json(server, VALID, X_Zeropath_Token=token)
        assert status == 403 and "X-Zeropath-Token" in answer["error"], (token, answer)
    # a token in the query string is for the page, not for writes
    status, _ = post_json(server, VALID, MASK + f"?token={server.token}", X_Zeropath_Token=None)
    assert status == 403
    assert not data.mask("r0001").exists()
    # reads need none
    assert send(server, "GET", "/")[0] == 200
    assert send(server, "GET", MASK)[0] == 200
    assert_healthy(server, data)


def test_json_body_needs_json_content_type(served):
    data, server = served
    body = json.dumps(VALID).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        status, answer = send(server, "POST", MASK, body, Content_Type=ctype)
        assert status == 415, (ctype, status, answer)
    assert send(server, "POST", MASK, body, Content_Type="image/png")[0] == 400  # not a PNG
    assert not data.mask("r0001").exists()
    ok = send(server, "POST", MASK, body, Content_Type="application/json; charset=utf-8")
    assert ok[0] == 200
    assert_healthy(server, data)


def test_foreign_host_is_refused(served):
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    data, server = served
    status, region = send(server, "GET", "/api/annotate/regions/r0001")
    assert status == 200
    tile = "/" + region["dzi"].replace(".dzi", "_files/9/0_0.jpeg")
    assert send(server, "GET", tile)[0] == 200
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1:1", "", None):
        for path in ("/", "/api/annotate/queue", MASK, tile, "/static/annotate.js"):
            assert send(server, "GET", path, Host=host)[0] == 403, (host, path)
        assert post_json(server, VALID, Host=host)[0] == 403
    # an Origin other than the server's is refused on reads as well
    assert send(server, "GET", "/api/annotate/queue", Origin=EVIL)[0] == 403
    assert not data.mask("r0001").exists()
    assert_healthy(server, data)


def test_view_mode_checks_host_and_origin(tmp_path):
    data = make_viewer_data(tmp_path)
    server, session = create_viewer(data.out, port=0)
    with server.start():
        tile = "/dzi/sample/slide_files/0/0_0.jpeg"
        for path in ("/api/slides", "/api/info", tile):
            assert send(server, "GET", path)[0] == 200, path
            assert send(server, "GET", path, Host=f"evil.example:{server.port}")[0] == 403
            assert send(server, "GET", path, Origin=EVIL)[0] == 403
    session.close()


def test_bound_address_is_an_accepted_host(tmp_path):
    data = make_queue(tmp_path)
    try:
        server, session = create_viewer(data.out, host="127.0.0.2", port=0, mode="annotate")
    except Exception as exc:  # not every system routes all of 127/8
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    with server.start():
        own = f"127.0.0.2:{server.port}"
        assert server.url == f"http://{own}/"
        assert send(server, "GET", "/api/annotate/queue", Host=own)[0] == 200
        status, _ = post_json(server, VALID, Host=own, Origin=f"http://{own}")
        assert status == 200
        assert send(server, "GET", "/", Host=f"127.0.0.3:{server.port}")[0] == 403
    session.close()


def test_rle_overflow_is_400(tmp_path):
    """The issue's body: counts whose int64 sum wraps to 64×64 (this crashed numpy)."""
    data = make_loop_queue(tmp_path)
    server, session = create_viewer(data.out, port=0, mode="annotate")
    with server.start():
        rle = [0, 9223372036854775807, 1, 9223372036854775807, 0, 4098]
        path = "/api/annotate/regions/tile__r0_c1/mask"
        status, answer = post_json(server, {"width": 64, "height": 64, "rle": rle}, path)
        assert status == 400 and "counts" in answer["error"], answer
        assert not data.mask("tile__r0_c1").exists()
        assert send(server, "GET", "/api/annotate/queue")[0] == 200
        assert post_json(server, {"width": 64, "height": 64, "rle": [1, 4096]}, path)[0] == 200
    session.close()


def test_rle_counts_must_be_plain_ints(served):
    data, server = served
    cases = [
        [0, 2**63 - 1, 1, 2**63 - 1, 255, 19202],  # wraps to 19200 in int64
        [255, 2**64 + 19200, 255, -(2**64)],
        [255, 10**400],
        [255, 19200.0],  # floats, even whole ones
        [255, 19199.5, 255, 0.5],
        [255, True, 255, 19199],  # bools are not counts
        [True, 19200],
        [255, -1, 255, 19201],
        [255, 0, 255, 19200],
        ["255", 19200],
        [255, "19200"],
        [256, 19200],
        [255, None],
        [[255, 19200]],
    ]
    for rle in cases:
        status, answer = post_json(server, {"width": 160, "height": 120, "rle": rle})
        assert status == 400, (rle, status, answer)
    assert not data.mask("r0001").exists()
    assert_healthy(server, data)


def test_malformed_mask_json_is_400(served):
    data, server = served
    for width, height in ((160.0, 120), (True, 120), ("160", 120), (160, None)):
        payload = {"width": width, "height": height, "rle": [255, 19200]}
        assert post_json(server, payload)[0] == 400, (width, height)
    deep = b"[" * 100000 + b"]" * 100000
    assert send(server, "POST", MASK, deep)[0] == 400
    assert not data.mask("r0001").exists()
    assert_healthy(server, data)


def raw_exchange(server, head: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(head)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # the server closed with our unread body pending
            pass
    return b"".join(chunks)


def head(server, length: str, extra: str = "") -> bytes:
    own = f"127.0.0.1:{server.port}"
    return (
        f"POST {MASK} HTTP/1.1\r\nHost: {own}\r\nOrigin: http://{own}\r\n"
        f"X-Zeropath-Token: {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("length", "extra", "code"),
    [
        ("abc", "", 400),
        ("-1", "", 400),
        ("1e3", "", 400),
        ("0x10", "", 400),
        ("99999999999999999999999", "", 413),
        (str(1 << 40), "", 413),
        ("10", "Content-Length: 20\r\n", 400),
        ("10", "Transfer-Encoding: chunked\r\n", 411),
    ],
)
def test_bad_content_length_is_answered_and_closed(served, length, extra, code):
    """Answered at once (no body is awaited), then the connection closes."""
    data, server = served
    answer = raw_exchange(server, head(server, length, extra) + b'{"width": 160')
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == str(code).encode(), answer[:300]
    assert b"connection: close" in rest.lower() and b"Traceback" not in answer
    assert not data.mask("r0001").exists()
    assert_healthy(server, data)


def test_short_body_does_not_hold_a_worker(tmp_path):
    data = make_queue(tmp_path)
    session = AnnotateSession(AnnotationQueue.open(data.out))
    with ViewerServer(Router(), port=0) as default:
        assert default.httpd.RequestHandlerClass.timeout == 30
    with ViewerServer(build_router(session, "annotate"), port=0, timeout=0.5).start() as server:
        started = time.monotonic()
        answer = raw_exchange(server, head(server, "100") + b'{"width"', wait=10)
        assert answer == b"" and time.monotonic() - started < 5  # dropped, not waited on
        assert_healthy(server, data)
    session.close()
