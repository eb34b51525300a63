"""Tokenizers (WordPiece, byte-level BPE): train / save / load, special ids, padding and
truncation masks, decoding; packing a corpus into memmapped blocks; ``convergent tokenizer train``."""

import json
import pickle

import numpy as np
import pytest
import torch

from convergent.cli import main
from convergent.data.packing import PackedBlocks, pack_blocks
from convergent.data.tokenizer import Tokenizer, train_tokenizer

WORDS = "the a dog cat bird sat ran on under mat tree quickly slowly red small big house garden".split()


def corpus(n: int = 300) -> list[str]:
    """Deterministic short sentences over :data:`WORDS`."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def tok(request) -> Tokenizer:
    return train_tokenizer(corpus(), kind=request.param, vocab_size=300, min_frequency=2)


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    return train_tokenizer(corpus(), kind="wordpiece", vocab_size=120)


def test_special_ids(tok):
    names = {
        "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        "bpe": ["<pad>", "<unk>", "<s>", "</s>", "<mask>"],
    }
    assert [tok.backend.id_to_token(i) for i in range(5)] == names[tok.kind]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.bos_id == tok.cls_id and tok.eos_id == tok.sep_id
    assert tok.special_ids == [0, 1, 2, 3, 4]
    assert 5 < tok.vocab_size <= 300


def test_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    assert json.loads((tmp_path / "tok" / "convergent_tokenizer.json").read_text())["kind"] == tok.kind
    texts = ["the dog sat on the mat", "a small red bird"]
    for source in (tmp_path / "tok", path):
        loaded = Tokenizer.load(source)
        assert loaded.kind == tok.kind and loaded.vocab_size == tok.vocab_size
        assert loaded.special_ids == tok.special_ids
        for k, v in tok.encode_batch(texts, 16).items():
            assert torch.equal(loaded.encode_batch(texts, 16)[k], v)
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode_ids(["x [MASK] y"]) == tok.encode_ids(["x [MASK] y"])


def test_load_without_meta_recognises_roles(tok, tmp_path):
    path = tok.save(tmp_path)
    (tmp_path / "convergent_tokenizer.json").unlink()
    loaded = Tokenizer.load(path)
    assert loaded.kind == tok.kind and loaded.mask_id == 4


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        Tokenizer.load(tmp_path / "nope")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json") as info:
        Tokenizer.load(tmp_path)
    assert str(bad) in str(info.value)


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer(["a b"], kind="unigram")
    with pytest.raises(ValueError, match="vocab_size must be >= 261"):
        train_tokenizer(["a b"], kind="bpe", vocab_size=100)


def test_padding_truncation_and_masks(tok):
    texts = ["the dog", "the big red dog sat on the small mat under the tree"]
    longest = tok.encode_batch(texts, max_length=64)
    ids, att, special = longest["input_ids"], longest["attention_mask"], longest["special_tokens_mask"]
    assert ids.dtype == torch.int64 and att.dtype == torch.int64 and special.dtype == torch.bool
    n0, n1 = (len(tok.encode_ids([t])[0]) + 2 for t in texts)
    assert ids.shape == (2, n1) and att.sum(1).tolist() == [n0, n1]
    assert ids[0, n0:].eq(tok.pad_id).all() and ids[:, 0].eq(tok.cls_id).all()
    assert ids[0, n0 - 1] == tok.sep_id and ids[1, -1] == tok.sep_id
    assert torch.equal(special, torch.isin(ids, torch.tensor(tok.special_ids)))
    assert special[0].sum() == 2 + (n1 - n0)  # cls, sep and the padding

    fixed = tok.encode_batch(texts, max_length=6, padding="max_length")
    assert fixed["input_ids"].shape == (2, 6) and fixed["attention_mask"][1].all()
    assert fixed["input_ids"][1, -1] == tok.sep_id  # truncated, the final sep kept
    assert fixed["input_ids"][1, 1:5].tolist() == tok.encode_ids(texts[1:])[0][:4]
    assert tok.encode_batch(texts, max_length=200, padding="max_length")["input_ids"].shape == (2, 200)
    with pytest.raises(ValueError, match="padding"):
        tok.encode_batch(texts, 8, padding="right")


def test_special_token_spelling_in_text_is_text(tok):
    name = tok.specials["mask"]
    batch = tok.encode_batch([f"the {name} dog"], max_length=32)
    assert tok.mask_id not in batch["input_ids"][0, 1:-1].tolist()


def test_decode():
    bpe = train_tokenizer(corpus(), kind="bpe", vocab_size=300)
    text = "The Dög sat — on ünder 日本"  # byte-level: unseen characters still round-trip exactly
    ids = bpe.encode_batch([text], 64)["input_ids"][0]
    assert bpe.decode(ids) == text
    assert bpe.decode(ids, skip_special=False).startswith("<s>")


def test_wordpiece_lowercases_and_decodes(wordpiece):
    ids = wordpiece.encode_batch(["The DOG sat"], 16)["input_ids"][0]
    assert wordpiece.decode(ids) == "the dog sat"


def expected_blocks(tok: Tokenizer, docs: list[str], block_size: int) -> list[list[int]]:
    stream = [i for d in docs for i in [*tok.encode_ids([d])[0], tok.sep_id]]
    body = block_size - 1
    return [[tok.cls_id, *stream[k : k + body]] for k in range(0, len(stream) - body + 1, body)]


def test_pack_blocks_exact_and_reopened(wordpiece, tmp_path):
    docs = corpus(40)
    blocks = pack_blocks(wordpiece, iter(docs), tmp_path / "blocks.bin", block_size=16, chunk_size=3)
    want = expected_blocks(wordpiece, docs, 16)
    assert len(blocks) == len(want) > 5
    assert blocks.array.dtype == np.uint16 and blocks.array.tolist() == want
    assert blocks.num_documents == 40
    item = blocks[1]
    assert set(item) == {"input_ids", "attention_mask", "special_tokens_mask"}
    assert item["input_ids"].dtype == torch.int64 and item["input_ids"].tolist() == want[1]
    assert item["attention_mask"].all() and item["special_tokens_mask"][0]
    assert torch.equal(item["special_tokens_mask"], torch.isin(item["input_ids"], torch.tensor([2, 3])))
    sep_total = sum(r.count(wordpiece.sep_id) for r in want)
    assert 0 < sep_total <= 40  # documents are separated by sep (the tail may be dropped)

    reopened = PackedBlocks(tmp_path / "blocks.bin")
    assert len(reopened) == len(want) and reopened[len(want) - 1]["input_ids"].tolist() == want[-1]
    assert len(pickle.dumps(reopened)) < 2000  # the memmap is reopened in workers, not pickled
    one_chunk = pack_blocks(wordpiece, docs, tmp_path / "b2.bin", block_size=16, chunk_size=1000)
    assert one_chunk.array.tolist() == want  # chunking does not change the result


def test_pack_blocks_keeps_tail_when_asked(wordpiece, tmp_path):
    docs = ["the dog sat", "a cat"]
    stream = [*wordpiece.encode_ids(docs[:1])[0], 3, *wordpiece.encode_ids(docs[1:])[0], 3]
    blocks = pack_blocks(wordpiece, docs, tmp_path / "t.bin", block_size=64, drop_last=False)
    assert len(blocks) == 1
    item = blocks[0]
    n = len(stream) + 1
    assert item["input_ids"][:n].tolist() == [wordpiece.cls_id, *stream]
    assert item["attention_mask"].sum() == n and item["special_tokens_mask"][n:].all()
    empty = pack_blocks(wordpiece, docs, tmp_path / "d.bin", block_size=64)
    assert len(empty) == 0 and empty.array.shape == (0, 64)


def test_packed_blocks_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pack_blocks"):
        PackedBlocks(tmp_path / "missing.bin")


def test_cli_tokenizer_train(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(corpus(200)) + "\n\n")
    out = tmp_path / "tok"
    rc = main(["tokenizer", "train", "--corpus", str(text), "--kind", "bpe", "--vocab-size", "280", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained bpe tokenizer on 200 texts" in printed and "vocab size 2" in printed and "tokens: <s>" in printed
    assert Tokenizer.load(out).kind == "bpe"


def test_cli_kinds_match_the_library():
    from convergent.commands import tokenizer as command
    from convergent.data import tokenizer as library

    assert command.KINDS == library.KINDS  # the torch-free parser keeps its own copy


def test_cli_tokenizer_bad_corpus(tmp_path, capsys):
    assert main(["tokenizer", "train", "--corpus", "wordnet-glosess", "--out", str(tmp_path)]) == 2
    assert "did you mean 'wordnet-glosses'" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--corpus", "fashion-mnist", "--out", str(tmp_path)]) == 2
    assert "not text" in capsys.readouterr().err


def test_word_ids_group_the_pieces_of_a_word():
    tok = train_tokenizer(["unbelievable things happen to the quick fox"] * 3 + ["believe in things"] * 3,
                          kind="wordpiece", vocab_size=40, min_frequency=1)  # fmt: skip
    batch = tok.encode_batch(["unbelievable fox", "things"], max_length=32, word_ids=True)
    ids, words = batch["input_ids"], batch["word_ids"]
    assert words.shape == ids.shape
    assert (words[batch["special_tokens_mask"] & (ids != tok.unk_id)] == -1).all()  # cls, sep, padding
    pieces = [t for t in tok.tokens("unbelievable fox") if t not in ("[CLS]", "[SEP]")]
    first = [w for w in words[0].tolist() if w >= 0]
    assert len(first) == len(pieces) and first[0] == 0 and first[-1] == 1  # many pieces of word 0, then word 1
    assert len(set(first)) == 2 and len(first) > 2
    plain = tok.encode_batch(["unbelievable fox", "things"], max_length=32)
    assert "word_ids" not in plain and torch.equal(plain["input_ids"], ids)
