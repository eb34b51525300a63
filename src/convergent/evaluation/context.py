"""What an evaluation is given (torch-free): :class:`EvalContext`, the options of the
command line (:class:`EvalOptions`) and the contracts of an image–text model
(:class:`ImageTextModel`), of an image tokenizer (:class:`ImageTokenizer`), of a captioner
(:class:`Captioner`) and of a text-to-image model (:class:`ImageGenerator`).

A workflow builds one context per subject — a saved encoder with its data, a pre-training
run's task, the end of a pre-training run — and declares in ``provides`` what the subject
offers, in the requirement names of :mod:`convergent.evaluation.registry`. Each registered
evaluation takes the context and returns a flat dict of results.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from convergent.config import RunConfig


@runtime_checkable
class ImageTextModel(Protocol):
    """A model that embeds images and texts into one space (the CLIP task): what zero-shot
    classification and retrieval need."""

    def encode_image(self, images: Any) -> Any:
        """``(B, C, H, W)`` images → ``(B, D)`` embeddings."""

    def encode_text(self, input_ids: Any, attention_mask: Any = None) -> Any:
        """``(B, L)`` token ids (+ mask) → ``(B, D)`` embeddings."""


@runtime_checkable
class ImageTokenizer(Protocol):
    """A model that turns images into a grid of discrete codes and back (the VQ-VAE task): what
    the reconstruction evaluation needs."""

    num_codes: int
    """Size of the code vocabulary."""

    def encode(self, images: Any) -> Any:
        """``(B, C, H, W)`` images (normalised) → ``(B, h, w)`` code ids."""

    def decode(self, ids: Any) -> Any:
        """``(B, h, w)`` code ids → ``(B, C, H, W)`` images (normalised)."""


@runtime_checkable
class Captioner(Protocol):
    """A model that writes a caption for an image (the caption task): what the captioning
    evaluation and ``convergent caption`` need."""

    def generate(self, images: Any, bos_id: int, eos_id: int, beam_size: int | None = None,
                 max_new_tokens: int | None = None) -> list[list[int]]:  # fmt: skip
        """Token ids of one caption per image (start token first)."""


@runtime_checkable
class ImageGenerator(Protocol):
    """A model that draws images for captions (the text-to-image task): what R-precision needs."""

    def generate_images(self, input_ids: Any, attention_mask: Any = None, temperature: float = 1.0,
                        top_k: int | None = None, generator: Any = None) -> Any:  # fmt: skip
        """``(B, L)`` caption ids (+ mask) → ``(B, C, H, W)`` images in the run's normalised space."""


@dataclass
class EvalOptions:
    """Options of one evaluation given on the command line (``convergent eval NAME RUN``); the
    defaults are the command line's."""

    split: str = "test"
    """zero-shot / retrieval: the split evaluated."""
    classes: Sequence[str] | None = None
    """zero-shot: class names (None: the data's classes)."""
    templates: Sequence[str] | None = None
    """zero-shot: prompt templates with ``{}`` for the class name (None: the built-in ones)."""
    ks: Sequence[int] = (1, 5, 10)
    """retrieval: the k of Recall@k."""
    gallery: str | None = None
    """retrieval: write a picture (PNG + HTML) of the top-5 results here; r-precision: a PNG of
    the generated images."""
    clip: str | None = None
    """r-precision: the CLIP run (trained on the training split) that judges the generated images."""
    candidates: int = 100
    """r-precision: captions each generated image is ranked among (its own and random others)."""
    max_images: int | None = 100
    """r-precision: held-out captions drawn (None: all)."""
    top_k: int | None = None
    """r-precision: top-k of the sampling (None: the whole codebook)."""


@dataclass
class EvalContext:
    """Everything the evaluations of one subject may use; what is not there is None."""

    cfg: RunConfig
    """The config: ``data`` (how to read and normalise the data), ``eval`` (probe settings),
    ``trainer.seed``."""
    provides: frozenset[str]
    """What the subject offers (requirement names of :mod:`convergent.evaluation.registry`),
    declared by the workflow that built the context."""
    backbone: Any = None
    """The encoder (a backbone), for frozen features."""
    task: Any = None
    """The run's whole task (None when only an encoder is evaluated)."""
    tokenizer: Any = None
    """The run's tokenizer (None for data without text)."""
    train_set: Any = None
    """The labelled training split (frozen-feature probes)."""
    test_set: Any = None
    """The held-out split (frozen-feature probes)."""
    open_split: Callable[..., Any] | None = None
    """``open_split(split, heldout_only=False, tokenized=False)``: split ``split`` of
    ``cfg.data`` (an error when the data has no such split; None when ``heldout_only`` and the
    split is not held out); ``tokenized``: collated with ``tokenizer``."""
    open_run: Callable[[str], Any] | None = None
    """``open_run(path)``: ``(task, tokenizer, config)`` of another pre-training run (the CLIP run
    that judges R-precision)."""
    options: EvalOptions = field(default_factory=EvalOptions)
    """Options from the command line."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Shared by the evaluations of this context (kNN and the linear probe share features)."""
