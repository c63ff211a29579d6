"""End to end: the viewer page in headless Chromium (Debian ``chromium`` + ``playwright``).

A synthetic slide with fake outputs is served on a free port; the page must load the slide
with OpenSeadragon, list the legend, draw the tissue and nucleus overlays (checked in
screenshot pixels, on and off) and show a nucleus's measurements when it is clicked.
Skipped when Chromium or the playwright package is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.viewer_data import LYMPHOCYTE, NUCLEUS, STROMA, TUMOR, make_viewer_data
from zeropath.viewer.nuclei import NucleusIndex

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


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return make_viewer_data(tmp_path_factory.mktemp("viewer-e2e"))


class SlowNucleusIndex(NucleusIndex):
    """Reads like a big GeoJSON would: the page must wait for it and ask again."""

    def __init__(self, *args, **kwargs) -> None:
        time.sleep(1.0)
        super().__init__(*args, **kwargs)


@pytest.fixture(scope="module")
def server(data):
    from zeropath.viewer.app import create_viewer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("zeropath.viewer.session.NucleusIndex", SlowNucleusIndex)
        srv, session = create_viewer(data.out, port=0)
        srv.start()
        yield srv
        srv.shutdown()
        session.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=TIMEOUT_MS
            )
        except sync_api.Error as exc:
            pytest.skip(f"Chromium does not start: {str(exc).splitlines()[0]}")
        pg = browser.new_page(viewport={"width": 1100, "height": 800}, device_scale_factor=1)
        pg.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(server.page_url)
        pg.wait_for_function("() => window.zp && window.zp.idle()")
        pg.page_errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


def settle(page) -> None:
    """Wait until tiles and requests are done and two frames have been painted."""
    page.wait_for_function("() => window.zp.idle()")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_function("() => window.zp.idle()")


def set_checked(page, selector: str, checked: bool) -> None:
    page.set_checked(selector, checked)
    settle(page)


def set_opacity(page, percent: int) -> None:
    page.evaluate(
        """(v) => { const s = document.getElementById('tissue-opacity');
                    s.value = v; s.dispatchEvent(new Event('input')); }""",
        percent,
    )
    settle(page)


def viewer_pixels(page) -> np.ndarray:
    from PIL import Image

    png = page.locator("#viewer").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def count_colour(pixels: np.ndarray, colour, tol: int = 12) -> int:
    diff = np.abs(pixels - np.asarray(colour, np.int16)).max(axis=-1)
    return int((diff <= tol).sum())


def test_page_opens_slide_and_lists_legend(page):
    assert page.evaluate("() => window.zp.state.viewer.world.getItemCount()") == 2
    assert page.evaluate("() => window.zp.state.slideItem.getContentSize().x") == 1500
    assert "1500×1200 px" in page.inner_text("#slide-info")
    tissue = page.locator("#legend-tissue .legend-item .name").all_inner_texts()
    assert tissue == [TUMOR["name"], STROMA["name"]]  # background is not listed
    nuclei = page.locator("#legend-nuclei .legend-item").all_inner_texts()
    assert any(NUCLEUS["name"] in t and "(6)" in t for t in nuclei)
    assert any(LYMPHOCYTE["name"] in t and "(2)" in t for t in nuclei)
    assert "8 of 8 nuclei drawn" in page.inner_text("#nuclei-status")
    assert page.page_errors == []


def test_tissue_overlay_draws_and_toggles(page):
    set_checked(page, "#toggle-nuclei", False)
    set_checked(page, "#toggle-tissue", True)
    set_opacity(page, 100)
    on = viewer_pixels(page)
    set_checked(page, "#toggle-tissue", False)
    off = viewer_pixels(page)
    set_opacity(page, 40)
    set_checked(page, "#toggle-tissue", True)
    set_checked(page, "#toggle-nuclei", True)
    for colour in (TUMOR["color"], STROMA["color"]):
        assert count_colour(on, colour) > 20000, colour
        assert count_colour(off, colour) < 50, colour


def test_nuclei_overlay_draws_and_toggles(page):
    set_checked(page, "#toggle-tissue", False)
    set_checked(page, "#toggle-nuclei", True)
    on = viewer_pixels(page)
    set_checked(page, "#toggle-nuclei", False)
    off = viewer_pixels(page)
    set_checked(page, "#toggle-nuclei", True)
    set_checked(page, "#toggle-tissue", True)
    for colour in (NUCLEUS["color"], LYMPHOCYTE["color"]):
        assert count_colour(on, colour, tol=40) > 100, colour
        assert count_colour(off, colour, tol=40) == 0, colour


def test_click_on_nucleus_shows_its_measurements(page, data):
    nucleus = data.nuclei[2]
    box = page.locator("#viewer").bounding_box()
    point = page.evaluate(
        """([x, y]) => window.zp.state.slideItem.imageToViewerElementCoordinates(
               new OpenSeadragon.Point(x, y))""",
        [nucleus["cx"], nucleus["cy"]],
    )
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_selector("#measurement-table")
    settle(page)
    assert page.inner_text("#measurements h2") == f"Nucleus {nucleus['id']}"
    assert nucleus["class"]["name"] in page.inner_text("#measurements")
    for name, value in nucleus["m"].items():
        cell = page.locator(f'#measurement-table tr[data-name="{name}"] td')
        assert cell.inner_text() == repr(float(f"{value:.5g}")).removesuffix(".0")
    assert count_colour(viewer_pixels(page), (255, 230, 0), tol=30) > 50  # highlighted

    # a click on bare stroma clears the panel
    point = page.evaluate(
        "() => window.zp.state.slideItem.imageToViewerElementCoordinates("
        "new OpenSeadragon.Point(800, 200))"
    )
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_function(
        "() => document.getElementById('measurements').innerText.includes('No nucleus here')"
    )
    assert page.page_errors == []
