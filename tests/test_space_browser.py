"""The Space in a real browser: Debian's chromium, headless, driven by Python playwright.

Loads the page, uploads the astronaut example clip, runs the anonymizer, waits until the
anonymized video is decoded by the browser itself, and saves a screenshot in the test's tmp folder.
"""

from __future__ import annotations

import os
import socket

import pytest

from hf_maskdp.commands.space import load_space_app

CHROMIUM = os.environ.get("HF_MASKDP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (`make apt`) or set HF_MASKDP_CHROMIUM")
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Error as err:
            pytest.fail(f"{CHROMIUM} is installed but did not start: {err}")
        yield browser
        browser.close()


@pytest.fixture
def space_url(tmp_path):
    app = load_space_app()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.launch(port=port, cache_dir=tmp_path / "cache", prevent_thread_lock=True, quiet=True)
    yield demo.local_url, tmp_path / "cache" / "astronaut_pan_zoom.mp4"
    demo.close()


def test_anonymize_the_example_clip_in_a_browser(browser, space_url, tmp_path):
    url, example = space_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url, wait_until="networkidle")
    page.locator("#video-in input[type=file]").set_input_files(str(example))
    page.locator("#video-in video").wait_for(timeout=30_000)  # the upload is previewed
    page.get_by_role("button", name="Anonymize", exact=True).click()

    status = page.locator("#anonymize-status")
    status.get_by_text("people found: 1").wait_for(timeout=120_000)
    assert "Status: ok" in status.inner_text()
    video = page.locator("#video-anonymized video")
    # The browser itself decodes the anonymized clip (the page shows a yuv420p H.264 display copy).
    page.wait_for_function("v => v.readyState >= 2 && v.videoWidth === 256", arg=video.element_handle(), timeout=30_000)
    screenshot = tmp_path / "space_anonymize.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # The privacy tab computes ε and draws the curve.
    page.get_by_role("tab", name="Privacy budget").click()
    page.get_by_role("button", name="Compute ε").click()
    page.get_by_text("ε = 3.64 at δ = 1e-05").wait_for(timeout=60_000)  # 10k clips, batch 256, 10 epochs, σ = 1
    page.locator("canvas, svg.marks").first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "space_privacy.png"), full_page=True)
    assert not errors, f"JavaScript errors in the page: {errors}"
    print(f"screenshots: {tmp_path}")
