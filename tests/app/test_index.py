"""``convergent index`` / ``search``: incremental updates (add, change, touch, delete), the model
check, bad input (one clear error each), and a killed run that leaves the last index usable."""

import json
import os
import signal
import subprocess
import sys

import pytest

from convergent.app.errors import ModelMismatch
from convergent.app.indexer import update_index
from convergent.app.load import load_embedder
from convergent.app.searcher import Searcher
from convergent.app.store import Index
from convergent.cli import main
from tests.app.conftest import write_image


def search_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["search", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_incremental_index(clip_run, image_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--json", "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["added"], first["count"], first["embedded"]) == (6, 6, 6)
    assert first["skipped"] == {"unreadable image": 1} and first["skipped_files"][0][0].endswith("broken.png")

    write_image(image_folder / "new.png", 10)  # added
    write_image(image_folder / "img1.png", 11)  # changed content
    os.utime(image_folder / "img2.png", ns=(1, 1))  # touched: new mtime, same bytes
    (image_folder / "img3.png").unlink()  # deleted
    embedder = load_embedder(clip_run)
    calls = []
    embed = embedder.embed_images
    embedder.embed_images = lambda pixels: calls.append(len(pixels)) or embed(pixels)
    report = update_index(out, embedder, progress=False)  # the folder the index records
    assert (report.added, report.changed, report.touched, report.removed, report.unchanged) == (1, 1, 1, 1, 3)
    assert sum(calls) == 2 and report.count == 6  # only the new and the changed file were embedded

    index = Index(out)
    searcher = Searcher(index, embedder)
    for name in ("new.png", "img1.png", "sub/deep.jpg"):
        hits = searcher.image(image_folder / name, k=3)
        assert hits[0]["path"] == str(image_folder / name) and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert str(image_folder / "img3.png") not in {h["path"] for h in searcher.text("a picture", k=10)}
    found = search_json(capsys, out, "--image", image_folder / "img1.png", "-k", "2")
    assert found["results"][0]["name"] == "img1.png" and len(found["results"]) == 2
    files = sorted(p.name for p in out.iterdir())
    assert files == [".lock", "files-000002.sqlite", "index.json", "vectors-000002.faiss"]  # the old generation went
    embedded = sum(calls)
    again = update_index(out, embedder, progress=False)  # nothing changed: nothing embedded or written
    assert (again.unchanged, again.count, again.embedded) == (6, 6, 0) and sum(calls) == embedded
    assert sorted(p.name for p in out.iterdir()) == files


def test_model_mismatch_is_refused(clip_run, image_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    encoder = clip_run / "encoder"  # another model: the image backbone alone, other weights file
    with pytest.raises(ModelMismatch, match="different model"):
        Searcher(Index(out), load_embedder(encoder))
    capsys.readouterr()
    assert main(["search", str(out), "--image", str(image_folder / "img0.png"), "--model", str(encoder)]) == 2
    assert "different model" in capsys.readouterr().err
    assert main(["index", str(encoder), "--out", str(out), "--quiet"]) == 2
    assert "different model" in capsys.readouterr().err
    # the encoder makes its own index: image-to-image search with any image encoder
    enc_out = tmp_path / "enc"
    assert main(["index", str(encoder), "--images", str(image_folder), "--out", str(enc_out), "--quiet"]) == 0
    found = search_json(capsys, enc_out, "--image", image_folder / "img4.png")
    assert found["results"][0]["name"] == "img4.png"
    assert main(["search", str(enc_out), "a red heart"]) == 2
    assert "image queries only" in capsys.readouterr().err


def test_bad_input_one_clear_error_each(clip_run, image_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "docs").mkdir(parents=True)
    (empty / "docs" / "a.txt").write_text("x")
    capsys.readouterr()
    assert main(["index", str(clip_run), "--images", str(empty), "--out", str(tmp_path / "i1")]) == 2
    err = capsys.readouterr().err
    assert "no images under it (1 other files" in err and err.count("\n") == 1

    not_index = tmp_path / "not_index"
    not_index.mkdir()
    (not_index / "data.bin").write_bytes(b"x")
    assert main(["search", str(not_index), "a heart"]) == 2
    err = capsys.readouterr().err
    assert "not an image index (no index.json" in err and err.count("\n") == 1
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(not_index)]) == 2
    assert "not an image index (no index.json) and not empty" in capsys.readouterr().err
    assert [p.name for p in not_index.iterdir()] == ["data.bin"]  # nothing written into it

    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(out), "   "]) == 2
    err = capsys.readouterr().err
    assert "empty query" in err and err.count("\n") == 1
    assert main(["search", str(out)]) == 2
    assert "give a text query or --image" in capsys.readouterr().err
    assert main(["search", str(out), "--image", str(image_folder / "broken.png")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["search", str(out), "x", "-k", "0"]) == 2
    assert main(["index", str(clip_run), "--out", str(tmp_path / "new")]) == 2
    assert "give the folder to index with --images" in capsys.readouterr().err


KILLED_RUN = """
import sys, time
from convergent.app import indexer
from convergent.app.load import load_embedder
embedder = load_embedder(sys.argv[1])
embed = embedder.embed_images
def slow(pixels):
    print("embedding", flush=True)
    time.sleep(0.2)
    return embed(pixels)
embedder.embed_images = slow
indexer.update_index(sys.argv[2], embedder, sys.argv[3], batch_size=2, progress=False)
print("finished", flush=True)
"""


def test_killed_index_run_leaves_the_previous_index(clip_run, image_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(clip_run), "--images", str(image_folder), "--out", str(out), "--quiet"]) == 0
    before = Index(out).manifest
    for i in range(20):
        write_image(image_folder / "more" / f"m{i}.png", 100 + i)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(clip_run), str(out), str(image_folder)],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "embedding"  # killed in the middle of embedding
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "files-000002.sqlite").exists()  # the unfinished generation is there, not named
    index = Index(out)
    assert index.manifest == before and len(index) == 6
    found = Searcher(index, load_embedder(clip_run)).image(image_folder / "img0.png", k=1)
    assert found[0]["path"].endswith("img0.png")
    capsys.readouterr()
    assert main(["index", str(clip_run), "--out", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 26
    assert sorted(p.name for p in out.iterdir()) == [".lock", "files-000002.sqlite", "index.json",
                                                     "vectors-000002.faiss"]  # fmt: skip
