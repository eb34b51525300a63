"""HF tokenizer files ⇄ convergent's :class:`~convergent.data.tokenizer.Tokenizer`, on disk.

A HF ``tokenizer.json`` is the HF ``tokenizers`` format our ``Tokenizer`` wraps, so it is
carried over as it is; what it does not say is which token plays which role. The roles come
from ``tokenizer_config.json`` (then ``special_tokens_map.json``): ``bos_token`` → cls,
``eos_token`` → sep, ``pad_token``, ``unk_token``, ``mask_token``; without them, CLIP's
``<|startoftext|>`` / ``<|endoftext|>``. A role left unnamed (CLIP has no pad, unk or mask
token of its own) is played by the end-of-text token, as CLIP's own tokenizer does for pad
and unk; the CLIP task never reads the mask id. Our ``encode_batch`` writes
``bos pieces eos``, right-padded, as CLIP's tokenizer does; padding and truncation stored
in the file are switched off (``encode_batch`` pads and truncates itself). A directory
with only the slow files (``vocab.json`` + ``merges.txt``) has no ``tokenizer.json``:
nothing is carried over (:func:`read_hf_tokenizer` returns None).

The other way, :func:`write_hf_tokenizer` writes our ``tokenizer.json`` with a
``tokenizer_config.json`` naming its special tokens, which ``transformers.AutoTokenizer``
loads as a ``PreTrainedTokenizerFast`` (its post-processor adds the same cls/sep).
"""

import json
from pathlib import Path

import tokenizers

from convergent.converters.hf import ConversionError, read_json
from convergent.data.tokenizer import META_FILE, TOKENIZER_FILE, Tokenizer

SPECIALS_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_HF_NAMES = {"cls": "bos_token", "sep": "eos_token", "pad": "pad_token", "unk": "unk_token", "mask": "mask_token"}
_CLIP_NAMES = {"cls": "<|startoftext|>", "sep": "<|endoftext|>"}


def read_hf_tokenizer(directory: str | Path, vocab_size: int):
    """The tokenizer of a HF model directory, or None without ``tokenizer.json``. Errors
    (:class:`~convergent.converters.hf.ConversionError`) name the file: unreadable, a role
    without a token, or ids beyond the text tower's ``vocab_size``."""
    directory = Path(directory)
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        return None
    if (directory / META_FILE).is_file():  # written by convergent: the roles are recorded
        try:
            tokenizer = Tokenizer.load(directory)
        except ValueError as e:
            raise ConversionError(str(e)) from e
    else:
        try:
            backend = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises plain Exception for bad JSON / unknown fields
            raise ConversionError(f"{file}: not a valid tokenizer.json ({e})") from e
        specials = _roles(directory, backend)
        kind = "wordpiece" if json.loads(backend.to_str())["model"]["type"] == "WordPiece" else "bpe"
        tokenizer = Tokenizer(backend, kind, specials)
    tokenizer.backend.no_padding()
    tokenizer.backend.no_truncation()
    top = max(tokenizer.backend.get_vocab(with_added_tokens=True).values())
    if top >= vocab_size:
        raise ConversionError(f"{file}: token ids go up to {top}, but the text tower has vocab_size {vocab_size}")
    return tokenizer


def _roles(directory: Path, backend) -> dict[str, str]:
    """``{role: token}`` from the HF special-token files, else CLIP's names; unnamed roles
    fall back to the end-of-text token."""
    named: dict[str, str] = {}
    for name in reversed(SPECIALS_FILES):  # tokenizer_config.json wins
        if (directory / name).is_file():
            data = read_json(directory / name, what="tokenizer special tokens")
            named.update({role: _content(data[key]) for role, key in _HF_NAMES.items() if data.get(key)})
    for role, token in _CLIP_NAMES.items():
        named.setdefault(role, token)
    for role in ("pad", "unk", "mask"):
        named.setdefault(role, named["sep"])
    where = " or ".join(str(directory / n) for n in SPECIALS_FILES)
    for role, token in named.items():
        if backend.token_to_id(token) is None:
            raise ConversionError(
                f"{directory / TOKENIZER_FILE}: no token {token!r} for the {_HF_NAMES[role]} "
                f"(expected it named in {where}, or CLIP's {_CLIP_NAMES.get(role, _CLIP_NAMES['sep'])!r})"
            )
    return named


def _content(value) -> str:
    """A special token as HF files store it: a string or ``{"content": ...}``."""
    return value["content"] if isinstance(value, dict) else str(value)


def write_hf_tokenizer(tokenizer, directory: str | Path, max_length: int) -> list[str]:
    """Write ``tokenizer.json`` (+ ``convergent_tokenizer.json``) and a ``tokenizer_config.json``
    for ``transformers``; returns the names of the files written."""
    directory = Path(directory)
    tokenizer.save(directory)
    config = {f"{_HF_NAMES[role]}": token for role, token in tokenizer.specials.items()}
    config.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=max_length)
    (directory / SPECIALS_FILES[0]).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return [TOKENIZER_FILE, META_FILE, SPECIALS_FILES[0]]
