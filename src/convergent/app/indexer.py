"""``convergent index``: bring an index up to date with a folder, embedding only what changed.

A file is new (not indexed), changed (size or mtime differ and so does its SHA-256; a file
touched but not changed only gets its new mtime), unchanged, or deleted (indexed, no longer
under the folder). New and changed files are decoded (unreadable ones skipped, counted and
named), embedded in batches and written to the next generation of the index (see
:mod:`convergent.app.store`)."""

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convergent.app.errors import AppError
from convergent.app.files import FileStat, scan
from convergent.app.model import Embedder, check_same_model, file_digest, unit_rows
from convergent.app.store import MANIFEST, Writer, read_manifest
from convergent.data.images import decode_array
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.skips import failure


@dataclass
class Report:
    """What one ``convergent index`` run did."""

    index: str
    root: str
    added: int = 0
    changed: int = 0
    touched: int = 0
    """Files with a new mtime but the same content: not embedded again."""
    removed: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason → count of files that could not be read."""
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    embedded: int = 0
    embed_seconds: float = 0.0
    count: int = 0
    kind: str = ""

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


def update_index(out: str | Path, embedder: Embedder, images: str | Path | None = None, batch_size: int = 64,
                 kind: str = "auto", max_pixels: int | None = MAX_IMAGE_PIXELS, progress: bool = True) -> Report:  # fmt: skip
    """Make index ``out`` mirror the images under ``images`` (default: the folder it was made
    from) as ``embedder`` sees them; :class:`AppError` for a model other than the one that made
    the index, a folder without images, or nothing readable."""
    if batch_size < 1:
        raise AppError("--batch_size must be at least 1")
    previous = read_manifest(out) if (Path(out) / MANIFEST).exists() else None
    if previous is not None:
        check_same_model(previous["model"], embedder.info, str(out))
    if images is None:
        if previous is None:
            raise AppError(f"{out} is a new index: give the folder to index with --images")
        images = previous["root"]
    files = scan(images)
    root = str(Path(images).expanduser().resolve())
    with Writer(out, embedder.info.to_dict(), root) as writer:
        report = Report(index=str(writer.directory), root=root)
        todo = _plan(writer, files, report)
        _embed(writer, todo, embedder, batch_size, max_pixels, report, progress)
        last = writer.previous  # read under the writer's lock
        if last is not None and root == last["root"] and kind in ("auto", last["kind"]) and not (
                report.added or report.changed or report.removed or report.touched):  # fmt: skip
            writer.abandon()  # nothing to write: the index is up to date
            manifest = last
        else:
            manifest = writer.commit(kind)
    report.count, report.kind = manifest["count"], manifest["kind"]
    return report


def _plan(writer: Writer, files: list[FileStat], report: Report) -> list[tuple[FileStat, str]]:
    """``(file, sha256, is_new)`` of the files to embed; touched files updated, deleted ones dropped."""
    known = writer.rows()
    present = {f.path for f in files}
    gone = [p for p in known if p not in present]
    writer.delete(gone)
    report.removed = len(gone)
    todo = []
    for f in files:
        row = known.get(f.path)
        if row is not None and (row[1], row[2]) == (f.size, f.mtime_ns):
            report.unchanged += 1
            continue
        try:
            digest = file_digest(f.path)
        except OSError as e:
            _skip(report, f.path, "unreadable file", str(e))
            continue
        if row is not None and row[3] == digest:
            writer.touch(f.path, f.size, f.mtime_ns)
            report.touched += 1
            continue
        todo.append((f, digest, row is None))
    return todo


def _embed(writer: Writer, todo, embedder: Embedder, batch_size: int, max_pixels, report: Report, show: bool) -> None:
    info = embedder.info
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show or not todo, transient=True) as bar:
        task = bar.add_task("embed", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch, pixels = [], []
            for f, digest, new in todo[start : start + batch_size]:
                try:
                    pixels.append(decode_array(f.path, info.img_size, info.in_chans, max_pixels))
                    batch.append((f, digest, new))
                except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the file is unusable
                    _skip(report, f.path, *failure(e, "unreadable image"))
                    if not new:  # a changed file that no longer reads: not indexed as it was
                        writer.delete([f.path])
                        report.removed += 1
            if batch:
                t0 = time.perf_counter()
                vecs = unit_rows(embedder.embed_images(np.stack(pixels)))
                report.embed_seconds += time.perf_counter() - t0
                report.embedded += len(batch)
                for (f, digest, new), v in zip(batch, vecs):
                    writer.put(f.path, f.size, f.mtime_ns, digest, v)
                    report.added, report.changed = report.added + new, report.changed + (not new)
            bar.advance(task, len(todo[start : start + batch_size]))
    bad = sum(report.skipped.values())
    if bad and writer.count() == 0:
        raise AppError(f"{writer.root}: none of the image files could be read "
                       f"({', '.join(f'{n} {r}' for r, n in report.skipped.items())})")  # fmt: skip


def _skip(report: Report, path: str, reason: str, detail: str | None = None) -> None:
    counts = Counter(report.skipped)
    counts[reason] += 1
    report.skipped = dict(counts)
    if len(report.skipped_files) < 1000:
        report.skipped_files.append((path, detail or reason))
