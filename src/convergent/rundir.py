"""The run directory: every path a run writes or reads, named once.

    run = RunDir("runs/simmim-swinv2_micro-20261122-130501")
    run.config        # config.yaml          the resolved config the run was started with
    run.checkpoints   # checkpoints/         step-NNNNNN/ (model.safetensors, state.pt), latest
    run.encoder       # encoder/             the trained backbone (save_pretrained) + its tokenizer
    run.tokenizer     # tokenizer/           the run's tokenizer (text runs)
    run.image_tokenizer  # image_tokenizer/   the image tokenizer a vqvae run trained
    run.metrics       # metrics.jsonl        one JSON object per logged step
    run.tensorboard   # tensorboard/         TensorBoard event files
    run.reconstructions, run.loss_plot       reconstructions.png, loss.png
    run.summary       # summary.json         the run's summary (training + evaluation)
    run.train_summary # summary_train.json   the Trainer's summary of the training alone
    run.packed        # packed-train.bin     the training texts packed into blocks (+ .json)

What lies *inside* ``encoder/``, ``tokenizer/`` and ``checkpoints/`` belongs to those formats
(``convergent.backbones.pretrained``, ``convergent.data.tokenizer``,
``convergent.training.checkpoint``), not to the run.

**Placement.** DESIGN.md sketched ``workflows/rundir.py``; the names live here instead, at
the top of the package beside ``config.py``, because ``training`` writes part of the run
(checkpoints, metrics, TensorBoard, the training summary) and may not import ``workflows``
(the dependency direction of ``tests/test_architecture.py``). This module is torch-free and
imports nothing of convergent, so every layer may use it. What needs more than names —
reading and writing ``config.yaml``, telling a run from an encoder directory, loading a
run's task — is in :mod:`convergent.workflows.runs`.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class RunDir:
    """The directory of one run (``convergent pretrain``, ``finetune``, a converted CLIP);
    ``os.PathLike``, so it goes wherever a path does (``Path(run) == run.root``)."""

    root: Path

    CONFIG: ClassVar[str] = "config.yaml"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    ENCODER: ClassVar[str] = "encoder"
    TOKENIZER: ClassVar[str] = "tokenizer"
    IMAGE_TOKENIZER: ClassVar[str] = "image_tokenizer"
    METRICS: ClassVar[str] = "metrics.jsonl"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    RECONSTRUCTIONS: ClassVar[str] = "reconstructions.png"
    LOSS_PLOT: ClassVar[str] = "loss.png"
    SUMMARY: ClassVar[str] = "summary.json"
    TRAIN_SUMMARY: ClassVar[str] = "summary_train.json"
    PACKED: ClassVar[str] = "packed-train.bin"

    def __init__(self, root: "str | os.PathLike[str]"):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def named(cls, out_dir: "str | os.PathLike[str]", name: str | None, prefix: str) -> "RunDir":
        """``out_dir/name``, or ``out_dir/prefix-YYYYmmdd-HHMMSS`` when ``name`` is None."""
        return cls(Path(out_dir) / (name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def config(self) -> Path:
        """The config the run was started with (YAML)."""
        return self.root / self.CONFIG

    @property
    def checkpoints(self) -> Path:
        """Checkpoint directories and ``latest`` (see :mod:`convergent.training.checkpoint`)."""
        return self.root / self.CHECKPOINTS

    @property
    def encoder(self) -> Path:
        """The trained backbone, loadable with ``from_pretrained``, and its tokenizer."""
        return self.root / self.ENCODER

    @property
    def tokenizer(self) -> Path:
        """The run's tokenizer (trained at its start, or a copy of ``data.tokenizer``)."""
        return self.root / self.TOKENIZER

    @property
    def image_tokenizer(self) -> Path:
        """The image tokenizer a vqvae run trained (encoder, codebook, decoder)."""
        return self.root / self.IMAGE_TOKENIZER

    @property
    def metrics(self) -> Path:
        """Training metrics, one JSON object per logged step."""
        return self.root / self.METRICS

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files."""
        return self.root / self.TENSORBOARD

    @property
    def reconstructions(self) -> Path:
        """Original | masked | prediction of held-out images (reconstructing tasks)."""
        return self.root / self.RECONSTRUCTIONS

    @property
    def loss_plot(self) -> Path:
        """Training loss against step."""
        return self.root / self.LOSS_PLOT

    @property
    def summary(self) -> Path:
        """The summary of the whole run: training, evaluation, where the encoder is."""
        return self.root / self.SUMMARY

    @property
    def train_summary(self) -> Path:
        """The Trainer's summary of the training alone (written at the end of ``fit``)."""
        return self.root / self.TRAIN_SUMMARY

    @property
    def packed(self) -> Path:
        """The training texts packed into fixed-size token blocks (``data.pack``)."""
        return self.root / self.PACKED

    def is_run(self) -> bool:
        """Whether the directory holds a run (its ``config.yaml``)."""
        return self.config.is_file()
