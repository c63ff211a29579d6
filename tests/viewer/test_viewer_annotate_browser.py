"""End to end: ``zeropath view --annotate`` in headless Chromium (Debian ``chromium`` +
``playwright``).

A two-region queue over a 300×200 image is served on a free port. The test opens the page,
picks class 1, paints a brush stroke with the mouse, undoes a stray stroke, draws a polygon
of class 0 (closed by a double-click), saves with the ``s`` key and then reads the stored
``ID.mask.png``: painted pixels hold their class, untouched ones the unlabelled value 255.
The second region gets a triangle closed with Enter; reopening the first one shows its saved
labels. Skipped when Chromium or playwright is missing.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.annotate_data import (
    BACKGROUND,
    LOOP_REGIONS,
    REGIONS,
    TUMOR,
    make_loop_queue,
    make_queue,
)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = os.environ.get("ZEROPATH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15000
BRUSH = 10  # brush diameter, image pixels
STROKE = ((20.0, 30.0), (100.0, 30.0))  # box pixel coordinates
POLYGON = [(30.0, 60.0), (120.0, 60.0), (120.0, 100.0), (30.0, 100.0)]
TRIANGLE = [(10.0, 10.0), (70.0, 70.0), (10.0, 70.0)]  # in the second region


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_queue(tmp_path_factory.mktemp("annotate-e2e"))


@pytest.fixture(scope="module")
def server(data):
    from zeropath.viewer.app import create_viewer

    srv, session = create_viewer(data.out, port=0, mode="annotate")
    srv.start()
    yield srv
    srv.shutdown()
    session.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=TIMEOUT_MS
            )
        except sync_api.Error as exc:
            pytest.skip(f"Chromium does not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    pg = browser.new_page(viewport={"width": 1100, "height": 800}, device_scale_factor=1)
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(url)
    settle(pg)
    pg.page_errors = errors  # type: ignore[attr-defined]
    return pg


@pytest.fixture(scope="module")
def page(browser, server):
    pg = open_page(browser, server.page_url)
    yield pg
    pg.close()


def settle(page) -> None:
    page.wait_for_function("() => window.zp && window.zp.idle()")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_function("() => window.zp.idle()")


def to_client(page, x: float, y: float) -> tuple[float, float]:
    p = page.evaluate("([x, y]) => window.zp.maskToClient(x, y)", [x, y])
    return p["x"], p["y"]


def stroke(page, a, b, steps: int = 12) -> None:
    page.mouse.move(*to_client(page, *a))
    page.mouse.down()
    page.mouse.move(*to_client(page, *b), steps=steps)
    page.mouse.up()


def labelled_count(page) -> int:
    return page.evaluate(
        "() => window.zp.state.labels.reduce((n, v) => n + (v !== 255 ? 1 : 0), 0)"
    )


def segment_distance(shape, a, b) -> np.ndarray:
    """Distance of each pixel centre to the segment a–b (box pixel coordinates)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    u = np.clip(((xx - ax) * dx + (yy - ay) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(ax + u * dx - xx, ay + u * dy - yy)


def test_paint_save_and_reopen(page, data, server):
    # the queue and the first region are shown
    assert page.inner_text("#progress") == "0 / 2 done"
    assert page.locator("#queue-list li").count() == 2
    region = page.evaluate("() => window.zp.state.region")
    assert region["id"] == "r0001" and region["box"] == list(REGIONS["r0001"])
    names = page.locator("#class-picker li .name").all_inner_texts()
    assert names == [BACKGROUND["name"], TUMOR["name"], "eraser (unlabelled)"]
    size = page.evaluate("() => window.zp.state.viewer.world.getItemAt(0).getContentSize()")
    assert (size["x"], size["y"]) == (300, 200)

    # class 1, brush of 10 image pixels
    page.keyboard.press("1")
    page.keyboard.press("b")
    assert page.evaluate("() => window.zp.state.value") == TUMOR["index"]
    assert "active" in (page.get_attribute("#tool-brush", "class") or "")
    page.evaluate(
        """(v) => { const s = document.getElementById('brush-size');
                    s.value = v; s.dispatchEvent(new Event('input')); }""",
        BRUSH,
    )
    # a stray stroke, undone
    stroke(page, (130, 110), (150, 110), steps=4)
    assert labelled_count(page) > 0
    page.keyboard.press("z")
    assert labelled_count(page) == 0

    # the real stroke; the view must not pan while painting
    center = page.evaluate("() => window.zp.state.viewer.viewport.getCenter(true).x")
    stroke(page, *STROKE)
    assert page.evaluate("() => window.zp.state.viewer.viewport.getCenter(true).x") == center
    assert "unsaved" in page.inner_text("#save-status")

    # a polygon of class 0: three clicks, then a double-click on the last vertex
    page.keyboard.press("0")
    page.keyboard.press("p")
    for x, y in POLYGON[:-1]:
        page.mouse.click(*to_client(page, x, y))
    page.mouse.dblclick(*to_client(page, *POLYGON[-1]))
    page.wait_for_function("() => window.zp.state.polygon.length === 0")

    # the mask is drawn over the image in the class colours
    page.evaluate(
        """() => { const s = document.getElementById('mask-opacity');
                   s.value = 100; s.dispatchEvent(new Event('input')); }"""
    )
    settle(page)
    from PIL import Image

    shot = np.asarray(
        Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB")
    ).astype(int)
    for colour in (TUMOR["color"], BACKGROUND["color"]):
        near = np.abs(shot - np.asarray(colour)).max(axis=-1) <= 10
        assert near.sum() > 1000, colour

    # save with the key; the page reports it and the queue counts it
    page.keyboard.press("s")
    page.wait_for_function(
        "() => document.getElementById('save-status').textContent.startsWith('saved')"
    )
    settle(page)
    assert page.inner_text("#progress") == "1 / 2 done"
    assert "done" in (page.get_attribute('#queue-list li[data-id="r0001"]', "class") or "")

    # the stored mask: stroke = 1, polygon = 0, the rest unlabelled
    path = data.mask("r0001")
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (160, 120)
        mask = np.asarray(im)
    assert set(np.unique(mask).tolist()) == {0, 1, 255}
    dist = segment_distance(mask.shape, *STROKE)
    r = BRUSH / 2
    assert (mask[dist <= r - 1.5] == TUMOR["index"]).all()
    yy, xx = np.mgrid[0:120, 0:160] + 0.5
    (px0, py0), (px1, py1) = POLYGON[0], POLYGON[2]
    inside = (xx > px0 + 1.5) & (xx < px1 - 1.5) & (yy > py0 + 1.5) & (yy < py1 - 1.5)
    near_poly = (xx > px0 - 1.5) & (xx < px1 + 1.5) & (yy > py0 - 1.5) & (yy < py1 + 1.5)
    assert (mask[inside] == BACKGROUND["index"]).all()
    assert (mask[(dist > r + 1.5) & ~near_poly] == 255).all()
    assert abs(int((mask == 1).sum()) - (80 * BRUSH + math.pi * r * r)) < 150
    assert abs(int((mask == 0).sum()) - 90 * 40) < 300
    assert not data.mask("r0002").exists()

    # next region, then back: the saved labels come back from the server
    page.keyboard.press("n")
    settle(page)
    assert page.evaluate("() => window.zp.state.region.id") == "r0002"
    assert labelled_count(page) == 0
    # a triangle of class 1 closed with Enter, saved too
    page.keyboard.press("1")
    for x, y in TRIANGLE:
        page.mouse.click(*to_client(page, x, y))
        page.wait_for_timeout(50)
    assert page.evaluate("() => window.zp.state.polygon.length") == 3
    page.keyboard.press("Enter")
    page.keyboard.press("s")
    page.wait_for_function("() => document.getElementById('progress').textContent === '2 / 2 done'")
    with Image.open(data.mask("r0002")) as im:
        second = np.asarray(im)
    assert second.shape == (90, 140) and set(np.unique(second).tolist()) == {1, 255}
    assert abs(int((second == 1).sum()) - 60 * 60 / 2) < 80
    assert second[40, 30] == 1 and second[5, 5] == 255 and second[70, 100] == 255

    assert f"token={server.token}" in page.url  # changing regions keeps the token
    page.goto(f"{server.page_url}&id=r0001")
    settle(page)
    assert page.evaluate("() => window.zp.state.region.id") == "r0001"
    assert labelled_count(page) == int((mask != 255).sum())
    assert page.inner_text("#save-status") == "saved earlier"
    assert page.page_errors == []


def test_loop_queue_needs_every_pixel_labelled(browser, tmp_path):
    """The loop's own queue (no unlabelled value): Save refuses gaps until they are filled."""
    from PIL import Image

    from zeropath.viewer.app import create_viewer

    data = make_loop_queue(tmp_path)
    srv, session = create_viewer(data.out, port=0, mode="annotate")
    srv.start()
    try:
        pg = open_page(browser, srv.page_url)
        rid = "tile__r0_c1"
        assert pg.evaluate("() => window.zp.state.region.id") == rid
        assert pg.locator("#class-picker li .name").all_inner_texts() == [
            "background",
            "foreground",
            "eraser",
        ]
        pg.keyboard.press("1")
        pg.evaluate(
            """() => { const s = document.getElementById('brush-size');
                       s.value = 8; s.dispatchEvent(new Event('input')); }"""
        )
        stroke(pg, (5, 20), (50, 20), steps=6)
        pg.keyboard.press("s")
        pg.wait_for_function(
            "() => document.getElementById('save-status').textContent.startsWith('not saved')"
        )
        assert "pixels are still unlabelled" in pg.inner_text("#save-status")
        assert not data.mask(rid).exists()
        painted = labelled_count(pg)
        pg.keyboard.press("0")
        pg.keyboard.press("f")  # the rest is background
        assert labelled_count(pg) == 64 * 64
        pg.keyboard.press("s")
        pg.wait_for_function(
            "() => document.getElementById('progress').textContent === '1 / 2 done'"
        )
        with Image.open(data.mask(rid)) as im:
            mask = np.asarray(im)
        assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) == {0, 1}
        assert int((mask == 1).sum()) == painted
        assert (mask[18:23, 6:49] == 1).all() and mask[40, 30] == 0
        assert LOOP_REGIONS[rid] == tuple(pg.evaluate("() => window.zp.state.region.box"))
        assert pg.page_errors == []
        pg.close()
    finally:
        srv.shutdown()
        session.close()
