"""Shared pieces of the image-search tests: one tiny CLIP run (2 steps on the bundled emoji),
a folder of small distinct images, an index of it, and a server on localhost."""

import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image

from tests.commands.test_pretrain_clip import train_tiny_clip


@pytest.fixture(scope="session")
def clip_run(tmp_path_factory):
    """A CLIP run (image and text towers, a saved encoder)."""
    return train_tiny_clip(tmp_path_factory)


def write_image(path, seed: int, size: int = 48) -> None:
    """A distinct picture: noise at one of a few scales over a coloured background."""
    rng = np.random.default_rng(seed)
    block = (4, 8, 16)[seed % 3]
    small = rng.integers(0, 256, (size // block, size // block, 3), dtype=np.uint8)
    img = np.kron(small, np.ones((block, block, 1), dtype=np.uint8))
    img[: size // 2] = (img[: size // 2] // 2 + rng.integers(0, 128, 3, dtype=np.uint8)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture
def image_folder(tmp_path):
    """Six images (one in a sub-folder, one JPEG) and one file that only looks like an image."""
    root = tmp_path / "photos"
    for i in range(5):
        write_image(root / f"img{i}.png", i)
    write_image(root / "sub" / "deep.jpg", 5)
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """The app of :func:`convergent.app.server.create_app` on uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
