"""The FAISS part: the kind chosen by size, and each kind finding a vector's own id."""

import faiss
import numpy as np
import pytest

from convergent.app import vectors
from convergent.app.errors import AppError


def test_kind_by_size():
    assert [vectors.choose_kind(n) for n in (10, 99_999, 100_000, 1_999_999, 2_000_000)] == [
        "flat", "flat", "ivf", "ivf", "ivfpq"]  # fmt: skip
    assert vectors.choose_kind(10, "ivf") == "ivf"
    with pytest.raises(AppError, match="expected one of auto, flat, ivf, ivfpq"):
        vectors.choose_kind(10, "hnsw")


@pytest.fixture
def one_thread():
    """FAISS on one thread: k-means on cores busy with other work is several times slower on two."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("kind, want", [("flat", "flat"), ("ivf", "IVF"), ("ivfpq", ",PQ8")])
def test_each_kind_finds_the_vector_itself(kind, want, tmp_path, one_thread):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10_000, 8)).astype(np.float32)  # enough to train 8-bit PQ codebooks
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(100, 100 + len(x), dtype=np.int64)  # ids are the caller's, not positions
    index = vectors.build(x, ids, kind)
    assert want in vectors.describe(index) and index.ntotal == len(x)
    vectors.write(index, str(tmp_path / "v.faiss"))
    index = vectors.read(str(tmp_path / "v.faiss"))
    scores, found = vectors.search(index, x[:50], 5)
    assert scores.shape == (50, 5) and np.mean(found[:, 0] == ids[:50]) >= (1.0 if kind != "ivfpq" else 0.5)
    assert vectors.nbytes(index) > 0
    assert vectors.search(index, x[:2], 50_000)[1].shape == (2, len(x))  # k above the count: all of them
