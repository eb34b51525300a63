"""End to end in a real headless browser: ``convergent serve`` on an index built here, driven
by Playwright with the system Chromium (Debian ``chromium``; ``.ci/run`` installs it). Type a
query and see the expected image first; upload an image and see itself first; drop one on the
page and see the same.

Runs by default and fails when no browser is found; ``CONVERGENT_BROWSER_TESTS=0`` skips it
(a machine without Chromium, locally only)."""

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from convergent.app.searcher import as_rows, open_searcher
from convergent.cli import main
from tests.app.conftest import free_port

pytestmark = pytest.mark.skipif(os.environ.get("CONVERGENT_BROWSER_TESTS") == "0",
                                reason="CONVERGENT_BROWSER_TESTS=0")  # fmt: skip


def chromium() -> str:
    """The system Chromium; a test failure (not a skip) when there is none."""
    found = os.environ.get("CONVERGENT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no Chromium found: apt-get install chromium (or set CONVERGENT_CHROMIUM; "
                    "CONVERGENT_BROWSER_TESTS=0 skips this test)")  # fmt: skip
    return found


@pytest.fixture
def served(clip_run, image_folder, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "convergent", "serve", str(out), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"convergent serve did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
            time.sleep(0.2)
        yield url, out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def first_names(page, n: int = 3) -> list[str]:
    return page.eval_on_selector_all("figure.hit", f"els => els.slice(0, {n}).map(e => e.dataset.name)")


def test_search_page_in_chromium(served, image_folder, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, index = served
    query = "a red heart"
    searcher = open_searcher(index)
    expected = as_rows(searcher.text(query, 24), searcher.index.root)[0]["name"]  # what the model ranks first
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            expect(page.locator("#status")).to_contain_text("6 images indexed")
            page.fill("#q", query)
            page.press("#q", "Enter")
            expect(page.locator("#status")).to_contain_text(f"6 results for “{query}”")
            assert first_names(page)[0] == expected
            expect(page.locator("figure.hit .score").first).to_have_text(f"{searcher.text(query, 1)[0]['score']:.3f}")
            # the thumbnail loads after the results are drawn: wait for it (a broken one never gets a width)
            page.wait_for_function("() => { const img = document.querySelector('figure.hit img'); "
                                   "return img !== null && img.complete && img.naturalWidth > 0; }", timeout=15_000)

            page.set_input_files("#file", str(image_folder / "img3.png"))  # the file chooser
            expect(page.locator("#status")).to_contain_text("results for image img3.png")
            assert first_names(page)[0] == "img3.png"
            expect(page.locator("figure.hit .score").first).to_have_text("1.000")

            data = list((image_folder / "sub" / "deep.jpg").read_bytes())  # drag and drop onto the page
            page.evaluate("""bytes => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], "deep.jpg", {type: "image/jpeg"}));
                document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
            }""", data)  # fmt: skip
            expect(page.locator("#status")).to_contain_text("results for image deep.jpg")
            assert first_names(page)[0] == "sub/deep.jpg"

            page.fill("#q", "   ")
            page.press("#q", "Enter")
            expect(page.locator("#status")).to_contain_text("empty query")
            assert not errors, errors
            shot = os.environ.get("CONVERGENT_SCREENSHOT")
            page.screenshot(path=shot or str(tmp_path / "search.png"))
            info = json.loads(page.evaluate("fetch('/api/info').then(r => r.text())"))
            assert info["count"] == 6
        finally:
            browser.close()
