"""The web page in a real headless browser (Debian's chromium driven by Playwright): load the
page, search by text, search with an uploaded image, ask a question, read the answer and its
sources; the screenshot is saved to ``$SUGAR_TEST_ARTEFACTS`` (default: the test's tmp dir).

Run it alone: ``pytest tests/serve/test_browser.py -m slow`` (needs ``apt-get install
chromium``; it skips, saying so, without it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sugar.serve.load import server_process
from tests.serve.conftest import Served, own_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]


def test_search_upload_and_ask_in_a_browser(served: Served, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    world = served.world
    index = own_index(served, tmp_path)
    item = world.kb_items[1]
    question = str(item.segments[0].text)
    image = world.root / next(s for s in world.kb_items if s.images).images[0]
    out = Path(os.environ.get("SUGAR_TEST_ARTEFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    args = ["--model", str(world.bundle), "--index", str(index), "--media", str(world.root)]
    with server_process(args) as url, playwright.sync_playwright() as driver:
        browser = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model').textContent !== '…'")
            assert page.inner_text("#model") == world.bundle.name
            # a text search: the fact the question names comes first
            page.fill("#search-query", question)
            page.click("#search-button")
            page.wait_for_selector("#results li")
            assert page.inner_text("#search-status") == "5 results"
            assert page.inner_text("#results li:first-child strong") == item.id
            # an image search: the upload travels as a data URL; hits show thumbnails
            page.fill("#search-query", "")
            page.set_input_files("#search-image", str(image))
            page.click("#search-button")
            page.wait_for_function("document.getElementById('search-status').textContent"
                                   ".endsWith('results')")  # fmt: skip
            assert page.locator("#results li").count() == 5
            assert page.locator("#results img").count() >= 1
            assert page.get_attribute("#results img", "src").startswith("data:image/png;base64,")
            # a question with retrieval: the answer and its sources side by side
            page.fill("#chat-question", question)
            page.fill("#chat-k", "2")
            page.click("#chat-button")
            page.wait_for_selector("#answer[data-done='1']")
            assert "error" not in (page.get_attribute("#answer", "class") or "")
            sources = page.locator("#sources li")
            assert sources.count() == 2
            assert sources.first.inner_text().startswith(item.id)
            assert item.meta["payload"] in sources.first.inner_text()
            page.screenshot(path=str(out / "serve_page.png"), full_page=True)
        finally:
            browser.close()
    assert (out / "serve_page.png").stat().st_size > 0
