"""WordNet glosses: parsing hand-written ``data.*`` files (header, satellites, malformed lines),
the stable hash split, deduplication across and within splits, the bundled subset, and (slow)
the real Debian files."""

import collections

import pytest

from convergent.data import registry
from convergent.data.builtin import wordnet
from convergent.data.builtin.wordnet import BUNDLED_DIR, CLASSES, SYSTEM_DIR, definition, load, normalise

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2 \n"


def line(offset: int, ss_type: str, word: str, gloss: str) -> str:
    return f"{offset:08d} 03 {ss_type} 01 {word} 0 001 @ 00001740 n 0000 | {gloss}  \n"


@pytest.fixture()
def tiny(tmp_path):
    """A noun and verb file with 60 synsets each, adjectives (a and s), adverbs; 40 nouns share one
    definition (with different examples) and 30 verbs one whole gloss; one malformed line."""
    nouns = [line(1000 + i, "n", f"thing{i}", f"a kind of thing number {i}") for i in range(60)]
    nouns += [line(5000 + i, "n", f"aster{i}", f'a variety of aster; "example {i}"') for i in range(40)]
    verbs = [line(2000 + i, "v", f"go{i}", f'move in direction {i}; "go {i} now"') for i in range(60)]
    verbs += [line(6000 + i, "v", f"ext{i}", "extremely") for i in range(30)]
    adjs = [line(3000, "a", "able", '(usually followed by `to\') having the means; "able to swim"'),
            line(3001, "s", "handy", "easy to use")]  # fmt: skip
    advs = [line(4000, "r", "quickly", "with speed"), "garbage line without a bar\n"]
    for name, lines in (("noun", nouns), ("verb", verbs), ("adj", adjs), ("adv", advs)):
        (tmp_path / f"data.{name}").write_text(HEADER + "".join(lines))
    return tmp_path


def all_splits(root, view="gloss"):
    return {s: load(s, root, view) for s in ("train", "val", "test")}


def test_definition_and_normalise():
    assert definition('having the means; "able to swim"; "able to program"') == "having the means"
    assert definition("a; b (not an example)") == "a; b (not an example)"
    assert normalise("  A  Dog\tSat ") == "a dog sat"


def test_parse_tiny_files(tiny):
    synsets, skipped = wordnet.read_synsets(wordnet.locate(tiny)[0])
    assert len(synsets) == 60 + 40 + 60 + 30 + 2 + 1
    labels = collections.Counter(s.label for s in synsets)
    assert labels == {0: 100, 1: 90, 2: 2, 3: 1}  # the satellite "s" is an adjective
    assert synsets[0].key == "n:00001000" and synsets[0].gloss == "a kind of thing number 0"
    assert skipped == [(f"{tiny / 'data.adv'}:4", "not a synset line (offset lex_filenum ss_type ... | gloss)")]


def test_splits_deterministic_and_deduplicated(tiny):
    splits = all_splits(tiny)
    again = all_splits(tiny)
    for s in splits:
        assert [splits[s][i] for i in range(len(splits[s]))] == [again[s][i] for i in range(len(again[s]))]
    assert sum(len(d) for d in splits.values()) == 60 + 40 + 60 + 1 + 2 + 1  # the 30 identical glosses: once
    assert all(len(d) for d in splits.values())
    texts = {s: {normalise(d[i]["text"]) for i in range(len(d))} for s, d in splits.items()}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    asters = {s for s, d in splits.items() for i in range(len(d)) if "aster" in d[i]["text"]}
    assert len(asters) == 1  # one definition group: one split, though its glosses differ
    assert wordnet.stable_hash("n:00001740") == 949458728  # pinned: splits never move between versions
    ds = splits["train"]
    assert ds.classes == CLASSES and "from root" in ds.source and len(ds.skipped) == 1


def test_definition_view(tiny):
    splits = all_splits(tiny, "definition")
    texts = [d[i]["text"] for d in splits.values() for i in range(len(d))]
    assert "a variety of aster" in texts and texts.count("a variety of aster") == 1
    assert not any('"' in t for t in texts)
    assert "(usually followed by `to') having the means" in texts


def test_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        load("dev", tiny)
    (tiny / "data.adv").unlink()
    with pytest.raises(FileNotFoundError, match="missing data.adv"):
        load("train", tiny)


def test_bundled_subset(monkeypatch):
    monkeypatch.setattr(wordnet, "SYSTEM_DIR", BUNDLED_DIR / "not-there")
    splits = {s: registry.build_dataset("wordnet-glosses", s) for s in ("train", "val", "test")}
    assert "bundled subset" in splits["train"].source
    assert 9000 < sum(len(d) for d in splits.values()) <= 10000
    counts = collections.Counter(splits["train"].labels.tolist())
    assert sorted(counts) == [0, 1, 2, 3] and min(counts.values()) > 2000
    assert 300 < len(splits["test"]) < 700
    gloss = {s: {normalise(d.text(i)) for i in range(len(d))} for s, d in splits.items()}
    assert not gloss["train"] & (gloss["val"] | gloss["test"])
    defs = registry.build_dataset("wordnet-definitions", "test", limit=20)
    assert len(defs) == 20 and set(defs.labels.tolist()) == {0, 1, 2, 3}
    train_defs = {normalise(definition(d.text(i))) for d in [splits["train"]] for i in range(len(d))}
    assert not {normalise(defs.text(i)) for i in range(len(defs))} & train_defs  # no test definition in train


@pytest.mark.slow
@pytest.mark.skipif(not (SYSTEM_DIR / "data.noun").is_file(), reason="Debian package wordnet-base not installed")
def test_real_files():
    synsets, skipped = wordnet.read_synsets(wordnet.locate(None)[0])
    assert len(synsets) == 117659 and not skipped
    splits = all_splits(None)
    assert sum(len(d) for d in splits.values()) == 117033  # unique normalised glosses
    assert 0.89 < len(splits["train"]) / 117033 < 0.91
    texts = {s: {normalise(d.text(i)) for i in range(len(d))} for s, d in splits.items()}
    assert not texts["train"] & (texts["val"] | texts["test"]) and not texts["val"] & texts["test"]
