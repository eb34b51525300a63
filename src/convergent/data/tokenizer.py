"""Tokenizers trained locally with HF ``tokenizers`` (never downloaded), behind one small wrapper.

    tok = train_tokenizer(texts, kind="wordpiece", vocab_size=8000)   # any iterable: streamed
    tok.save("runs/tok")                      # runs/tok/tokenizer.json + convergent_tokenizer.json
    tok = Tokenizer.load("runs/tok")          # or the tokenizer.json file itself
    batch = tok.encode_batch(["a dog", "a cat sat"], max_length=128)

Two kinds, each with five special tokens at ids 0-4 (pad, unk, cls/bos, sep/eos, mask):

* ``wordpiece``: BERT (Devlin et al., 2019): ``BertNormalizer`` (lowercase by default, accents
  kept), ``BertPreTokenizer``, ``##`` continuation pieces; ``[PAD] [UNK] [CLS] [SEP] [MASK]``;
  a text is encoded ``[CLS] pieces [SEP]``.
* ``bpe``: GPT-2 byte-level BPE (no unknown bytes, exact round trip; NFC normalised, case kept
  by default); RoBERTa's names ``<pad> <unk> <s> </s> <mask>``; a text is encoded
  ``<s> pieces </s>`` (bos/eos: for a causal model ``</s>`` ends a document).

The ``tokenizer.json`` file is the standard HF format (with a ``TemplateProcessing`` post-processor
adding the same cls/sep as :meth:`Tokenizer.encode_batch`), so ``transformers`` can load it;
``convergent_tokenizer.json`` beside it records the kind and which token plays which role.
"""

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tokenizers
import torch
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from convergent.choices import TOKENIZER_KINDS
from convergent.files import write_text_atomic

KINDS = TOKENIZER_KINDS
ROLES = ("pad", "unk", "cls", "sep", "mask")
"""Special-token roles, in id order (pad = 0). ``bos``/``eos`` are ``cls``/``sep``."""
SPECIALS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "bpe": {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
}
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "convergent_tokenizer.json"
"""Beside ``tokenizer.json``: ``{"kind": ..., "specials": {role: token}}``."""
_BYTES = 256  # byte-level BPE starts from all 256 byte symbols


def _role(role: str, doc: str) -> property:
    return property(lambda self: self._ids[role], doc=doc)


class Tokenizer:
    """A trained HF ``tokenizers.Tokenizer`` plus its kind and special-token roles. Picklable
    (DataLoader workers get a copy)."""

    def __init__(self, backend: tokenizers.Tokenizer, kind: str, specials: dict[str, str]):
        missing = [r for r in ROLES if backend.token_to_id(specials.get(r, "")) is None]
        if missing:
            raise ValueError(f"tokenizer: no token for {missing} (specials {specials})")
        backend.encode_special_tokens = True  # text spelling "[MASK]" is text, never a control token
        self.backend = backend
        self.kind = kind
        self.specials = {r: specials[r] for r in ROLES}
        self._ids = {r: backend.token_to_id(t) for r, t in self.specials.items()}
        self._special_array = np.array(sorted(set(self._ids.values())), dtype=np.int64)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.backend.encode_special_tokens = True  # not part of the backend's pickled state

    # -- ids ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included): the embedding table's size."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    pad_id = _role("pad", "Id of the padding token (0).")
    unk_id = _role("unk", "Id of the unknown token.")
    cls_id = _role("cls", "Id of the token that starts every sequence (``[CLS]`` / ``<s>``).")
    sep_id = _role("sep", "Id of the token that ends every sequence and separates packed documents.")
    mask_id = _role("mask", "Id of the mask token (masked language modelling).")
    bos_id = cls_id
    eos_id = sep_id

    @property
    def special_ids(self) -> list[int]:
        """Ids of the special tokens, sorted."""
        return self._special_array.tolist()

    def is_special(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor like ``ids``: True on special tokens (padding included)."""
        return torch.isin(ids, torch.from_numpy(self._special_array))

    # -- encode / decode ---------------------------------------------------------------------
    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens and without truncation."""
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # fast: no offsets
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def encode_batch(
        self, texts: Sequence[str], max_length: int = 512, padding: str = "longest", word_ids: bool = False
    ) -> dict:
        """Encode ``texts`` as ``cls pieces sep``, truncated to ``max_length`` tokens (the final sep
        is kept), right-padded to the longest row or to ``max_length``.

        Returns ``input_ids`` (B, L) int64, ``attention_mask`` (B, L) int64 (1 = real token) and
        ``special_tokens_mask`` (B, L) bool (True on cls/sep/pad, and on unk as in HF, so masking
        never picks them). Special-token spellings inside a text (``"[MASK]"``) are ordinary text.
        With ``word_ids``, also ``word_ids`` (B, L) int64: the index of the word each piece belongs
        to (pieces of one word share it, for whole-word masking), -1 on special tokens and padding.
        """
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for cls and sep), got {max_length}")
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts, not one string")
        if word_ids:
            encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
            ids_list = [e.ids for e in encodings]
            words = [[-1, *(-1 if w is None else w for w in e.word_ids[: max_length - 2]), -1] for e in encodings]
        else:
            ids_list = self.encode_ids(texts)
        rows = [[self.cls_id, *ids[: max_length - 2], self.sep_id] for ids in ids_list]
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))  # (B,)
        width = max_length if padding == "max_length" else int(lengths.max(initial=2))
        real = np.arange(width) < lengths[:, None]  # (B, L)
        input_ids = _padded(rows, real, self.pad_id)
        attention_mask = torch.from_numpy(real.astype(np.int64))
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "special_tokens_mask": self.is_special(input_ids),  # padding is pad_id: special
        }
        if word_ids:
            out["word_ids"] = _padded(words, real, -1)
        return out

    def decode(self, ids, skip_special: bool = True) -> str:
        """Text of one sequence of ids (list or 1-D tensor); special tokens dropped by default."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def encode(self, text: str) -> list[int]:
        """Ids of one text with cls/sep, not truncated."""
        return self.backend.encode(text).ids

    def tokens(self, text: str) -> list[str]:
        """The pieces of one text with cls/sep, for display."""
        return self.backend.encode(text).tokens

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` and ``directory/convergent_tokenizer.json``; returns
        the tokenizer.json path. Files are written to a temporary name of this process, then
        renamed (the processes of a distributed run may all save the same tokenizer at once)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "specials": self.specials}
        for name, text in ((TOKENIZER_FILE, self.backend.to_str(pretty=True)), (META_FILE, json.dumps(meta, indent=2))):
            write_text_atomic(directory / name, text)
        return directory / TOKENIZER_FILE

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """From a directory written by :meth:`save` or a ``tokenizer.json`` file. Without
        ``convergent_tokenizer.json`` the roles are recognised from BERT or RoBERTa token names."""
        path = Path(path).expanduser()
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            want = f"a directory with {TOKENIZER_FILE} or the file"
            raise FileNotFoundError(f"tokenizer: {file} not found (expected {want})")
        try:
            backend = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises plain Exception for bad JSON / unknown fields
            raise ValueError(f"tokenizer: {file} is not a valid tokenizer.json ({e})") from e
        meta_file = file.parent / META_FILE
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
                kind, specials = meta["kind"], meta["specials"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"tokenizer: {meta_file} is not valid ({type(e).__name__}: {e})") from e
        else:
            kind, specials = _recognise(backend, file)
        try:
            return cls(backend, kind, specials)
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from e

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _padded(rows: Sequence[Sequence[int]], real: np.ndarray, fill: int) -> torch.Tensor:
    """``(B, L)`` int64: row ``b`` of ``rows`` where ``real[b]`` (its first ``len(rows[b])``
    places), ``fill`` elsewhere; one copy for the whole batch."""
    out = np.full(real.shape, fill, dtype=np.int64)
    out[real] = np.fromiter(itertools.chain.from_iterable(rows), np.int64, int(real.sum()))  # row-major order
    return torch.from_numpy(out)


def _recognise(backend: tokenizers.Tokenizer, file: Path) -> tuple[str, dict[str, str]]:
    """``(kind, specials)`` of a foreign tokenizer.json, from its model type and token names."""
    for kind, specials in SPECIALS.items():
        if all(backend.token_to_id(t) is not None for t in specials.values()):
            model = json.loads(backend.to_str())["model"]["type"]
            return ("wordpiece" if model == "WordPiece" else "bpe"), dict(specials)
    names = " / ".join(" ".join(s.values()) for s in SPECIALS.values())
    raise ValueError(f"tokenizer: {file} has no {META_FILE} beside it and not all of the special tokens {names}")


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool | None = None,
) -> Tokenizer:
    """Train a ``kind`` tokenizer (``"wordpiece"`` or ``"bpe"``) on ``texts`` (streamed once).

    ``vocab_size``: at most this many ids, special tokens included (bpe: at least 261, the 256
    byte symbols and 5 specials); ``min_frequency``: merges/pieces seen fewer times are not
    added; ``lowercase``: None = True for wordpiece (BERT uncased), False for bpe.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    lowercase = kind == "wordpiece" if lowercase is None else lowercase
    specials = SPECIALS[kind]
    tokens = [specials[r] for r in ROLES]
    least = len(tokens) + (_BYTES if kind == "bpe" else 1)
    if vocab_size < least:
        raise ValueError(f"{kind}: vocab_size must be >= {least}, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if kind == "wordpiece":
        backend = tokenizers.Tokenizer(models.WordPiece(unk_token=specials["unk"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=tokens, show_progress=False
        )
    else:
        backend = tokenizers.Tokenizer(models.BPE(unk_token=specials["unk"]))
        steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=tokens, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )  # fmt: skip
    backend.train_from_iterator(iter(texts), trainer)
    cls, sep = specials["cls"], specials["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return Tokenizer(backend, kind, specials)
