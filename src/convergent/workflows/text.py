"""Text runs: the tokenizer of a run and what it decides about the text backbone.

A text run uses ``data.tokenizer`` when given; otherwise it trains a ``data.tokenizer_kind``
tokenizer of ``data.vocab_size`` ids on the training split. Either is saved in
``RUN_DIR/tokenizer`` (:attr:`convergent.rundir.RunDir.tokenizer`), and a resumed or loaded run
reads that copy. The datasets then collate with it, and the backbone takes its vocabulary
size, padding and mask ids from it.
"""

from pathlib import Path
from typing import Any

from convergent.config import RunConfig
from convergent.data.packing import PackedBlocks, pack_blocks
from convergent.data.protocol import Dataset
from convergent.data.tokenizer import TOKENIZER_FILE, Tokenizer, train_tokenizer
from convergent.rundir import RunDir


def is_text(dataset: Any) -> bool:
    """Whether ``dataset`` yields texts (it can take a tokenizer): its declared ``is_text``."""
    return dataset.is_text


def find_tokenizer(cfg: RunConfig, run_dir: Path | None = None, encoder_dir: Any = None):
    """The tokenizer saved in ``run_dir/tokenizer`` (the copy the run trained with, so a run
    still loads where ``data.tokenizer`` no longer resolves: moved, or a relative path from
    another directory), else the one ``cfg.data.tokenizer`` names (an error if it is missing),
    else a pre-trained encoder's (``encoder_dir/tokenizer.json``); None when there is none."""
    saved = RunDir(run_dir).tokenizer if run_dir is not None else None
    if saved is not None and (saved / TOKENIZER_FILE).is_file():
        return Tokenizer.load(saved)
    if cfg.data.tokenizer:
        return Tokenizer.load(cfg.data.tokenizer)
    if encoder_dir is not None and (Path(encoder_dir) / TOKENIZER_FILE).is_file():
        return Tokenizer.load(encoder_dir)
    return None


def check_same_tokenizer(saved_dir: Path, given: Any) -> None:
    """A run keeps the tokenizer it was started with: training again in ``RUN_DIR`` with a
    different ``--data.tokenizer`` is an error, not a silent choice of one of the two."""
    if not (saved_dir / TOKENIZER_FILE).is_file() or not Path(given).expanduser().exists():
        return
    if Tokenizer.load(saved_dir).backend.to_str() != Tokenizer.load(given).backend.to_str():
        raise ValueError(
            f"--data.tokenizer {given} differs from the tokenizer this run was started with "
            f"({saved_dir}); a run keeps its tokenizer: train in a new run directory"
        )


def prepare_text(
    cfg: RunConfig, run_dir: Path | None, train_set: Dataset, *others: Dataset | None, encoder_dir: Any = None,
    word_ids: bool = False,
):
    """For text data: the run's tokenizer (:func:`find_tokenizer`; without one, trained on
    ``train_set`` when there is a ``run_dir``), saved in ``run_dir/tokenizer`` and attached to
    ``train_set`` and ``others`` (``word_ids``: batches carry the word index of each piece, for
    a task that masks whole words); None for other data."""
    if not is_text(train_set):
        return None
    tokenizer = find_tokenizer(cfg, run_dir, encoder_dir)
    if run_dir is not None and cfg.data.tokenizer:
        check_same_tokenizer(RunDir(run_dir).tokenizer, cfg.data.tokenizer)
    if tokenizer is None and run_dir is None:
        raise FileNotFoundError(
            f"text data needs a tokenizer: none is saved with the encoder ({encoder_dir}); pass --data.tokenizer"
        )
    if tokenizer is None:
        texts = "the streamed captions" if train_set.streamed else f"{len(train_set)} items"
        print(f"training a {cfg.data.tokenizer_kind} tokenizer ({cfg.data.vocab_size} ids) on {texts}")
        tokenizer = train_tokenizer(train_set.texts(), kind=cfg.data.tokenizer_kind, vocab_size=cfg.data.vocab_size)
    if run_dir is not None and not (RunDir(run_dir).tokenizer / TOKENIZER_FILE).is_file():
        tokenizer.save(RunDir(run_dir).tokenizer)
    attach_tokenizer(tokenizer, cfg.data.max_length, train_set, *others, word_ids=word_ids)
    return tokenizer


def packed_training_set(run_dir: Path, train_set: Any, tokenizer: Any, block_size: int):
    """The training texts packed into ``block_size``-token blocks in ``RUN_DIR/packed-train.bin``
    (:attr:`convergent.rundir.RunDir.packed`; written on the first call, reopened on resume)."""
    path = RunDir(run_dir).packed
    if path.is_file() and path.with_name(path.name + ".json").is_file():
        return PackedBlocks(path)
    return pack_blocks(tokenizer, train_set.texts(), path, block_size=block_size)


def attach_tokenizer(tokenizer: Any, max_length: int, *datasets: Any, word_ids: bool = False) -> None:
    """Collate every text dataset of ``datasets`` (None entries skipped) with ``tokenizer``
    (``word_ids``: batches also carry the word index of each piece, for whole-word masking)."""
    for ds in datasets:
        if ds is not None and is_text(ds):
            ds.with_tokenizer(tokenizer, max_length=max_length, word_ids=word_ids)


def tokenizer_vocab(tokenizer: Any, max_length: int) -> dict:
    """What a tokenizer decides about the models of a run (see
    :func:`convergent.backbones.configs.vocabulary_overrides` and ``Task.configure_text``)."""
    return {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id,
            "mask_token_id": tokenizer.mask_id, "max_length": max_length}  # fmt: skip
