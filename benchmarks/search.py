"""Image search, measured: indexing throughput, query latency at 10k and 1M vectors, index
memory, and text→image retrieval of held-out emoji by name with a CLIP trained on the others.

    python benchmarks/search.py --run runs/clip                      # everything (README numbers)
    python benchmarks/search.py --run runs/clip --sizes 10000        # skip the 1M case
    python benchmarks/search.py --sizes 10000 1000000                # vectors only (no run needed)

* **Indexing throughput**: ``convergent index`` (the library call behind it) over every emoji
  image of the npm package (3,786 64-px PNGs), batch 64, with the PyTorch run and with its ONNX
  export (onnxruntime): images/s over the whole run (scan, checksum, decode, embed, write) and
  for the embedding alone; then the same command again with nothing changed (the incremental
  path: stat only).
* **Quality**: the base emoji of the held-out ``test`` split (never trained on) are indexed;
  each one's name ("red heart") is a query; R@K = share of names whose own image is among the
  top K. Chance = K / N.
* **Latency**: single queries (k = 10) against a FAISS index of N synthetic unit vectors of the
  model's width (clustered, 2,000 centres plus noise, so IVF has structure to use), p50 / p99
  over ``--queries`` queries; exact (flat), the IVF index ``auto`` builds from 100k vectors and,
  from 1M, IVF-PQ (what ``auto`` builds from 2M), with their recall@10 against exact; memory = the serialised index (what it holds in RAM).
  Plus text queries end to end on the held-out index (tokenise, text tower, search, paths).
  Queries run on ``--threads`` threads (default 1: on a shared machine, threads waiting for a
  core cost a scheduler slice per operation); indexing is measured on all cores and on one.
Results go to ``benchmarks/results/search.json`` and a Markdown table on stdout.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import faiss
import numpy as np

from convergent.app import vectors
from convergent.app.export import export_onnx
from convergent.app.indexer import update_index
from convergent.app.load import load_embedder
from convergent.app.searcher import Searcher
from convergent.app.store import Index
from convergent.data.builtin import emoji

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def heldout_folder(work: Path) -> tuple[Path, dict[str, str]]:
    """The base emoji of the test split as ``work/heldout/<name>.png``; file name → name."""
    directory, _, bundled = emoji.locate()
    if bundled:
        sys.exit("the emoji npm package is not in the cache: python -m convergent.data.builtin.emoji fetch")
    entries = emoji.parse_entries(emoji.read_entries(directory / "emoji.json"), Counter(), [], "test")
    folder, names = work / "heldout", {}
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e.unified == e.base and (directory / emoji.IMAGE_DIR / e.image).is_file():
            file = re.sub(r"[^a-z0-9]+", "-", e.captions[0]).strip("-") + ".png"  # "flag: japan" -> flag-japan.png
            file = file if file not in names else f"{e.unified}.png"
            shutil.copy(directory / emoji.IMAGE_DIR / e.image, folder / file)
            names[file] = e.captions[0]
    return folder, names


def indexing(model: str, images: Path, out: Path, threads: int | None = None) -> dict:
    start = time.perf_counter()
    report = update_index(out, load_embedder(model, threads), images, batch_size=64, progress=False)
    total = time.perf_counter() - start
    start = time.perf_counter()
    again = update_index(out, load_embedder(model, threads), images, batch_size=64, progress=False)
    return {"threads": threads or os.cpu_count(), "images": report.embedded, "images_per_s": round(report.embedded / total, 1),
            "embed_images_per_s": round(report.images_per_s, 1), "seconds": round(total, 2),
            "unchanged_rerun_s": round(time.perf_counter() - start, 2), "rerun_unchanged": again.unchanged,
            "faiss_bytes": (out / Index(out).manifest["vectors"]).stat().st_size,
            "sqlite_bytes": (out / Index(out).manifest["db"]).stat().st_size}  # fmt: skip


def quality(model: str, folder: Path, names: dict[str, str], out: Path, queries: int, threads: int) -> dict:
    update_index(out, load_embedder(model, threads), folder, progress=False)
    searcher = Searcher(Index(out), load_embedder(model, threads))
    n, ranks, times = len(names), [], []
    for file, name in names.items():
        hits = searcher.text(name, k=n)
        ranks.append([Path(h["path"]).name for h in hits].index(file) + 1)
    for name in list(names.values())[:queries]:
        start = time.perf_counter()
        searcher.text(name, k=10)
        times.append(time.perf_counter() - start)
    firsts = [name for name, rank in zip(names.values(), ranks) if rank == 1]
    ranks = np.asarray(ranks)
    return {"ranked_first": firsts, "images": n, **{f"R@{k}": round(100 * float((ranks <= k).mean()), 2) for k in (1, 5, 10)},
            **{f"chance_R@{k}": round(100 * k / n, 2) for k in (1, 5, 10)},
            "median_rank": float(np.median(ranks)), "text_query": percentiles(times)}  # fmt: skip


def synthetic(n: int, dim: int, seed: int = 0, centres: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim), dtype=np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency(n: int, dim: int, queries: int) -> dict:
    data = synthetic(n + queries, dim)
    base, qs = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)
    found = {}
    exact = None
    kinds = ["flat"] + (["ivf", "ivfpq"] if n >= 1_000_000 else [vectors.choose_kind(n)] * (n >= vectors.IVF_FROM))
    for kind in kinds:
        start = time.perf_counter()
        index = vectors.build(base, ids, kind)
        built = time.perf_counter() - start
        times, top = [], []
        for q in qs:
            t = time.perf_counter()
            _, got = vectors.search(index, q[None], 10)
            times.append(time.perf_counter() - t)
            top.append(got[0])
        row = {"index": vectors.describe(index), "build_s": round(built, 2), "memory_mb": round(vectors.nbytes(index) / 2**20, 1),
               **percentiles(times)}  # fmt: skip
        if exact is None:
            exact = top
        else:
            row["recall@10_vs_exact"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, exact)])), 3)
        found[kind] = row
        del index
    return found


def screenshot(index: Path, query: str, path: Path, threads: int) -> None:
    """``convergent serve`` on ``index``, ``query`` typed into the page in headless Chromium (the
    system browser, driven by Playwright), the page saved as a PNG at ``path``."""
    import socket
    import subprocess

    import httpx
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "convergent", "serve", str(index), "--port", str(port), "--threads", str(threads)]
    server = subprocess.Popen(cmd)
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        with sync_playwright() as p:
            chromium = os.environ.get("CONVERGENT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
            browser = p.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(f"http://127.0.0.1:{port}")
            page.fill("#q", query)
            page.press("#q", "Enter")
            expect(page.locator("#status")).to_contain_text("results for")
            page.wait_for_function("[...document.images].every(i => i.complete)")
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="A CLIP / SigLIP run trained on the emoji training split (quality, throughput).")
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 1_000_000], help="Vector counts for latency.")
    p.add_argument("--dim", type=int, default=None, help="Vector width (default: the run's, else 128).")
    p.add_argument("--queries", type=int, default=200, help="Queries timed per case.")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per query (model and FAISS).")
    p.add_argument("--screenshot", default=None, help="Save the search page (held-out index) as this PNG.")
    p.add_argument("--query", default=None,
                   help="The query typed for --screenshot (default: the first held-out name ranked first).")
    p.add_argument("--work", default=None, help="Scratch directory (default: a temporary one).")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="convergent-search-"))
    results = {"command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()[0]}  # fmt: skip
    dim = args.dim or 128
    if args.run:
        model = load_embedder(args.run)
        dim = args.dim or model.info.dim
        onnx_dir = work / "onnx"
        results["export"] = export_onnx(args.run, onnx_dir)["checked"]
        directory, _, _ = emoji.locate()
        every = directory / emoji.IMAGE_DIR
        results["indexing_torch"] = indexing(args.run, every, work / "all-torch.index")
        results["indexing_onnx"] = indexing(str(onnx_dir), every, work / "all-onnx.index")
        results["indexing_torch_1_thread"] = indexing(args.run, every, work / "all-torch-1.index", threads=1)
        results["indexing_onnx_1_thread"] = indexing(str(onnx_dir), every, work / "all-onnx-1.index", threads=1)
        folder, names = heldout_folder(work)
        results["quality"] = quality(args.run, folder, names, work / "heldout.index", args.queries, args.threads)
        results["quality_onnx_text_query"] = quality(str(onnx_dir), folder, names, work / "heldout-onnx.index",
                                                     args.queries, args.threads)["text_query"]  # fmt: skip
        if args.screenshot:
            query = args.query or (results["quality"]["ranked_first"] or list(names.values()))[0]
            results["screenshot_query"] = query
            screenshot(work / "heldout.index", query, Path(args.screenshot), args.threads)
    results["dim"] = dim
    faiss.omp_set_num_threads(args.threads)
    results["latency"] = {str(n): latency(n, dim, args.queries) for n in args.sizes}
    results["load_average_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
