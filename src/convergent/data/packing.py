"""Pack a text corpus into fixed-length token blocks on disk (RoBERTa's FULL-SENTENCES / GPT
packing): no padding is wasted, and corpora larger than memory work.

    blocks = pack_blocks(tok, (d for d in docs), "corpus.bin", block_size=128)
    blocks[0]  # {"input_ids": (128,) int64, "attention_mask": (128,), "special_tokens_mask": (128,)}

Documents are tokenised without special tokens, each followed by sep/eos, and concatenated;
the stream is cut into blocks of ``block_size - 1`` tokens, each prefixed with cls/bos, so a
block reads ``[CLS] ...end of doc 1 [SEP] doc 2 ...`` (a document may continue into the next
block). Documents are read and tokenised ``chunk_size`` at a time and each full block is
appended to the file at once, so memory stays at one chunk whatever the corpus size.

On disk: ``path`` holds the ids as a raw ``(num_blocks, block_size)`` array (uint16 when the
vocabulary fits, else int32), read back with ``np.memmap``; ``path.json`` records block size,
dtype, pad and special ids. :class:`PackedBlocks` reopens the pair.
"""

import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from convergent.data.protocol import Dataset
from convergent.files import temporary_name


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class PackedBlocks(Dataset):
    """Map-style dataset over a file written by :func:`pack_blocks`; items are
    ``{"input_ids": (L,) int64, "attention_mask": (L,) int64, "special_tokens_mask": (L,) bool}``.

    The memmap is opened lazily in each process (workers, after fork or spawn), never pickled.
    Nothing is skipped: the documents were tokenised when the file was written.
    """

    name = "packed-blocks"
    batch_keys = ("input_ids", "attention_mask", "special_tokens_mask")

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        meta_path = _meta_path(self.path)
        if not self.path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"packed blocks: {self.path} or {meta_path} not found (written by pack_blocks)")
        try:
            meta = json.loads(meta_path.read_text())
            self.block_size = int(meta["block_size"])
            self.dtype = np.dtype(meta["dtype"])
            self.pad_id = int(meta["pad_id"])
            self.special_ids = torch.tensor(meta["special_ids"], dtype=torch.int64)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"packed blocks: {meta_path} is not valid ({type(e).__name__}: {e})") from e
        row_bytes = self.block_size * self.dtype.itemsize
        size = self.path.stat().st_size
        if size % row_bytes:
            raise ValueError(f"packed blocks: {self.path} has {size} bytes, not a multiple of a {row_bytes}-byte block")
        self.num_blocks = size // row_bytes
        self.num_documents = int(meta.get("num_documents", -1))
        self.source = f"packed blocks: {self.num_blocks} x {self.block_size} tokens from {self.path}"
        self._array = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # a memmap would pickle as a full in-memory copy

    @property
    def array(self) -> np.ndarray:
        """``(num_blocks, block_size)`` read-only memmap of the ids."""
        if self._array is None and self.num_blocks == 0:  # mmap cannot map an empty file
            self._array = np.zeros((0, self.block_size), dtype=self.dtype)
        if self._array is None:
            self._array = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_blocks, self.block_size))
        return self._array

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(self.array[i].astype(np.int64))  # (L,) copy out of the memmap
        real = ids != self.pad_id
        return {
            "input_ids": ids,
            "attention_mask": real.long(),
            "special_tokens_mask": torch.isin(ids, self.special_ids) | ~real,
        }


def pack_blocks(
    tokenizer,
    texts: Iterable[str],
    path: str | Path,
    block_size: int,
    chunk_size: int = 1024,
    drop_last: bool = True,
) -> PackedBlocks:
    """Tokenise ``texts`` (streamed) with ``tokenizer`` (:class:`~convergent.data.tokenizer.Tokenizer`)
    into blocks of ``block_size`` tokens written to ``path``; returns them as :class:`PackedBlocks`.

    ``drop_last``: drop the final partial block (True) or pad it with pad tokens (False).
    The file is written under a temporary name and renamed, so ``path`` is complete or absent.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (cls + one token), got {block_size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32)
    body = block_size - 1  # tokens per block after the cls
    carry = np.zeros(0, dtype=np.int64)  # tokens not yet in a full block
    num_docs = 0
    tmp = temporary_name(path)  # this process's own (ranks may pack at once)
    texts = iter(texts)
    with open(tmp, "wb") as f:
        while chunk := list(itertools.islice(texts, chunk_size)):
            num_docs += len(chunk)
            pieces = [carry]
            for ids in tokenizer.encode_ids(chunk):
                pieces += [np.asarray(ids, dtype=np.int64), np.array([tokenizer.sep_id])]
            stream = np.concatenate(pieces)
            full = len(stream) // body
            _write_blocks(f, stream[: full * body].reshape(full, body), tokenizer.cls_id, dtype)
            carry = stream[full * body :]
        if len(carry) and not drop_last:
            last = np.full((1, body), tokenizer.pad_id, dtype=np.int64)
            last[0, : len(carry)] = carry
            _write_blocks(f, last, tokenizer.cls_id, dtype)
    meta = {
        "block_size": block_size, "dtype": dtype.name, "pad_id": tokenizer.pad_id,
        "special_ids": list(tokenizer.special_ids), "vocab_size": tokenizer.vocab_size, "num_documents": num_docs,
    }  # fmt: skip
    _meta_path(path).write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)
    return PackedBlocks(path)


def _write_blocks(f, rows: np.ndarray, cls_id: int, dtype: np.dtype) -> None:
    """Append ``rows`` (n, L-1), each prefixed with ``cls_id``, to ``f`` as ``dtype``."""
    if len(rows):
        blocks = np.concatenate([np.full((len(rows), 1), cls_id, dtype=np.int64), rows], axis=1)  # (n, L)
        f.write(blocks.astype(dtype).tobytes())
