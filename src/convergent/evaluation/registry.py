"""Evaluation registry. Torch-free: one line per evaluation names its entry point lazily,
what it needs of the subject, and whether it belongs to the default evaluation.

    register_evaluation("knn", "convergent.evaluation.probes:evaluate_knn", (LABELLED,),
                        "kNN accuracy of frozen features ...", default=True, switch="knn")

An entry point takes an :class:`~convergent.evaluation.context.EvalContext` and returns a flat
dict of results. The default evaluation — the end of ``convergent pretrain`` and
``convergent eval ENCODER`` — runs, in the order of registration, every ``default`` entry
whose ``switch`` (a boolean field of ``EvalConfig``) is on and whose needs the subject
provides; ``convergent eval NAME RUN`` runs one entry, and says what is missing when the
subject does not provide what it needs. ``convergent list evaluations`` lists them.
"""

import time
from dataclasses import dataclass
from typing import Any

from convergent.config import EvalConfig
from convergent.evaluation.context import EvalContext
from convergent.registry import Registry, load_target

RUN = "run"
LABELLED = "labelled"
IMAGE_TEXT = "image-text"
LANGUAGE_MODEL = "language-model"
TOKENIZER = "tokenizer"
IMAGE_TOKENIZER = "image-tokenizer"
CAPTIONER = "captioner"
IMAGE_GENERATOR = "image-generator"
REQUIREMENTS: dict[str, str] = {
    RUN: "a pre-training run directory (its whole task, not only its encoder)",
    LABELLED: "labelled data: a map-style training split with classes and a held-out test split",
    IMAGE_TEXT: "an image-text model that embeds both (encode_image / encode_text: a clip run)",
    LANGUAGE_MODEL: "a language-model task (mlm, causal-lm)",
    TOKENIZER: "the run's tokenizer (RUN/tokenizer, or data.tokenizer in its config.yaml)",
    IMAGE_GENERATOR: "a model that draws images for captions (generate_images: a text-to-image run)",
    CAPTIONER: "a captioner that writes a caption for an image (generate: a caption run)",
    IMAGE_TOKENIZER: "an image tokenizer that encodes images to code ids and decodes them (encode / decode: a vqvae run)",
}
"""Requirement name → what it means; a context's ``provides`` uses these names."""


@dataclass(frozen=True)
class EvaluationEntry:
    name: str
    target: str | None
    """``"module:function"`` taking an ``EvalContext``; None for an evaluation that trains and
    is therefore a verb of its own (see ``description``)."""
    needs: tuple[str, ...]
    """Requirements (keys of :data:`REQUIREMENTS`) the subject must provide."""
    description: str
    default: bool = False
    """Part of the default evaluation (end of a pre-training run, ``convergent eval ENCODER``)."""
    switch: str | None = None
    """Boolean field of ``EvalConfig`` that turns this default evaluation on and off."""


_EVALUATIONS: Registry[EvaluationEntry] = Registry("evaluation")


def register_evaluation(name: str, target: str | None, needs: tuple[str, ...], description: str,
                        default: bool = False, switch: str | None = None) -> None:  # fmt: skip
    unknown = [n for n in needs if n not in REQUIREMENTS]
    if unknown:
        raise ValueError(f"evaluation {name!r}: unknown requirements {unknown}; known: {sorted(REQUIREMENTS)}")
    _EVALUATIONS.add(name, EvaluationEntry(name, target, tuple(needs), description, default, switch))


register_evaluation("knn", "convergent.evaluation.probes:evaluate_knn", (LABELLED,), "kNN accuracy of frozen features: temperature-weighted vote of the k nearest training samples (--eval.knn_k, --eval.knn_temperature, --eval.layer, --eval.pooling)", default=True, switch="knn")
register_evaluation("linear-probe", "convergent.evaluation.probes:evaluate_linear_probe", (LABELLED,), "linear classifier trained on standardised frozen features: train and test accuracy (--eval.probe_epochs, --eval.probe_lr)", default=True, switch="linear_probe")
register_evaluation("finetune", None, (LABELLED,), "end-to-end fine-tuning with a classification head, top-1 test accuracy; it trains, so it is a verb of its own: convergent finetune --model.init RUN")
register_evaluation("zero-shot", "convergent.evaluation.image_text:evaluate_zero_shot", (RUN, IMAGE_TEXT, TOKENIZER), "zero-shot classification: an image takes the class whose prompt embeddings are closest (--classes, --templates, --split)")
register_evaluation("retrieval", "convergent.evaluation.image_text:evaluate_retrieval", (RUN, IMAGE_TEXT, TOKENIZER), "image-to-text and text-to-image Recall@k over the pairs of a split (--ks, --split, --gallery)")
register_evaluation("reconstruction", "convergent.evaluation.reconstruction:evaluate_reconstruction", (RUN, IMAGE_TOKENIZER), "image tokenizer on the held-out images: PSNR and MSE of decode(encode(x)) in [0, 1] pixels, codebook usage and code perplexity over the split", default=True)
register_evaluation("captioning", "convergent.evaluation.captioning:evaluate_captioning", (RUN, CAPTIONER, TOKENIZER), "captions of the held-out images (beam search of the run's task settings) against their reference captions: BLEU-4 (sacrebleu) and CIDEr (pycocoevalcap)", default=True)
register_evaluation("r-precision", "convergent.evaluation.r_precision:evaluate_r_precision", (RUN, IMAGE_GENERATOR, TOKENIZER), "text-to-image: an image drawn for each held-out caption; does a CLIP run (--clip RUN) rank that caption first among --candidates (its own and random other held-out captions)? Against chance 1 / candidates; --gallery writes the images")
register_evaluation("language-model", "convergent.evaluation.language:evaluate_language_model", (RUN, LANGUAGE_MODEL, TOKENIZER), "masked- or next-token accuracy, cross-entropy and perplexity on the validation split (the test split without one)", default=True)


def names() -> list[str]:
    """Registered evaluation names, sorted."""
    return _EVALUATIONS.names()


def entry(name: str) -> EvaluationEntry:
    """The registry entry of ``name``; KeyError with close matches if unknown."""
    return _EVALUATIONS.get(name)


def describe(name: str) -> str:
    return entry(name).description


def missing(name: str, provides: frozenset[str] | set[str]) -> list[str]:
    """The needs of evaluation ``name`` that ``provides`` lacks (empty: it applies)."""
    return [n for n in entry(name).needs if n not in provides]


def switched_on(eval_cfg: EvalConfig) -> list[str]:
    """The default evaluations that ``eval_cfg`` (an ``EvalConfig``) leaves on, in order."""
    return [e.name for e in _EVALUATIONS.entries()
            if e.default and (e.switch is None or getattr(eval_cfg, e.switch))]  # fmt: skip


def default_evaluations(eval_cfg: EvalConfig, provides: frozenset[str] | set[str]) -> list[str]:
    """The default evaluations switched on in ``eval_cfg`` that apply to a subject providing
    ``provides``, in the order of registration."""
    return [n for n in switched_on(eval_cfg) if not missing(n, provides)]


def run_evaluation(name: str, ctx: EvalContext) -> dict[str, Any]:
    """Run evaluation ``name`` on ``ctx`` (imports its module, and torch, only now); a
    ValueError naming what is missing when ``ctx`` does not provide what it needs."""
    e = entry(name)
    if e.target is None:
        raise ValueError(f"evaluation {name!r} is not run by `convergent eval`: {e.description}")
    lacking = missing(name, ctx.provides)
    if lacking:
        raise ValueError(f"evaluation {name!r} needs " + "; ".join(REQUIREMENTS[n] for n in lacking))
    print(f"evaluation: {name} ...", flush=True)  # feedback: a phase can take a while on a CPU
    start = time.perf_counter()
    results = load_target(e.target)(ctx)
    print(f"evaluation: {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    return results
