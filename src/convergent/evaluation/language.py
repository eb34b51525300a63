"""Language-model metrics on held-out text: token accuracy, cross-entropy and perplexity of a
masked (BERT MLM) or causal (next-token) language-model task.

The task does the work: its ``forward(batch)`` returns ``"loss"`` (mean cross-entropy over the
positions it predicts), ``"accuracy"`` (over the same positions) and ``"num_predictions"``
(how many). Batches differ in how many positions they predict, so the split's numbers are
means weighted by ``num_predictions`` (every predicted token counts once), and perplexity is
``exp`` of the weighted mean cross-entropy (per token, in nats) — the mean of per-batch
perplexities would be biased upwards.

MLM draws its mask at random: the pass runs under a fixed seed, so two evaluations of the same
weights on the same data give the same numbers; the global RNG state is saved before and
restored after, so evaluating in the middle of training does not change the training run.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from convergent.evaluation.context import EvalContext
from convergent.evaluation.features import collate_for, evaluating, place, prepare_batch

ACCURACY_NAMES = {"mlm": "masked_token_accuracy", "causal-lm": "next_token_accuracy"}
"""Task name → name of its token accuracy in the results."""


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global CPU RNG (and that of ``device`` when it is an accelerator) with ``seed``
    for the block; the previous states are restored afterwards."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    module = torch.get_device_module(device)
    index = device.index if device.index is not None else module.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type), module.device(index):
        torch.default_generator.manual_seed(seed)
        module.manual_seed(seed)  # this device only: the others' states stay untouched
        yield


def language_model_metrics(
    task: nn.Module,
    dataset,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
) -> dict[str, float | int]:
    """Token accuracy, loss and perplexity of a language-model ``task`` on ``dataset``.

    Args:
        task: an MLM (``name == "mlm"``) or causal-LM (``"causal-lm"``) task whose ``forward``
            returns ``"loss"``, ``"accuracy"`` and ``"num_predictions"``; put in eval mode
            for the pass and restored to its previous mode afterwards.
        dataset: map-style text dataset whose ``collate_fn`` gives the task's batches (else
            ``default_collate``), e.g. the validation split.
        batch_size: sequences per forward pass.
        device: where to run (None: the task's device); the task is moved there.
        max_batches: stop after this many batches (None: the whole dataset).
        seed: seed of the global RNG during the pass (MLM masking), so results are reproducible.
        num_workers: DataLoader workers.

    Returns:
        ``{"masked_token_accuracy" | "next_token_accuracy": in [0, 1], "loss": mean
        cross-entropy per predicted token, "perplexity": exp(loss), "num_predictions": int}``.
    """
    name = task.name
    if name not in ACCURACY_NAMES:
        raise ValueError(
            f"language_model_metrics evaluates {', '.join(map(repr, ACCURACY_NAMES))} tasks, not {name!r}"
        )
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    device = place(task, device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_for(dataset, default=default_collate))
    with evaluating(task), seeded_rng(seed, device):
        loss_sum, correct, count = _weighted_sums(task, loader, device, max_batches)
    if count.item() == 0:
        raise ValueError("language_model_metrics: the task predicted no tokens (empty dataset?)")
    loss = loss_sum / count
    return {
        ACCURACY_NAMES[name]: (correct / count).item(),
        "loss": loss.item(),
        "perplexity": loss.exp().item(),  # inf rather than an error for a diverged model
        "num_predictions": int(count.item()),
    }


def _weighted_sums(
    task: nn.Module, loader: DataLoader, device: torch.device, max_batches: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums over the batches of ``loss * n``, ``accuracy * n`` and ``n`` (n: predicted
    tokens), as float64 scalars on ``device`` (one host sync at the end, not per batch)."""
    zero = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum, correct, count = zero, zero, zero
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out = task(prepare_batch(batch, None, device))
        missing = [k for k in ("loss", "accuracy", "num_predictions") if k not in out]
        if missing:
            raise KeyError(f"{type(task).__name__}.forward must return {', '.join(missing)} for language-model metrics")
        n, loss, acc = (torch.as_tensor(out[k], device=device).detach().to(torch.float64).reshape(())
                        for k in ("num_predictions", "loss", "accuracy"))
        # a batch without predicted tokens has a NaN mean loss: it must add nothing, not NaN
        loss_sum = loss_sum + torch.where(n > 0, loss * n, zero)
        correct = correct + torch.where(n > 0, acc * n, zero)
        count = count + n
    return loss_sum, correct, count


def evaluate_language_model(ctx: EvalContext) -> dict[str, float | int]:
    """The registered ``language-model`` evaluation: :func:`language_model_metrics` of the
    context's task on the validation split of its data (the test split when there is none),
    the keys prefixed with the split (``val_perplexity``); empty without a held-out split."""
    for split in ("val", "test"):
        try:
            data = ctx.open_split(split, heldout_only=True, tokenized=True)
        except (ValueError, KeyError, FileNotFoundError):
            continue
        if data is not None:
            found = language_model_metrics(ctx.task, data, batch_size=ctx.cfg.data.batch_size)
            return {f"{split}_{k}": v for k, v in found.items()}
    return {}
