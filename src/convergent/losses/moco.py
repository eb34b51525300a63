"""MoCo v3's contrastive loss (Chen, Xie, He, 2021, Alg. 1; official ``moco/builder.py``).

* :func:`ctr` — InfoNCE of L2-normalised queries against keys, every other key in the
  (global) batch a negative, scaled by ``2τ``;
* :func:`symmetric_ctr` — ``ctr(q1, k2) + ctr(q2, k1)``, the loss of two views.

Distributed-aware: in a process group of ``W`` processes each holding ``B`` queries and
keys, the keys are all-gathered ``(W·B, D)`` and the positive of local query ``i`` is key
``rank·B + i`` (:func:`~convergent.losses.contrastive.gather_features` with
``with_grad=False`` and :func:`~convergent.losses.contrastive.info_nce`). Keys gathered from
other processes carry no gradient (MoCo's keys come from the momentum encoder and need
none); the local slice keeps its autograd history.
"""

import torch
import torch.nn.functional as F

from convergent.losses.contrastive import gather_features, info_nce, world


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
    keys = gather_features(F.normalize(k.float(), dim=1), with_grad=False)  # (W·B, D)
    rank, _ = world()
    return info_nce(q, keys, 1.0 / temperature, offset=rank * q.shape[0]) * (2 * temperature)


def symmetric_ctr(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``: each view's queries against the other view's keys."""
    return ctr(q1, k2, temperature) + ctr(q2, k1, temperature)
