"""Evaluation workflows: the subject of an evaluation assembled into an
:class:`~convergent.evaluation.context.EvalContext`, then the evaluations of
:mod:`convergent.evaluation.registry` run on it.

Subjects: a saved encoder with its labelled data (``convergent eval ENCODER``, ``convergent
eval knn RUN``: :func:`run_eval`), a pre-training run's whole task (``convergent eval
zero-shot RUN``: :func:`run_on_run`), and the end of a pre-training run
(:func:`evaluate_end_of_run`). What a subject provides is declared here, once
(:func:`provided`); the registry decides what applies.
"""

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from convergent.backbones.pretrained import from_pretrained
from convergent.config import EvalRunConfig, PretrainConfig, RunConfig
from convergent.data.registry import build_dataset
from convergent.evaluation import registry
from convergent.evaluation.context import (
    Captioner,
    EvalContext,
    EvalOptions,
    ImageGenerator,
    ImageTextModel,
    ImageTokenizer,
)
from convergent.evaluation.language import ACCURACY_NAMES
from convergent.evaluation.report import format_report
from convergent.workflows.assemble import build_datasets, load_task_from_run
from convergent.workflows.runs import resolve_encoder
from convergent.workflows.text import attach_tokenizer, prepare_text


def provided(task: Any, tokenizer: Any, train_set: Any, test_set: Any) -> frozenset[str]:
    """What a subject offers the evaluations, in the requirement names of the registry."""
    found = set()
    if _labelled(train_set, test_set) == "map-style":
        found.add(registry.LABELLED)
    if task is not None:
        found.add(registry.RUN)
        if isinstance(task, ImageTextModel):
            found.add(registry.IMAGE_TEXT)
        if isinstance(task, ImageTokenizer):
            found.add(registry.IMAGE_TOKENIZER)
        if isinstance(task, Captioner):
            found.add(registry.CAPTIONER)
        if isinstance(task, ImageGenerator):
            found.add(registry.IMAGE_GENERATOR)
        if task.name in ACCURACY_NAMES:
            found.add(registry.LANGUAGE_MODEL)
    if tokenizer is not None:
        found.add(registry.TOKENIZER)
    return frozenset(found)


def _labelled(train_set: Any, test_set: Any) -> str | None:
    """``"map-style"`` or ``"streamed"`` (the training split) when the data has classes and a
    held-out split; None otherwise."""
    if test_set is None or not train_set.classes:
        return None
    return "streamed" if train_set.streamed else "map-style"


def split_opener(cfg: RunConfig, tokenizer: Any = None) -> Callable[..., Any]:
    """``open_split`` of an :class:`EvalContext`: splits of ``cfg.data``."""

    def open_split(split: str, heldout_only: bool = False, tokenized: bool = False):
        data = build_dataset(cfg.data.name, split, root=cfg.data.root, img_size=cfg.data.img_size,
                             in_chans=cfg.data.in_chans, max_image_pixels=cfg.data.max_image_pixels,
                             verify=cfg.data.verify)  # fmt: skip
        if heldout_only and not data.heldout:
            return None
        if tokenized:
            attach_tokenizer(tokenizer, cfg.data.max_length, data)
        return data

    return open_split


def default_names(ctx: EvalContext) -> list[str]:
    """The default evaluations of ``ctx`` (switched on in ``cfg.eval``, applicable); a note
    when the probes are on but the training split is streamed."""
    wanted = registry.switched_on(ctx.cfg.eval)
    if any(registry.LABELLED in registry.entry(n).needs for n in wanted):
        if _labelled(ctx.train_set, ctx.test_set) == "streamed":
            print("note: the training split is streamed; kNN / linear probe need a map-style one: no probes")
    return registry.default_evaluations(ctx.cfg.eval, ctx.provides)


def evaluate(ctx: EvalContext, names: Iterable[str]) -> dict:
    """The results of the evaluations ``names`` on ``ctx``, merged in order."""
    results: dict = {}
    for name in names:
        results.update(registry.run_evaluation(name, ctx))
    return results


def evaluate_end_of_run(cfg: PretrainConfig, task: Any, tokenizer: Any, train_set: Any, test_set: Any) -> dict:
    """The default evaluation of a pre-training run that just finished (probes of its
    encoder on the labelled splits, language-model metrics of a language-model task, ...)."""
    provides = provided(task, tokenizer, train_set, test_set)
    ctx = EvalContext(cfg, provides, backbone=task.backbone, task=task, tokenizer=tokenizer, train_set=train_set,
                      test_set=test_set, open_split=split_opener(cfg, tokenizer))  # fmt: skip
    return evaluate(ctx, default_names(ctx))


def evaluate_encoder(cfg: RunConfig, backbone: Any, train_set: Any, test_set: Any, tokenizer: Any = None,
                     names: list[str] | None = None) -> dict:  # fmt: skip
    """Evaluations ``names`` (None: the default ones) of an encoder alone (no task) on its
    labelled splits, e.g. the probes of a randomly initialised encoder."""
    ctx = EvalContext(cfg, provided(None, tokenizer, train_set, test_set), backbone=backbone, tokenizer=tokenizer,
                      train_set=train_set, test_set=test_set, open_split=split_opener(cfg, tokenizer))  # fmt: skip
    return evaluate(ctx, default_names(ctx) if names is None else names)


def run_eval(cfg: EvalRunConfig, encoder: str | Path, out: str | Path | None = None, names: list[str] | None = None) -> dict:
    """Evaluations ``names`` (None: the default ones, kNN and linear probe) of the encoder at
    ``encoder`` (an encoder or run directory) on ``cfg.data`` with ``cfg.eval``."""
    enc_dir, _ = resolve_encoder(encoder)
    backbone = from_pretrained(enc_dir).eval()
    train_set, test_set = build_datasets(cfg)
    tokenizer = prepare_text(cfg, None, train_set, test_set, encoder_dir=enc_dir)
    if test_set is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no labelled test split to evaluate on")
    results = {"encoder": str(enc_dir), "data": train_set.source}
    results.update(evaluate_encoder(cfg, backbone, train_set, test_set, tokenizer, names))
    return _report(results, out, "evaluation" if names is None else ", ".join(names))


def run_on_run(name: str, run_dir: str | Path, options: EvalOptions | None = None, out: str | Path | None = None,
               data: dict | None = None) -> dict:  # fmt: skip
    """Evaluation ``name`` of the whole task of the pre-training run ``run_dir`` (``data``:
    data settings that replace the run's, e.g. ``{"name": ..., "root": ...}``)."""
    task, tokenizer, cfg = load_task_from_run(run_dir)
    if data:
        fields = {f.name for f in dataclasses.fields(cfg.data)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown data options {unknown}; expected fields of the data config: {sorted(fields)}")
        cfg.data = dataclasses.replace(cfg.data, **data)
    provides = provided(task, tokenizer, None, None)
    lacking = registry.missing(name, provides)
    if lacking:
        needs = "; ".join(registry.REQUIREMENTS[n] for n in lacking)
        raise ValueError(f"{run_dir} trained task {task.name!r}; {name} needs {needs}")
    ctx = EvalContext(cfg, provides, backbone=task.backbone, task=task, tokenizer=tokenizer,
                      open_split=split_opener(cfg, tokenizer), open_run=load_task_from_run,
                      options=options or EvalOptions())  # fmt: skip
    return _report({"run": str(run_dir), **registry.run_evaluation(name, ctx)}, out, name)


def _report(results: dict, out: str | Path | None, title: str) -> dict:
    """Write ``results`` as JSON to ``out`` (when given) and print them as a table."""
    if out is not None:
        Path(out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(format_report(results, title))
    return results
