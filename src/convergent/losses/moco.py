"""MoCo v3's contrastive loss (Chen, Xie, He, 2021, Alg. 1; official ``moco/builder.py``).

* :func:`ctr` — InfoNCE of L2-normalised queries against keys, every other key in the
  (global) batch a negative, scaled by ``2τ``;
* :func:`symmetric_ctr` — ``ctr(q1, k2) + ctr(q2, k1)``, the loss of two views.

Distributed-aware: in a process group of ``W`` processes each holding ``B`` queries and
keys, the keys are all-gathered ``(W·B, D)`` and the positive of local query ``i`` is key
``rank·B + i``. Keys gathered from other processes carry no gradient (MoCo's keys come from
the momentum encoder and need none); the local slice keeps its autograd history.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def ctr(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """``CrossEntropy(q̂ · k̂ᵀ / τ, positives) · 2τ`` for queries and keys ``(B, D)``, with ``q̂``,
    ``k̂`` L2-normalised rows and the positive of query ``i`` its own key ``i`` (offset by
    ``rank·B`` under ``torch.distributed``). The ``2τ`` factor makes the gradient's scale
    independent of ``τ`` (paper, footnote of Alg. 1). Computed in float32.

    Returns:
        scalar: the mean over the local queries (DDP's gradient average then gives the mean
        over the global batch).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k.shape)} must both be (B, D)")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    keys, offset = gather_keys(k)  # (W·B, D), rank·B
    logits = q @ keys.T / temperature  # (B, W·B)
    labels = torch.arange(q.shape[0], device=q.device) + offset  # (B,)
    return F.cross_entropy(logits, labels) * (2 * temperature)


def symmetric_ctr(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``: each view's queries against the other view's keys."""
    return ctr(q1, k2, temperature) + ctr(q2, k1, temperature)


def gather_keys(k: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(keys of every process concatenated in rank order (W·B, D), rank·B)``; ``(k, 0)``
    outside a process group. Other processes' keys are detached; the local ones are ``k``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return k, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(k) for _ in range(world)]
    dist.all_gather(parts, k.detach().contiguous())
    parts[rank] = k  # keep the local keys' gradient path
    return torch.cat(parts), rank * k.shape[0]
