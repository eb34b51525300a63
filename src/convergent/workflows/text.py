"""Text runs: the tokenizer of a run and what it decides about the text backbone.

A text run uses ``data.tokenizer`` when given; otherwise it trains a ``data.tokenizer_kind``
tokenizer of ``data.vocab_size`` ids on the training split and saves it in
``RUN_DIR/tokenizer`` (a resumed run loads that one). The datasets then collate with it,
and the backbone takes its vocabulary size, padding and mask ids from it.
"""

from pathlib import Path
from typing import Any

TOKENIZER_DIR = "tokenizer"
PACKED_FILE = "packed-train.bin"


def is_text(dataset: Any) -> bool:
    """Whether ``dataset`` yields texts (it can take a tokenizer)."""
    return hasattr(dataset, "with_tokenizer")


def prepare_text(cfg: Any, run_dir: Path | None, train_set: Any, *others: Any, encoder_dir: Any = None):
    """For text data: the run's tokenizer (:func:`run_tokenizer`), attached to ``train_set``
    and ``others``; None for other data. A pre-trained encoder's saved tokenizer
    (``encoder_dir/tokenizer.json``) comes first unless ``data.tokenizer`` names one."""
    from convergent.data.tokenizer import Tokenizer

    if not is_text(train_set):
        return None
    if encoder_dir is not None and not cfg.data.tokenizer and (Path(encoder_dir) / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(encoder_dir)
    elif run_dir is None and not cfg.data.tokenizer:
        raise FileNotFoundError(
            f"text data needs a tokenizer: none is saved with the encoder ({encoder_dir}); pass --data.tokenizer"
        )
    else:
        tokenizer = run_tokenizer(cfg, run_dir, train_set) if run_dir is not None else Tokenizer.load(cfg.data.tokenizer)
    task = getattr(cfg, "task", None)
    task_cfg = getattr(task, str(getattr(task, "name", "")).replace("-", "_"), None)
    attach_tokenizer(tokenizer, cfg.data.max_length, train_set, *others,
                     word_ids=bool(getattr(task_cfg, "whole_word_mask", False)))  # fmt: skip
    return tokenizer


def run_tokenizer(cfg: Any, run_dir: Path, train_set: Any):
    """The tokenizer of a text run (see the module docstring)."""
    from convergent.data.tokenizer import Tokenizer, train_tokenizer

    saved = Path(run_dir) / TOKENIZER_DIR
    if cfg.data.tokenizer:
        tokenizer = Tokenizer.load(cfg.data.tokenizer)
    elif (saved / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(saved)
    else:
        print(f"training a {cfg.data.tokenizer_kind} tokenizer ({cfg.data.vocab_size} ids) on {len(train_set)} texts")
        tokenizer = train_tokenizer(train_set.texts(), kind=cfg.data.tokenizer_kind, vocab_size=cfg.data.vocab_size)
    if not (saved / "tokenizer.json").is_file():
        tokenizer.save(saved)
    return tokenizer


def packed_training_set(run_dir: Path, train_set: Any, tokenizer: Any, block_size: int):
    """The training texts packed into ``block_size``-token blocks in ``RUN_DIR/packed-train.bin``
    (written on the first call, reopened on resume)."""
    from convergent.data.packing import PackedBlocks, pack_blocks

    path = Path(run_dir) / PACKED_FILE
    if path.is_file() and path.with_name(path.name + ".json").is_file():
        return PackedBlocks(path)
    return pack_blocks(tokenizer, train_set.texts(), path, block_size=block_size)


def attach_tokenizer(tokenizer: Any, max_length: int, *datasets: Any, word_ids: bool = False) -> None:
    """Collate every text dataset of ``datasets`` (None entries skipped) with ``tokenizer``
    (``word_ids``: batches also carry the word index of each piece, for whole-word masking)."""
    for ds in datasets:
        if ds is not None and is_text(ds):
            ds.with_tokenizer(tokenizer, max_length=max_length, word_ids=word_ids)


def text_overrides(tokenizer: Any, max_length: int, base: Any, causal: bool) -> dict:
    """Backbone config fields a tokenizer decides: vocabulary and special ids; positions when
    ``base`` (the backbone's config) has fewer than ``max_length``; ``causal`` when asked."""
    out = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id, "mask_token_id": tokenizer.mask_id}
    if base.max_position < max_length:
        out["max_position"] = max_length
    if causal:
        out["causal"] = True
    return out


def load_run_tokenizer(run_dir: str | Path, cfg: Any | None = None):
    """The tokenizer a finished text run used (its saved copy, else ``data.tokenizer``)."""
    from convergent.data.tokenizer import Tokenizer

    saved = Path(run_dir) / TOKENIZER_DIR
    if (saved / "tokenizer.json").is_file():
        return Tokenizer.load(saved)
    if cfg is not None and cfg.data.tokenizer:
        return Tokenizer.load(cfg.data.tokenizer)
    raise FileNotFoundError(f"{saved}: no tokenizer saved with this run (is it a text run?)")


def language_metrics(cfg: Any, task: Any, tokenizer: Any) -> dict:
    """Masked- or next-token accuracy and perplexity of a language-model ``task`` on the
    validation split (the test split when there is none); empty for other tasks."""
    from convergent.data.registry import build_dataset
    from convergent.evaluation.language import language_model_metrics

    if tokenizer is None or task.name not in ("mlm", "causal-lm"):
        return {}
    for split in ("val", "test"):
        try:
            data = build_dataset(cfg.data.name, split, root=cfg.data.root)
        except (ValueError, KeyError, FileNotFoundError):
            continue
        if getattr(data, "heldout", True):
            attach_tokenizer(tokenizer, cfg.data.max_length, data)
            found = language_model_metrics(task, data, batch_size=cfg.data.batch_size)
            return {f"{split}_{k}": v for k, v in found.items()}
    return {}
