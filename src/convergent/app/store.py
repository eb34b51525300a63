"""An index directory: ``index.json`` names the current generation's files.

    INDEX/index.json             {"format", "generation", "model", "root", "count", "kind", "db", "vectors"}
    INDEX/files-000003.sqlite    one row per image: path, size, mtime_ns, sha256, vector (float32 bytes)
    INDEX/vectors-000003.faiss   the FAISS index over those vectors, ids = the rows' ids

A :class:`Writer` copies the current SQLite file to the next generation, changes that copy,
builds its FAISS file, and only then replaces ``index.json`` (written to a temporary file,
fsynced, renamed): a killed run leaves the previous generation named and whole, and its
leftovers are removed by the next writer. Readers (:class:`Index`) open the files the manifest
names, so a server keeps answering from its generation while a new one is written. One writer
at a time (a lock on ``INDEX/.lock``).
"""

import fcntl
import json
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from convergent.app import vectors
from convergent.app.errors import AppError

MANIFEST = "index.json"
FORMAT = "convergent-image-index"
LOCK = ".lock"
SCHEMA = (
    "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, vector BLOB NOT NULL)"
)


def read_manifest(directory: str | Path) -> dict:
    """The manifest of index ``directory``; :class:`AppError` when it is not an index."""
    file = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise AppError(f"{directory}: no such index directory (make one with `convergent index`)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        return manifest
    except (OSError, ValueError, AttributeError) as e:
        detail = "no index.json" if not file.exists() else f"unreadable index.json: {e}"
        raise AppError(f"{directory}: not an image index ({detail}; make one with `convergent index`)") from e


class Index:
    """One generation of an index, read-only and safe to share between threads."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser().resolve()
        self.manifest = read_manifest(self.directory)
        db = self.directory / self.manifest["db"]
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self.vectors = vectors.read(str(self.directory / self.manifest["vectors"]))

    @property
    def model(self) -> dict:
        """The :class:`~convergent.app.model.ModelInfo` (as a dict) the index was made with."""
        return self.manifest["model"]

    @property
    def root(self) -> str:
        return self.manifest["root"]

    def __len__(self) -> int:
        return int(self.vectors.ntotal)

    def search(self, queries: np.ndarray, k: int) -> list[list[dict]]:
        """Per query row, the ``k`` best images: ``{"id", "path", "score"}``, best first."""
        scores, ids = vectors.search(self.vectors, queries, k)
        paths = self.paths([int(i) for i in ids.ravel() if i >= 0])
        return [[{"id": int(i), "path": paths[int(i)], "score": float(s)} for s, i in zip(row_s, row_i)
                 if i >= 0 and int(i) in paths] for row_s, row_i in zip(scores, ids)]  # fmt: skip

    def paths(self, ids: list[int]) -> dict[int, str]:
        """``id -> path`` of those ``ids`` that are indexed."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(f"SELECT id, path FROM files WHERE id IN ({marks})", ids).fetchall()
        return dict(rows)

    def close(self) -> None:
        self._db.close()


class Writer:
    """The next generation of index ``directory`` (created when missing), made with ``model``
    (a ModelInfo dict) from the images under ``root``. Use as a context manager; nothing is
    visible to readers until :meth:`commit`."""

    def __init__(self, directory: str | Path, model: dict, root: str):
        self.directory = Path(directory).expanduser().resolve()
        if self.directory.exists() and not self.directory.is_dir():
            raise AppError(f"{directory}: exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._previous()  # refused before anything is written into a directory that is not an index
        self._lock_file = open(self.directory / LOCK, "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._lock_file.close()
            raise AppError(f"{directory}: another `convergent index` is writing this index") from e
        self.previous = self._previous()  # again, under the lock
        self.model, self.root = model, root
        self.generation = (self.previous or {}).get("generation", 0) + 1
        self._remove_strays()
        self.db_name, self.vectors_name = f"files-{self.generation:06d}.sqlite", f"vectors-{self.generation:06d}.faiss"
        self.db = sqlite3.connect(self.directory / self.db_name)
        if self.previous:
            with sqlite3.connect(f"file:{self.directory / self.previous['db']}?mode=ro", uri=True) as old:
                old.backup(self.db)
        else:
            self.db.execute(SCHEMA)

    def _previous(self) -> dict | None:
        if (self.directory / MANIFEST).exists():
            return read_manifest(self.directory)
        if any(p.name != LOCK for p in self.directory.iterdir()):
            raise AppError(f"{self.directory}: not an image index (no index.json) and not empty; give a new or empty "
                           "directory as --out")  # fmt: skip
        return None

    def _remove_strays(self) -> None:
        """Files of generations no manifest names (a killed run's, or the one before the last)."""
        keep = {MANIFEST, LOCK, *((self.previous["db"], self.previous["vectors"]) if self.previous else ())}
        for p in self.directory.iterdir():
            if p.name not in keep and (p.name.startswith(("files-", "vectors-")) or p.name.endswith(".tmp")):
                p.unlink(missing_ok=True)

    # --- rows ---------------------------------------------------------------------------------
    def rows(self) -> dict[str, tuple[int, int, int, str]]:
        """``path -> (id, size, mtime_ns, sha256)`` of every indexed file."""
        cur = self.db.execute("SELECT path, id, size, mtime_ns, sha256 FROM files")
        return {path: rest for path, *rest in cur}

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def put(self, path: str, size: int, mtime_ns: int, sha256: str, vector: np.ndarray) -> None:
        """Add ``path`` or replace its row (a new id, so a stale FAISS id never names it)."""
        self.db.execute("DELETE FROM files WHERE path = ?", (path,))
        self.db.execute("INSERT INTO files (path, size, mtime_ns, sha256, vector) VALUES (?, ?, ?, ?, ?)",
                        (path, size, mtime_ns, sha256, np.asarray(vector, np.float32).tobytes()))  # fmt: skip

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """New size/mtime of a file whose content (checksum) did not change."""
        self.db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def delete(self, paths) -> None:
        self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    # --- commit -------------------------------------------------------------------------------
    def commit(self, kind: str = "auto") -> dict:
        """Build the FAISS file, then make this generation the index's; returns the manifest."""
        self.db.commit()
        ids, vecs = self._all_vectors()
        if len(ids) == 0:
            raise AppError(f"{self.root}: no readable image to index")
        index = vectors.build(vecs, ids, kind)
        tmp = self.directory / (self.vectors_name + ".tmp")
        vectors.write(index, str(tmp))
        _fsync(tmp)
        os.replace(tmp, self.directory / self.vectors_name)
        manifest = {"format": FORMAT, "generation": self.generation, "model": self.model, "root": self.root,
                    "count": int(len(ids)), "kind": vectors.describe(index), "db": self.db_name,
                    "vectors": self.vectors_name}  # fmt: skip
        self.db.close()
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, self.directory / MANIFEST)
        _fsync(self.directory)
        if self.previous:
            for name in (self.previous["db"], self.previous["vectors"]):
                (self.directory / name).unlink(missing_ok=True)  # readers that opened them keep them
        return manifest

    def abandon(self) -> None:
        """Drop this generation (nothing changed): the index stays as it was."""
        self.db.close()
        (self.directory / self.db_name).unlink(missing_ok=True)

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT id, vector FROM files ORDER BY id").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.model["dim"]), np.float32)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        return ids, vecs

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.ProgrammingError:
            pass
        self._lock_file.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
