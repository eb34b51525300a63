"""WordNet 3.0 glosses (Princeton University, WordNet 3.0 license): English definitions labelled
with their part of speech, classes ``noun, verb, adjective, adverb`` (adjective satellites ``s``
are adjectives). 117,659 synsets.

Two registered views of the same synsets and splits:

* ``wordnet-glosses``: the whole gloss, definition plus its ``; "example sentence"`` parts
  (the most text: the language-model pre-training corpus);
* ``wordnet-definitions``: the definition only. This is the part-of-speech classification
  benchmark (DATA.md): examples use the word in its syntactic role ("able to swim"), which
  would make the task easier than classifying what the definition says.

Files are looked for, in order, in ``root`` (a directory holding ``data.{noun,verb,adj,adv}``,
gzip or not), in :data:`SYSTEM_DIR` (Debian package ``wordnet-base``), and else in the subset
bundled with this package (:data:`BUNDLED_DIR`, built by :func:`write_subset`). Lines starting
with two spaces are the licence header; a data line is ``offset lex_filenum ss_type w_cnt
words... | gloss``. Malformed lines are skipped, counted and named in ``skips``.

**Splits** (``train`` / ``val`` / ``test``, :data:`FRACTIONS` 0.9 / 0.05 / 0.05) are fixed by
a stable hash, BLAKE2b (32 bits) of ``"<pos>:<offset>"`` (``pos`` is the file: n, v, a, r), never by
Python's ``hash``. Synsets whose normalised definitions (case-folded, whitespace collapsed) are
identical form a group, and the whole group goes to the split of its smallest hash: identical
glosses have identical definitions, so neither view ever shows an evaluation text (gloss or
definition) in ``train``. Within a split, a text that occurs more than once is kept once
(the first in file order: noun, verb, adj, adv): every text occurs once in the whole dataset.
"""

import functools
import gzip
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from convergent.data.skips import SkipLog, reason_of
from convergent.data.splits import evenly_spaced, hash_split, stable_hash
from convergent.data.text import TextList

CLASSES = ["noun", "verb", "adjective", "adverb"]
FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
"""File pos letter -> file name; the label is the file's index in this order (= CLASSES)."""
SS_TYPES = {"n": "n", "v": "v", "a": "as", "r": "r"}
"""File pos letter -> the synset types its lines may have (``s``: adjective satellite)."""
SYSTEM_DIR = Path("/usr/share/wordnet")
BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / "wordnet"
FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}
_EXAMPLES = re.compile(r';\s*"')  # where the example sentences of a gloss begin


class Synset(NamedTuple):
    key: str
    """``"<pos>:<offset>"``, e.g. ``"n:00001740"``: unique, and what the split is hashed from."""
    label: int
    """Index into :data:`CLASSES`."""
    gloss: str
    head: str
    """The line before ``" | "`` (offset, lexicographer file, type, words, pointers)."""


def definition(gloss: str) -> str:
    """The gloss without its ``; "example"`` parts."""
    return _EXAMPLES.split(gloss, maxsplit=1)[0].strip().rstrip(";").strip()


def normalise(text: str) -> str:
    """Case-folded, whitespace collapsed: the key for finding duplicate texts."""
    return " ".join(text.casefold().split())


def data_file(directory: Path, pos: str) -> Path | None:
    """``directory/data.<pos>`` (``.gz`` or plain), None if absent."""
    name = FILES[pos]
    return next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)


def locate(root: str | Path | None) -> tuple[dict[str, Path], str]:
    """``({pos: file}, where)``: the four data files and which place they came from."""
    wanted = "data.{noun,verb,adj,adv}[.gz]"
    candidates = [(Path(root).expanduser(), f"root {root}")] if root is not None else [
        (SYSTEM_DIR, f"Debian package files {SYSTEM_DIR}"),
        (BUNDLED_DIR, f"bundled subset {BUNDLED_DIR} (install wordnet-base or pass --data.root for all)"),
    ]  # fmt: skip
    for directory, where in candidates:
        files = {pos: data_file(directory, pos) for pos in FILES}
        if all(files.values()):
            return files, where
        if root is not None:
            missing = [FILES[p] for p, f in files.items() if f is None]
            raise FileNotFoundError(f"wordnet: {root} does not hold {wanted} (missing {', '.join(missing)})")
    raise FileNotFoundError(f"wordnet: bundled subset missing from {BUNDLED_DIR}")  # a broken install


def parse_data_file(path: Path, pos: str, skipped: list[tuple[str, str]]) -> Iterator[Synset]:
    """The synsets of one ``data.*`` file (``pos``: its letter); malformed lines go to ``skipped``."""
    opener = gzip.open if path.suffix == ".gz" else open
    label = list(FILES).index(pos)
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                skipped.append((f"{path}:{lineno}", "not UTF-8"))
                continue
            if line.startswith("  ") or not line.strip():
                continue  # licence header
            head, bar, gloss = line.partition(" | ")
            fields = head.split(maxsplit=4)  # offset lex_filenum ss_type w_cnt rest
            if not bar or len(fields) < 4 or not fields[0].isdigit() or fields[2] not in SS_TYPES[pos]:
                skipped.append((f"{path}:{lineno}", "not a synset line (offset lex_filenum ss_type ... | gloss)"))
                continue
            gloss = gloss.strip()
            if not gloss:
                skipped.append((f"{path}:{lineno}", "empty gloss"))
                continue
            yield Synset(f"{pos}:{fields[0]}", label, gloss, head)


def read_synsets(files: dict[str, Path]) -> tuple[list[Synset], list[tuple[str, str]]]:
    """All synsets of the four files in file order, and the skipped lines."""
    skipped: list[tuple[str, str]] = []
    synsets = [s for pos, path in files.items() for s in parse_data_file(path, pos, skipped)]
    return synsets, skipped


def assign_splits(synsets: list[Synset]) -> list[str]:
    """The split of each synset: that of the smallest hash among synsets sharing its
    normalised definition (see the module docstring)."""
    hashes = [stable_hash(s.key) for s in synsets]
    group_min: dict[str, int] = defaultdict(lambda: 2**32)
    keys = [normalise(definition(s.gloss)) for s in synsets]
    for k, h in zip(keys, hashes):
        group_min[k] = min(group_min[k], h)
    return [hash_split(group_min[k], FRACTIONS) for k in keys]


@functools.lru_cache(maxsize=2)
def _read_and_split(files: tuple[tuple[str, Path], ...], _stamp) -> tuple[list[Synset], list, list[str]]:
    """``(synsets, skipped, splits)`` of ``files``, cached by the files' sizes and times (``_stamp``),
    so building several splits parses once."""
    synsets, skipped = read_synsets(dict(files))
    return synsets, skipped, assign_splits(synsets)


def split_items(synsets: list[Synset], splits: list[str], split: str, view: str) -> tuple[list[str], list[int]]:
    """``(texts, labels)`` of ``split`` (``splits``: each synset's, from :func:`assign_splits`);
    ``view`` ``"gloss"`` or ``"definition"``; each normalised text once (the first in file order)."""
    texts, labels, seen = [], [], set()
    for s, where in zip(synsets, splits):
        if where != split:
            continue
        text = s.gloss if view == "gloss" else definition(s.gloss)
        key = normalise(text)
        if key and key not in seen:
            seen.add(key)
            texts.append(text)
            labels.append(s.label)
    return texts, labels


def load(split: str, root=None, view: str = "gloss", limit: int | None = None) -> TextList:
    """Split ``split`` of WordNet with texts of ``view`` (``"gloss"`` or ``"definition"``)."""
    if split not in FRACTIONS:
        raise ValueError(f"wordnet: unknown split {split!r}; expected one of {list(FRACTIONS)}")
    if view not in ("gloss", "definition"):
        raise ValueError(f"wordnet: view must be 'gloss' or 'definition', got {view!r}")
    files, where = locate(root)
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())
    synsets, skipped, splits = _read_and_split(tuple(files.items()), stamp)
    if not synsets:
        raise ValueError(f"wordnet: no synset lines in {', '.join(map(str, files.values()))}")
    texts, labels = split_items(synsets, splits, split, view)
    if limit is not None and limit < len(texts):  # evenly spaced: files are by class, so shares are kept
        keep = evenly_spaced(len(texts), limit)
        texts, labels = [texts[k] for k in keep], [labels[k] for k in keep]
    name = "wordnet-glosses" if view == "gloss" else "wordnet-definitions"
    skips = SkipLog()
    for line, detail in skipped:
        skips.add(line, reason_of(detail), detail)
    return TextList(texts, labels, CLASSES, f"{name} {split}: {len(texts)} texts from {where}", skips)


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = None, verify: bool = False) -> TextList:  # fmt: skip
    """``wordnet-glosses``: whole glosses (the image arguments are ignored)."""
    return load(split, root, "gloss", limit)


def build_definitions(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
                      max_image_pixels: int | None = None, verify: bool = False) -> TextList:  # fmt: skip
    """``wordnet-definitions``: definitions without examples (the image arguments are ignored)."""
    return load(split, root, "definition", limit)


def write_subset(src: str | Path, dst: str | Path, per_class: int = 2500) -> dict[str, int]:
    """Write ``per_class`` synsets of each part of speech from the files in ``src`` to ``dst`` as
    ``data.*.gz``: those with the smallest :func:`stable_hash` of ``"subset:<pos>:<offset>"`` (a hash apart
    from the split hash, so the subset keeps the split fractions), in file order, pointers
    dropped (``p_cnt`` 000; the words and gloss kept). Returns synsets written per file.

    The bundled subset was made with ``write_subset("/usr/share/wordnet", BUNDLED_DIR)``.
    """
    files, _ = locate(src)
    synsets, _ = read_synsets(files)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    written = {}
    for pos, name in FILES.items():
        mine = [s for s in synsets if s.key.startswith(pos + ":")]
        chosen = set(sorted(range(len(mine)), key=lambda i: stable_hash("subset:" + mine[i].key))[:per_class])
        lines = [_minimal_line(s) for i, s in enumerate(mine) if i in chosen]
        with gzip.GzipFile(dst / f"{name}.gz", "wb", mtime=0) as f:  # mtime 0: byte-identical rebuilds
            f.write("".join(lines).encode("utf-8"))
        written[name] = len(lines)
    return written


def _minimal_line(s: Synset) -> str:
    """``offset lex_filenum ss_type w_cnt words... 000 | gloss`` (a valid data line, no pointers)."""
    fields = s.head.split()
    w_cnt = int(fields[3], 16)
    return " ".join([*fields[: 4 + 2 * w_cnt], "000", "|", s.gloss]) + "  \n"
