"""Contrastive losses: InfoNCE, NT-Xent, CLIP's symmetric image–text loss and SigLIP's
sigmoid loss, distributed-aware.

* :func:`info_nce` — cross-entropy of scaled similarities of queries against keys, the
  positive of query ``i`` being key ``i + offset``;
* :func:`nt_xent` — SimCLR's NT-Xent (Chen et al., 2020): two views of ``N`` samples, each
  of the ``2N`` embeddings against the ``2N - 1`` others, its positive the other view;
* :func:`clip_loss` — CLIP's symmetric loss (Radford et al., 2021, Fig. 3): the mean of the
  image→text and text→image InfoNCE over a batch of pairs;
* :func:`siglip_loss` — SigLIP's pairwise sigmoid loss (Zhai et al., 2023), with the
  paper's chunked ring exchange of text features under ``torch.distributed`` instead of a
  gather;
* :func:`gather_features` — all-gather ``(B, D)`` features of every process into ``(W·B, D)``;
  :func:`neighbour_exchange` — pass a tensor one process along a ring, with gradient.

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


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, distributed: bool = True) -> torch.Tensor:
    """SimCLR's NT-Xent (normalised temperature-scaled cross-entropy; Chen et al., 2020, eq. 1)
    of two views ``z1``, ``z2`` ``(B, D)`` of the same ``B`` samples, row ``i`` of each.

    The ``2N`` embeddings (L2-normalised here: the "N" of NT-Xent, ``hidden_norm`` of the
    official code) are scored against each other, ``z_a·z_b / τ``; each one's positive is the
    other view of its sample, the ``2N − 2`` others are negatives and its similarity with
    itself is excluded. The loss is the mean cross-entropy over the ``2N`` rows (the paper's
    ``1/2N Σ_k [l(2k−1, 2k) + l(2k, 2k−1)]``; the official code's ``mean(loss_a + loss_b)`` is
    twice this). Computed in float32.

    Under ``torch.distributed`` (``distributed`` and a process group of ``W`` processes with
    ``B`` samples each, ``N = W·B``) both views are gathered with gradient
    (:func:`gather_features`) and the local ``2B`` rows are scored against all ``2N``
    columns, as the official code's ``tpu_cross_replica_concat``: each process's loss is the
    mean over its rows, the mean over processes is the global loss, and DDP's gradient
    average is exactly the single-process gradient of the global batch.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"the two views {tuple(z1.shape)} and {tuple(z2.shape)} must both be (B, D)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rank, world_size = world() if distributed else (0, 1)
    b = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        if world_size > 1:
            all1, all2 = gather_features(z1), gather_features(z2)  # (N, D) each
        else:
            all1, all2 = z1, z2
        n = all1.shape[0]
        logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).T / temperature  # (2B, 2N)
        own = _positives(b, rank * b, z1.device)  # (B,): the local samples' columns in view 1
        self_col, positive = torch.cat([own, own + n]), torch.cat([own + n, own])  # (2B,) each
        is_self = self_col[:, None] == torch.arange(2 * n, device=z1.device)  # (2B, 2N)
        return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), positive)


def siglip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    distributed: bool = True,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023, Alg. 1) over pairs ``(image[i],
    text[i])``, L2-normalised features ``(B, D)`` each:

        -1/B · Σ_i Σ_j log σ(z_ij (t · x_i·y_j + b)),   z_ij = +1 if i = j else −1,

    with ``t`` = ``logit_scale`` (SigLIP learns ``t' = log t``) and ``b`` = ``logit_bias``
    (as HF ``SiglipModel``'s and open_clip's ``SigLipLoss``: the sum over all pairs divided
    by the number of images). Computed in float32.

    Under ``torch.distributed`` (``distributed`` and ``W > 1`` processes of ``B`` pairs) the
    features are not gathered: each process keeps its images and the text chunks travel
    around a ring (paper Sec. 3.3, "efficient 'chunked' implementation"): the loss of the
    local images against the local texts (with the positives), then ``W − 1`` times against
    the chunk received from the left neighbour (negatives only; the chunk is passed on to the
    right at the next step). Each process's loss is its images' share, ``Σ_local rows / B``;
    the mean over processes is the loss of the global batch of ``N = W·B`` pairs, and the
    exchange passes each chunk's gradient back to the process that computed it
    (:func:`neighbour_exchange`), so DDP's gradient average is the single-process one.
    Memory: ``B x B`` logits per step instead of ``B x N``.
    """
    if image.ndim != 2 or image.shape != text.shape:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} features must both be (B, D)")
    rank, world_size = world() if distributed else (0, 1)
    with torch.autocast(image.device.type, enabled=False):
        image, text = image.float(), text.float()
        loss = _sigmoid_pair_loss(image, text, logit_scale, logit_bias, positives=True)
        right, left = (rank + 1) % world_size, (rank - 1) % world_size
        visiting = text
        for _ in range(world_size - 1):  # the chunk of rank - 1, then rank - 2, ...
            visiting = neighbour_exchange(visiting, to_rank=right, from_rank=left)
            loss = loss + _sigmoid_pair_loss(image, visiting, logit_scale, logit_bias, positives=False)
        return loss / image.shape[0]


def _sigmoid_pair_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, bias: torch.Tensor | float, positives: bool
) -> torch.Tensor:
    """``-Σ_ij log σ(z_ij · logits_ij)`` of one chunk: ``z`` = 2·I − 1 (the diagonal pairs
    match: ``positives``) or −1 everywhere (another process's texts)."""
    logits = scale * image @ text.T + bias  # (B, B')
    signs = -torch.ones_like(logits)
    if positives:
        signs = signs + 2 * torch.eye(logits.shape[0], logits.shape[1], device=logits.device)
    return -F.logsigmoid(signs * logits).sum()


def neighbour_exchange(x: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
    """Send ``x`` to process ``to_rank`` and return the same-shaped tensor that ``from_rank``
    sends to this one (one ``dist.batch_isend_irecv`` of a send and a receive). The gradient
    flows back along the same edge: the gradient of the received tensor goes back to
    ``from_rank``, and ``x`` gets the gradient ``to_rank`` computed for what it received.
    Every process of the group must call it with matching ranks (a ring: right and left)."""
    return _NeighbourExchange.apply(x, to_rank, from_rank)


class _NeighbourExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
        ctx.to_rank, ctx.from_rank = to_rank, from_rank
        return _send_receive(x, to_rank, from_rank)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # the reverse edge: our received tensor's gradient goes to its sender
        return _send_receive(grad, ctx.from_rank, ctx.to_rank), None, None


def _send_receive(x: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
    x = x.contiguous()
    received = torch.empty_like(x)
    ops = [dist.P2POp(dist.isend, x, to_rank), dist.P2POp(dist.irecv, received, from_rank)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


def _positives(n: int, offset: int, device: torch.device) -> torch.Tensor:
    return torch.arange(offset, offset + n, device=device)  # (n,)
