"""``convergent serve``'s app on localhost: JSON answers, only indexed files served (no path
traversal), uploads limited in bytes and pixels, clear JSON errors, and a bounded concurrent
load without errors."""

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from convergent.app.searcher import open_searcher
from convergent.app.server import create_app
from convergent.cli import main
from tests.app.conftest import LocalServer


@pytest.fixture
def server(clip_run, image_folder, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    app = create_app(open_searcher(out), max_upload_bytes=64 * 1024, max_pixels=1000 * 1000)
    with LocalServer(app) as running:
        yield running


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def test_text_and_image_queries(server, image_folder):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert "<input id=\"q\"" in c.get("/").text and "http" not in c.get("/").text.split("<script>")[1].lower()
        info = c.get("/api/info").json()
        assert info["count"] == 6 and info["kind"] == "image-text"
        found = c.get("/api/search", params={"q": "a red heart", "k": 4}).json()
        assert len(found["results"]) == 4 and all({"id", "name", "score", "thumb"} <= set(r) for r in found["results"])
        thumb = c.get(found["results"][0]["thumb"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        data = (image_folder / "img2.png").read_bytes()
        hits = c.post("/api/search/image", files={"file": ("q.png", data, "image/png")}).json()["results"]
        assert hits[0]["name"] == "img2.png" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert c.get(hits[0]["image"]).content == data


def test_only_indexed_files_are_served(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for url in ("/api/image/999999", "/api/thumb/-1", "/api/image/..%2F..%2Fetc%2Fpasswd",
                    "/api/thumb/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd", "/static/../../etc/passwd",
                    "/api/image/1/../../../../etc/passwd", "/etc/passwd"):  # fmt: skip
            r = c.get(url)
            assert r.status_code in (404, 422), url
            assert "error" in r.json() and "root:" not in r.text, url


def test_uploads_are_limited(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~120 KB PNG > 64 KB
        r = c.post("/api/search/image", files={"file": ("big.png", png(noise), "image/png")})
        assert r.status_code == 413 and "larger than 65,536 bytes" in r.json()["error"]
        bomb = png(np.zeros((2000, 2000), dtype=np.uint8))  # 4 Mpx in a few KB: refused before decoding
        assert len(bomb) < 64 * 1024
        r = c.post("/api/search/image", files={"file": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 413 and "too large" in r.json()["error"]
        r = c.post("/api/search/image", files={"file": ("x.png", b"not an image", "image/png")})
        assert r.status_code == 400 and "not a readable image" in r.json()["error"]
        r = c.post("/api/search/image")
        assert r.status_code == 422 and "file" in r.json()["error"]
        r = c.post("/api/search/image", content=b"x" * (1 << 20), headers={"content-type": "multipart/form-data; "
                   "boundary=b"})  # 1 MiB declared: refused before it is read  # fmt: skip
        assert r.status_code == 413 and "larger than" in r.json()["error"]

        def chunks():  # no Content-Length: refused once the limit has arrived
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
            for _ in range(64):
                yield b"x" * 16384

        r = c.post("/api/search/image", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_bad_requests_get_json_errors(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/api/search", params={"q": "  "})
        assert r.status_code == 400 and "empty query" in r.json()["error"]
        r = c.get("/api/search", params={"q": "x", "k": 0})
        assert r.status_code == 422 and r.json()["error"].startswith("bad request")
        r = c.get("/api/search", params={"q": "x", "k": "many"})
        assert r.status_code == 422


def test_concurrent_load(server, image_folder):
    """120 requests (text, image, thumbnail) from 12 threads: every one answered 200 within 90 s."""
    data = (image_folder / "img0.png").read_bytes()

    def one(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            if i % 3 == 0:
                return c.get("/api/search", params={"q": f"picture number {i}", "k": 5}).status_code
            if i % 3 == 1:
                return c.post("/api/search/image", files={"file": ("q.png", data, "image/png")}).status_code
            return c.get(f"/api/thumb/{1 + i % 6}").status_code

    start = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(120)))
    assert codes == [200] * 120 and time.monotonic() - start < 90
