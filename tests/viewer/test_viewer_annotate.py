"""``zeropath view --annotate``: the queue reader, mask validation and the HTTP API."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from helpers.annotate_data import (
    CLASSES,
    HEIGHT,
    LOOP_CLASSES,
    LOOP_REGIONS,
    REGIONS,
    TUMOR,
    WIDTH,
    make_loop_queue,
    make_queue,
)
from helpers.viewer_data import viewer_process
from zeropath.cli.main import cli
from zeropath.errors import InputError
from zeropath.viewer.app import create_viewer
from zeropath.viewer.labelqueue import (
    UNLABELLED,
    AnnotationQueue,
    MaskError,
    decode_mask_png,
    encode_mask_png,
    find_queue,
    parse_classes,
    rle_decode,
    rle_encode,
)


def read_png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


# --------------------------------------------------------------------------- queue reading


def test_find_queue_accepts_run_dir_queue_dir_and_index(tmp_path):
    data = make_queue(tmp_path)
    expected = (data.queue, data.out)
    assert find_queue(data.out) == expected
    assert find_queue(data.queue) == expected
    assert find_queue(data.queue / "index.json") == expected
    with pytest.raises(InputError, match="no annotation queue here"):
        find_queue(tmp_path / "pool")
    with pytest.raises(InputError, match="no such file"):
        find_queue(tmp_path / "missing")
    with pytest.raises(InputError, match="not an annotation queue"):
        find_queue(data.image)


def test_queue_regions_and_relative_image(tmp_path):
    data = make_queue(tmp_path, relative_image=True)
    q = AnnotationQueue.open(data.out)
    assert q.ids == list(REGIONS)
    r = q.region("r0001")
    assert r.image == data.image.resolve()
    assert r.box == REGIONS["r0001"] and (r.width, r.height) == (160, 120)
    assert r.round == 1 and r.unlabelled == UNLABELLED
    assert [c.to_dict() for c in r.classes] == CLASSES
    assert r.values == {0, 1, 255}
    summary = q.summary()
    assert summary["done"] == 0 and summary["total"] == 2
    assert summary["regions"][0] == {"id": "r0001", "done": False, "round": 1}
    with pytest.raises(KeyError):
        q.region("r9999")


def test_queue_falls_back_to_run_json_classes_and_index_fields(tmp_path):
    data = make_queue(tmp_path)
    (data.queue / "r0002.json").unlink()
    index = {
        "regions": [
            "r0001",
            {"id": "r0002", "image": str(data.image), "x0": 1, "y0": 2, "x1": 11, "y1": 7},
            {"id": "../evil"},
            {"no": "id"},
        ]
    }
    (data.queue / "index.json").write_text(json.dumps(index))
    region = json.loads((data.queue / "r0001.json").read_text())
    del region["classes"]
    (data.queue / "r0001.json").write_text(json.dumps(region))
    (data.out / "run.json").write_text(
        json.dumps({"classes": [{"name": "a", "color": "#ff0000"}, {"name": "b"}]})
    )
    q = AnnotationQueue(data.queue)
    assert q.ids == ["r0001", "r0002"]
    assert "skipped 2 entries" in q.warnings[0]
    r1 = q.region("r0001")
    assert r1.unlabelled is None and r1.empty == UNLABELLED and r1.values == {0, 1}
    assert [(c.index, c.name, c.color) for c in r1.classes] == [
        (0, "a", (255, 0, 0)),
        (1, "b", (255, 127, 14)),
    ]
    r2 = q.region("r0002")
    assert r2.box == (1, 2, 11, 7) and r2.round is None


def test_queue_rereads_a_rewritten_index(tmp_path):
    data = make_queue(tmp_path)
    q = AnnotationQueue(data.queue)
    assert len(q) == 2
    (data.queue / "index.json").write_text(json.dumps({"regions": ["r0002"], "padding": "x"}))
    assert q.ids == ["r0002"] and "r0001" not in q


def test_parse_classes_shapes():
    assert [c.name for c in parse_classes(["x", "y"])] == ["x", "y"]
    by_name = parse_classes({"tumor": [1, 2, 3], "normal": {"index": 5, "color": [0, 0, 0]}})
    assert [(c.index, c.name, c.color) for c in by_name] == [
        (0, "tumor", (1, 2, 3)),
        (5, "normal", (0, 0, 0)),
    ]
    assert parse_classes({"classes": [{"index": 3, "name": "z"}]})[0].index == 3
    assert parse_classes(None) is None and parse_classes([]) is None


def test_broken_regions_are_input_errors(tmp_path):
    data = make_queue(tmp_path)
    q = AnnotationQueue(data.queue)
    region = json.loads((data.queue / "r0001.json").read_text())
    for change, message in [
        ({"box": [5, 5, 5, 9]}, "empty"),
        ({"box": "nope"}, "no box"),
        ({"image": "nowhere.png"}, "does not exist"),
        ({"classes": []}, "no class list"),
        ({"unlabelled": 1}, "unlabelled"),
        ({"unlabelled": "x"}, "unlabelled"),
        ({"box": {"x": 1, "y": 2}}, "no box"),
    ]:
        (data.queue / "r0001.json").write_text(json.dumps({**region, **change}))
        with pytest.raises(InputError, match=message):
            q.region("r0001")


# --------------------------------------------------------------------------- masks


def test_rle_round_trip_and_errors():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 1, 255], np.uint8), size=(7, 9), p=[0.2, 0.2, 0.6])
    rle = rle_encode(mask)
    assert sum(rle[1::2]) == mask.size
    np.testing.assert_array_equal(rle_decode(rle, 9, 7), mask)
    assert rle_encode(np.full((2, 3), 255, np.uint8)) == [255, 6]
    for bad in ([1, 2, 3], [1, 0, 1, 63], [300, 63], [1, 62], "x", [[1, 63]], [1.5, "a"]):
        with pytest.raises(MaskError):
            rle_decode(bad, 9, 7)


def test_png_codec():
    mask = np.array([[0, 1], [255, 1]], np.uint8)
    np.testing.assert_array_equal(decode_mask_png(encode_mask_png(mask)), mask)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG")
    with pytest.raises(MaskError, match="greyscale"):
        decode_mask_png(buf.getvalue())
    with pytest.raises(MaskError, match="cannot decode"):
        decode_mask_png(b"\x89PNG\r\n\x1a\nbroken")


def test_save_and_read_mask_validates(tmp_path):
    data = make_queue(tmp_path)
    q = AnnotationQueue(data.queue)
    mask = np.full((120, 160), UNLABELLED, np.uint8)
    mask[10:20, 30:60] = 1
    mask[50:60, 0:5] = 0
    path = q.save_mask("r0001", mask)
    assert path == data.mask("r0001") and q.is_done("r0001") and not q.is_done("r0002")
    np.testing.assert_array_equal(read_png(path), mask)
    np.testing.assert_array_equal(q.read_mask("r0001"), mask)
    assert q.read_mask("r0002") is None
    assert q.summary()["done"] == 1
    with pytest.raises(MaskError, match="160×120"):
        q.save_mask("r0001", mask[:, :100])
    bad = mask.copy()
    bad[0, 0] = 7
    with pytest.raises(MaskError, match=r"values \[7\]"):
        q.save_mask("r0001", bad)
    np.testing.assert_array_equal(read_png(path), mask)  # the failed saves changed nothing
    assert sorted(p.name for p in data.queue.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(KeyError):
        q.save_mask("../r0001", mask)


def test_loop_queue_needs_complete_masks(tmp_path):
    data = make_loop_queue(tmp_path)
    q = AnnotationQueue.open(data.out)
    assert q.ids == list(LOOP_REGIONS)
    assert q.summary()["regions"][1] == {"id": "tile__r2_c4", "done": False, "round": 2}
    r = q.region("tile__r2_c4")
    assert r.box == LOOP_REGIONS["tile__r2_c4"] and (r.width, r.height) == (44, 64)
    assert [(c.index, c.name) for c in r.classes] == list(enumerate(LOOP_CLASSES))
    assert r.unlabelled is None and r.values == {0, 1} and r.round == 2
    mask = np.full((64, 44), UNLABELLED, np.uint8)
    mask[:10] = 1
    with pytest.raises(MaskError, match=r"2376 pixels are unlabelled"):
        q.save_mask(r.id, mask)
    mask[10:] = 0
    q.save_mask(r.id, mask)
    np.testing.assert_array_equal(read_png(data.mask(r.id)), mask)


def test_masks_fit_the_active_loop_store(tmp_path):
    """The loop's own QueueStore writes the queue; its reader takes the saved mask."""
    store = pytest.importorskip("zeropath.active.store", reason="active learning not present")
    annotations = pytest.importorskip("zeropath.active.annotations")
    data = make_loop_queue(tmp_path)
    for p in data.queue.iterdir():
        p.unlink()
    entries = [
        json.loads(json.dumps(e))
        for e in (
            {
                "id": rid,
                "image": str(data.image),
                "stem": "tile",
                "box": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0},
                "round": 0,
                "classes": LOOP_CLASSES,
                "mask": f"{rid}.mask.png",
            }
            for rid, (x0, y0, x1, y1) in LOOP_REGIONS.items()
        )
    ]
    qs = store.QueueStore(data.out)
    qs.write(entries, {}, {"round": 0, "classes": LOOP_CLASSES})
    q = AnnotationQueue.open(data.out)
    assert q.ids == list(LOOP_REGIONS)
    for rid, (x0, y0, x1, y1) in LOOP_REGIONS.items():
        r = q.region(rid)
        assert r.box == (x0, y0, x1, y1) and r.unlabelled is None
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        mask[5:20, 3:30] = 1
        q.save_mask(rid, mask)
        assert qs.mask_path(rid) == q.mask_path(rid)
        read = annotations.read_class_mask(qs.mask_path(rid), len(LOOP_CLASSES))
        np.testing.assert_array_equal(read, mask)


# --------------------------------------------------------------------------- HTTP API


@pytest.fixture
def served(tmp_path):
    data = make_queue(tmp_path)
    server, session = create_viewer(data.out, port=0, mode="annotate")
    server.start()
    yield data, server
    server.shutdown()
    session.close()


def request(url: str, body: bytes | None = None, ctype: str = "application/json", token: str = ""):
    """GET ``url``, or POST ``body`` with ``ctype`` and the server's ``token``."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", ctype)
        req.add_header("X-Zeropath-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def request_json(url: str, payload=None, token: str = ""):
    body = None if payload is None else json.dumps(payload).encode()
    status, ctype, data = request(url, body, token=token)
    assert ctype == "application/json", (status, data[:200])
    return status, json.loads(data)


def test_api_page_queue_and_region(served):
    data, server = served
    url = server.url
    status, ctype, page = request(url)
    assert status == 200 and b"annotate.js" in page
    for asset in ("static/annotate.js", "static/annotate.css", "static/viewer.css"):
        assert request(url + asset)[0] == 200
    status, q = request_json(url + "api/annotate/queue")
    assert status == 200 and q["total"] == 2 and q["done"] == 0
    assert [r["id"] for r in q["regions"]] == list(REGIONS)
    status, r = request_json(url + "api/annotate/regions/r0002")
    assert status == 200
    assert r["box"] == list(REGIONS["r0002"]) and (r["width"], r["height"]) == (140, 90)
    assert (r["image_width"], r["image_height"]) == (WIDTH, HEIGHT) and r["inside"]
    assert r["classes"] == CLASSES and r["unlabelled"] == 255 and r["empty"] == 255
    assert not r["done"]
    assert r["previous"] == "r0001" and r["next"] is None and r["position"] == 1
    assert "image" not in r and r["image_name"] == "tile.png"
    # the image pyramid and a crop of the box
    status, ctype, xml = request(url + r["dzi"])
    assert status == 200 and b'Width="300"' in xml
    assert request(url + r["dzi"].replace(".dzi", "_files/9/0_0.jpeg"))[1] == "image/jpeg"
    status, ctype, png = request(url + "api/annotate/regions/r0002/image.png?margin=5")
    assert status == 200 and ctype == "image/png"
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)))
    assert rgb.shape == (100, 150, 3)
    expected = np.asarray(Image.open(data.image))[95:195, 145:295]
    np.testing.assert_array_equal(rgb, expected)


def test_api_mask_round_trip(served):
    data, server = served
    url = server.url
    status, m = request_json(url + "api/annotate/regions/r0001/mask")
    assert status == 200 and m == {
        "width": 160,
        "height": 120,
        "rle": [255, 19200],
        "exists": False,
    }
    assert request(url + "api/annotate/regions/r0001/mask.png")[0] == 404

    mask = np.full((120, 160), 255, np.uint8)
    mask[5:25, 10:70] = TUMOR["index"]
    mask[60:, :] = 0
    payload = {"width": 160, "height": 120, "rle": rle_encode(mask)}
    status, saved = request_json(url + "api/annotate/regions/r0001/mask", payload, server.token)
    assert status == 200, saved
    assert saved["saved"] == "r0001" and saved["done"] == 1 and saved["total"] == 2
    assert saved["counts"] == {"0": 60 * 160, "1": 20 * 60}
    assert saved["labelled"] == 60 * 160 + 20 * 60
    np.testing.assert_array_equal(read_png(data.mask("r0001")), mask)

    status, m = request_json(url + "api/annotate/regions/r0001/mask")
    assert m["exists"] and np.array_equal(rle_decode(m["rle"], 160, 120), mask)
    status, ctype, png = request(url + "api/annotate/regions/r0001/mask.png")
    assert status == 200 and ctype == "image/png"
    np.testing.assert_array_equal(decode_mask_png(png), mask)
    status, q = request_json(url + "api/annotate/queue")
    assert q["done"] == 1 and q["regions"][0]["done"] and not q["regions"][1]["done"]

    # a PNG body is accepted as well
    other = np.zeros((90, 140), np.uint8)
    status, ctype, body = request(
        url + "api/annotate/regions/r0002/mask", encode_mask_png(other), "image/png", server.token
    )
    assert status == 200, body
    np.testing.assert_array_equal(read_png(data.mask("r0002")), other)


def test_api_rejects_bad_masks(served):
    data, server = served
    url = server.url
    base = url + "api/annotate/regions/r0001/mask"
    cases = [
        ({"width": 100, "height": 120, "rle": [255, 12000]}, 422, "160×120"),
        ({"width": 160, "height": 120, "rle": [255, 100]}, 400, "covers 100 pixels"),
        ({"width": 160, "height": 120, "rle": [7, 19200]}, 422, "values [7]"),
        ({"width": 160, "height": 120, "rle": [255, -1, 255, 19201]}, 400, "positive"),
        ({"width": 160, "height": 120}, 400, "no 'rle'"),
        ([1, 2], 400, "JSON object"),
    ]
    for payload, code, message in cases:
        status, body = request_json(base, payload, server.token)
        assert status == code and message in body["error"], (payload, status, body)
    status, _, body = request(base, b"{not json", token=server.token)
    assert status == 400 and b"not JSON" in body
    png = encode_mask_png(np.zeros((3, 3), np.uint8))
    status, _, body = request(base, png, "image/png", server.token)
    assert status == 422 and "is 3×3 pixels" in json.loads(body)["error"]
    assert not data.mask("r0001").exists()


def test_api_refuses_unknown_ids_and_traversal(served):
    data, server = served
    url = server.url
    secret = data.out / "secret.json"
    secret.write_text('{"box": [0, 0, 1, 1]}')
    for rid in ("r9999", "..", "..%2Fsecret", "%2E%2E%2Fsecret", "index", "r0001.mask", ".hidden"):
        for tail in ("", "/mask", "/mask.png", "/image.png"):
            status = request(f"{url}api/annotate/regions/{rid}{tail}")[0]
            assert status == 404, (rid, tail, status)
    status, body = request_json(
        url + "api/annotate/regions/..%2Fsecret/mask",
        {"width": 1, "height": 1, "rle": [0, 1]},
        server.token,
    )
    assert status == 404 and "not found" in body["error"]
    assert request(url + "annotate/dzi/7/image.dzi")[0] == 404
    assert request(url + "annotate/dzi/..%2F0/image.dzi")[0] == 404
    assert sorted(p.name for p in data.out.iterdir()) == ["queue", "secret.json"]


def test_api_loop_queue_refuses_unlabelled_pixels(tmp_path):
    data = make_loop_queue(tmp_path)
    server, session = create_viewer(data.queue, port=0, mode="annotate")
    with server.start():
        url = server.url + "api/annotate/regions/tile__r0_c1"
        status, r = request_json(url)
        assert status == 200 and r["unlabelled"] is None and r["empty"] == 255
        assert r["box"] == list(LOOP_REGIONS["tile__r0_c1"]) and r["round"] == 2
        assert [c["name"] for c in r["classes"]] == LOOP_CLASSES
        status, m = request_json(url + "/mask")
        assert m["rle"] == [255, 64 * 64] and not m["exists"]
        status, body = request_json(
            url + "/mask", {"width": 64, "height": 64, "rle": [1, 64, 255, 4032]}, server.token
        )
        assert status == 422 and "4032 pixels are unlabelled" in body["error"]
        status, body = request_json(
            url + "/mask", {"width": 64, "height": 64, "rle": [1, 64, 0, 4032]}, server.token
        )
        assert status == 200 and body["counts"] == {"0": 4032, "1": 64}
        assert read_png(data.mask("tile__r0_c1"))[0].tolist() == [1] * 64
    session.close()


def test_view_mode_routes_are_absent_in_annotate_mode(served):
    _, server = served
    url = server.url
    assert request(url + "api/slides")[0] == 404
    assert request(url + "api/annotate/queue")[0] == 200


# --------------------------------------------------------------------------- CLI


def test_cli_annotate_without_queue_exits_2_with_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["view", str(tmp_path), "--annotate", "--no-browser"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}: no annotation queue")
    data = make_queue(tmp_path / "run")
    (data.queue / "index.json").write_text('{"regions": []}')
    result = runner.invoke(cli, ["view", str(data.out), "--annotate", "--no-browser"])
    assert result.exit_code == 2 and "queue is empty" in result.output
    (data.queue / "index.json").write_text("{broken")
    result = runner.invoke(cli, ["view", str(data.out), "--annotate", "--no-browser"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_cli_annotate_serves_until_interrupted(tmp_path):
    data = make_queue(tmp_path)
    with viewer_process(str(data.queue), "--annotate") as (line, url, token):
        assert "0 of 2 regions done" in line
        status, q = request_json(url + "api/annotate/queue")
        assert status == 200 and q["total"] == 2
        status, body = request_json(
            url + "api/annotate/regions/r0002/mask", {"width": 140, "height": 90, "rle": [0, 12600]}
        )
        assert status == 403 and "Token" in body["error"] and not data.mask("r0002").exists()
        status, body = request_json(
            url + "api/annotate/regions/r0002/mask",
            {"width": 140, "height": 90, "rle": [0, 12600]},
            token,
        )
        assert status == 200 and data.mask("r0002").exists()


def test_view_help_mentions_annotate():
    result = CliRunner().invoke(cli, ["view", "--help"])
    assert result.exit_code == 0 and "--annotate" in result.output
