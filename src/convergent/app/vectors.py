"""The FAISS part of an index: inner product on unit vectors (= cosine similarity).

``flat`` (exact, the default below :data:`IVF_FROM` vectors), ``ivf`` (inverted lists over
k-means cells, full vectors; ``nprobe`` cells searched) and ``ivfpq`` (the same with vectors
compressed by product quantisation, from :data:`PQ_FROM` vectors). ``auto`` picks by size."""

import math

import faiss
import numpy as np

from convergent.app.errors import AppError

KINDS = ("auto", "flat", "ivf", "ivfpq")
IVF_FROM = 100_000
"""From this many vectors ``auto`` builds an IVF index (exact search costs ~D·N per query)."""
PQ_FROM = 2_000_000
"""From this many vectors ``auto`` compresses them (IVF-PQ): 4 bytes per dimension is too much."""
NPROBE = 32
"""IVF cells searched per query."""


def choose_kind(n: int, kind: str = "auto") -> str:
    """The kind of index for ``n`` vectors (``kind`` unless it is ``auto``)."""
    if kind not in KINDS:
        raise AppError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n < IVF_FROM else "ivf" if n < PQ_FROM else "ivfpq"


def factory_string(n: int, dim: int, kind: str) -> str:
    """The ``faiss.index_factory`` string of ``kind`` for ``n`` vectors of width ``dim``."""
    if kind == "flat":
        return "IDMap2,Flat"
    cells = max(1, min(int(4 * math.sqrt(n)), n // 39))  # ~4·sqrt(N) cells, ≥ 39 training points each
    if kind == "ivf":
        return f"IVF{cells},Flat"
    sub = next(m for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if dim % m == 0 and m <= dim)
    return f"IVF{cells},PQ{sub}x8"


def build(vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", seed: int = 0) -> faiss.Index:
    """A FAISS index over unit ``vectors`` ``(N, D)`` float32 with int64 ``ids``."""
    n, dim = vectors.shape
    kind = choose_kind(n, kind)
    if kind == "ivfpq" and n < 256 * 39:
        kind = "ivf"  # 8-bit PQ codebooks need ~10k training vectors
    index = faiss.index_factory(dim, factory_string(n, dim, kind), faiss.METRIC_INNER_PRODUCT)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "ivfpq":
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.do_polysemous_training = False  # Hamming pre-filtering is not used here; its training is slow
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, size=min(n, 256 * 1024), replace=False)] if n > 256 * 1024 else vectors
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = NPROBE
    index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def describe(index: faiss.Index) -> str:
    """``flat`` or ``IVF<cells>`` (+ ``,PQ``) of a built index."""
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return "flat"
    return f"IVF{ivf.nlist}" + (f",PQ{ivf.pq.M}" if isinstance(ivf, faiss.IndexIVFPQ) else ",Flat")


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` ``(Q, k')`` of the best ``k' = min(k, ntotal)`` vectors per query."""
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ids


def write(index: faiss.Index, path: str) -> None:
    faiss.write_index(index, path)


def read(path: str) -> faiss.Index:
    index = faiss.read_index(path)
    try:
        faiss.extract_index_ivf(index).nprobe = NPROBE
    except RuntimeError:
        pass  # a flat index
    return index


def nbytes(index: faiss.Index) -> int:
    """Bytes the index takes serialised (≈ in memory)."""
    return int(faiss.serialize_index(index).nbytes)
