"""What a run checks with torch before its data loads and its directory is written (after the
torch-free :mod:`convergent.validate`):

* **the model builds**: the run's task (backbone + heads) is built with its parameters on the
  ``meta`` device — no memory, no initialisation, a fraction of a second even for a ViT-B —
  so what a backbone or task constructor refuses (a window size that does not divide the
  feature map, a pooling the backbone lacks, ...) is refused now;
* **the disk has room** for what the run writes: each checkpoint holds the task's weights
  and AdamW's two moments (~3 x 4 bytes per trainable parameter, 4 per frozen one or
  buffer); a run keeps :data:`~convergent.training.checkpoint.KEEP` checkpoints and writes the
  next before pruning the oldest, then saves the encoder (4 bytes per backbone weight). A
  resumed run already holds its checkpoints: it needs room for one more and the encoder;
* **the device exists**: ``trainer.accelerator cuda`` where CUDA is available, no fp16 AMP on
  a CPU;
* **a resumed run's checkpoints are readable** (header and zip directory, not the tensors).

The estimate counts parameters, not the file-format overhead (a few kB per checkpoint).
A model whose construction cannot run on the meta device is not estimated (a warning says so).
"""

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from convergent.config import FinetuneConfig, PretrainConfig, RunConfig, TrainerConfig
from convergent.data.registry import entry as dataset_entry
from convergent.data.tokenizer import Tokenizer
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.tasks.registry import build_task
from convergent.training.checkpoint import KEEP, readable_checkpoint
from convergent.validate import ConfigError, check_free_space, size
from convergent.workflows.assemble import build_encoder, build_run_task

FP32 = 4
"""Bytes per saved weight and per AdamW moment (parameters stay fp32 under mixed precision)."""


@dataclass(frozen=True)
class PlannedVocabulary:
    """What the model takes from the tokenizer a text run will train at its start
    (``data.vocab_size`` ids); its special ids do not change the parameter count."""

    vocab_size: int
    pad_id: int = 0
    mask_id: int = 1


class _ParametersOnMeta(TorchFunctionMode):
    """``torch.empty`` without a device — how ``nn.Linear``, ``Conv``, ``LayerNorm`` and
    ``Embedding`` allocate their parameters — on the meta device; other tensors (drop-path
    rates, position tables, index buffers) stay real, so constructors that compute with
    them run unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def check_pretrain_start(cfg: PretrainConfig, run: RunDir, resume: bool) -> None:
    """The checks of the module docstring for a ``convergent pretrain`` run."""
    check_device(cfg.trainer)
    if resume:
        readable_checkpoint(run.root)
    with _ParametersOnMeta():
        task = _built(lambda: build_run_task(copy.deepcopy(cfg), planned_tokenizer(cfg)))
    if task is not None:
        check_room(task, run, resume, "--resume" if resume else "--trainer.out_dir")


def check_finetune_start(cfg: FinetuneConfig, run: RunDir) -> None:
    """The checks of the module docstring for a ``convergent finetune`` run (the head has
    ``classify.num_classes`` outputs here; the data decides them later)."""
    check_device(cfg.trainer)

    def build() -> Task:
        backbone = build_encoder(copy.deepcopy(cfg), planned_tokenizer(cfg))
        return build_task("classify", backbone, copy.deepcopy(cfg.classify))

    with _ParametersOnMeta():
        task = _built(build)
    if task is not None:
        check_room(task, run, False, "--trainer.out_dir")


def _built(build) -> Task | None:
    """``build()`` (on the meta device), or None with a warning when a constructor needs real
    tensor values. Config errors (``ValueError``, ``KeyError``, missing files) are raised."""
    try:
        with warnings.catch_warnings():  # loading model.init's weights into meta parameters does nothing, by design
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            return build()
    except (RuntimeError, NotImplementedError) as e:
        warnings.warn(f"the disk space a run needs is not checked: its model does not build on the meta device ({e})")
        return None


def planned_tokenizer(cfg: RunConfig) -> Tokenizer | PlannedVocabulary | None:
    """For text data, what the run's tokenizer will be: ``data.tokenizer`` when given, else
    one of ``data.vocab_size`` ids; None for image data or a text encoder that brings its own."""
    if dataset_entry(cfg.data.name).kind == "images" or (isinstance(cfg, FinetuneConfig) and cfg.model.init):
        return None
    if cfg.data.tokenizer:
        return Tokenizer.load(cfg.data.tokenizer)
    if isinstance(cfg, PretrainConfig) and cfg.model.init:
        return None  # the encoder's tokenizer
    return PlannedVocabulary(cfg.data.vocab_size)


def checkpoint_bytes(task: Task) -> int:
    """Bytes of one checkpoint of ``task``: its state dict, plus AdamW's two moments of each
    trainable parameter."""
    weights = sum(t.numel() * t.element_size() for t in task.state_dict().values())
    moments = sum(2 * FP32 * p.numel() for p in task.parameters() if p.requires_grad)
    return weights + moments


def needed_bytes(task: Task, resume: bool) -> tuple[int, str]:
    """``(bytes, what they are)`` a run of ``task`` writes (see the module docstring)."""
    one = checkpoint_bytes(task)
    encoder = sum(t.numel() * t.element_size() for t in task.backbone.state_dict().values())
    count = 1 if resume else KEEP + 1
    params = sum(p.numel() for p in task.parameters())
    what = (f"{count} checkpoint(s) of {size(one)} ({params / 1e6:.1f}M parameters with AdamW state) and the "
            f"encoder ({size(encoder)})")  # fmt: skip
    return count * one + encoder, what


def check_room(task: Task, run: RunDir, resume: bool, option: str) -> None:
    """The file system of ``run`` has room for what a run of ``task`` writes."""
    needed, what = needed_bytes(task, resume)
    check_free_space(Path(run.root), needed, option, what)


def check_device(trainer: TrainerConfig) -> None:
    """The accelerator asked for exists, and fp16 AMP is not asked of a CPU."""
    cuda = torch.cuda.is_available()
    if trainer.accelerator in ("cuda", "gpu") and not cuda:
        raise ConfigError(f"--trainer.accelerator {trainer.accelerator}: no CUDA device is available here "
                          f"(torch {torch.__version__}); use --trainer.accelerator cpu or auto")  # fmt: skip
    on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not cuda)
    if on_cpu and trainer.precision in ("16-mixed", "16"):
        raise ConfigError(f"--trainer.precision {trainer.precision}: fp16 mixed precision needs a GPU; on a CPU "
                          "use bf16-mixed or 32-true")  # fmt: skip
