"""Contrastive losses: InfoNCE and CLIP's symmetric image–text loss, distributed-aware.

* :func:`info_nce` — cross-entropy of scaled similarities of queries against keys, the
  positive of query ``i`` being key ``i + offset``;
* :func:`clip_loss` — CLIP's symmetric loss (Radford et al., 2021, Fig. 3): the mean of the
  image→text and text→image InfoNCE over a batch of pairs;
* :func:`gather_features` — all-gather ``(B, D)`` features of every process into ``(W·B, D)``.

Under ``torch.distributed`` (``W`` processes, ``B`` pairs each, the global batch
``N = W·B``) :func:`clip_loss` gathers both modalities, so every pair is contrasted with all
``N``, as if one process held the whole batch. The gather keeps the gradient
(``torch.distributed.nn.functional.all_gather``, whose backward sums, for each process's own
rows, the gradients every process computed for them): each process's loss is then the
global loss (or, with ``local_loss``, its share of it) and DDP's average of the parameter
gradients is exactly the single-process gradient of the global batch. open_clip's
``gather_with_grad=False`` — features of other processes detached, the local ones put back
— loses the gradient that other processes' losses send to this process's rows, so the
update is not the global batch's (1/W of it for the full matrix; cross terms missing with
``local_loss``); it is here as ``with_grad=False`` for comparisons and tests, and for MoCo's
keys (:mod:`convergent.losses.moco`), which come from a momentum encoder and need none.

Features are expected L2-normalised; the losses run in float32 with autocast off (a logit
scale of up to 100 turns bf16's rounding of a cosine into errors of ~0.4 in a logit).
"""

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Features ``(B, D)`` of every process concatenated in rank order, ``(W·B, D)``; ``x``
    itself outside a process group. Every process must pass the same shape.

    ``with_grad``: the gradient flows back to the process that computed each row (see the
    module docstring); otherwise other processes' rows are constants and only the local
    rows (``x``, put back in place) keep their autograd history.
    """
    rank, world_size = world()
    if world_size == 1:
        return x
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def info_nce(
    query: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor | float, offset: int = 0
) -> torch.Tensor:
    """``mean_i -log softmax_j(s · q_i·k_j)[i + offset]`` for queries ``(B, D)`` and keys
    ``(N, D)``, ``N >= offset + B``: the positive of query ``i`` is key ``i + offset``, every
    other key a negative. ``logit_scale`` ``s`` is the inverse temperature (scalar)."""
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {tuple(query.shape)} and keys {tuple(keys.shape)} must be (B, D) and (N, D)")
    if offset + query.shape[0] > keys.shape[0]:
        raise ValueError(f"{query.shape[0]} queries at offset {offset} need at least {offset + query.shape[0]} keys")
    with torch.autocast(query.device.type, enabled=False):
        logits = logit_scale * query.float() @ keys.float().T  # (B, N)
        return F.cross_entropy(logits, _positives(query.shape[0], offset, query.device))


class ClipLossOutput(NamedTuple):
    loss: torch.Tensor
    """Scalar: mean of the image→text and text→image cross-entropies."""
    logits_per_image: torch.Tensor
    """``(M, N)``: scaled similarities of images (rows) to all gathered texts; ``M`` = N, or
    the local B with ``local_loss``."""
    logits_per_text: torch.Tensor
    """``(M, N)``: scaled similarities of texts (rows) to all gathered images."""
    labels: torch.Tensor
    """``(M,)``: the column of each row's positive."""


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    local_loss: bool = False,
    distributed: bool = True,
    gather_with_grad: bool = True,
) -> ClipLossOutput:
    """CLIP's symmetric InfoNCE over pairs ``(image[i], text[i])``, features ``(B, D)`` each.

    Args:
        image, text: L2-normalised embeddings of the local pairs.
        logit_scale: the inverse temperature (scalar; CLIP learns its log).
        local_loss: under ``torch.distributed``, score only the local B images and texts
            against all N gathered ones (open_clip's ``local_loss``): the loss is this
            process's share, whose average over processes is the global loss; the gradient
            is the same, for ``B·N`` instead of ``N²`` logits per process.
        distributed: gather across the default process group when one is initialised
            (False: score the local batch alone, e.g. an evaluation on one process).
        gather_with_grad: see :func:`gather_features`; keep True for training.
    """
    if image.ndim != 2 or image.shape != text.shape:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} features must both be (B, D)")
    rank, world_size = world() if distributed else (0, 1)
    if world_size > 1:
        all_image = gather_features(image, gather_with_grad)  # (N, D)
        all_text = gather_features(text, gather_with_grad)
    else:
        all_image, all_text = image, text
    with torch.autocast(image.device.type, enabled=False):
        if local_loss and world_size > 1:
            logits_per_image = logit_scale * image.float() @ all_text.float().T  # (B, N)
            logits_per_text = logit_scale * text.float() @ all_image.float().T  # (B, N)
            labels = _positives(image.shape[0], rank * image.shape[0], image.device)
        else:
            logits_per_image = logit_scale * all_image.float() @ all_text.float().T  # (N, N)
            logits_per_text = logits_per_image.T
            labels = _positives(all_image.shape[0], 0, image.device)
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return ClipLossOutput(loss, logits_per_image, logits_per_text, labels)


def _positives(n: int, offset: int, device: torch.device) -> torch.Tensor:
    return torch.arange(offset, offset + n, device=device)  # (n,)
