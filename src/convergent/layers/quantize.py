"""Vector quantisation with an EMA codebook (van den Oord et al. 2017, "Neural Discrete
Representation Learning", appendix; the construction of DeepMind sonnet 2's
``VectorQuantizerEMA``) and random restarts of dead codes (Dhariwal et al. 2020, Jukebox).

Each input vector is replaced by its nearest code (squared Euclidean distance). Training
does not send gradients into the codebook; instead, in :meth:`VectorQuantizer.forward` (as
BatchNorm updates its statistics) the codebook follows zero-debiased exponential moving
averages (sonnet 2's ``ExponentialMovingAverage``: hidden states start at zero and are divided
by ``1 - decay^t``) of the number of vectors assigned to each code and of their sum:

    count  <- decay * count  + (1 - decay) * n_k                 n_k: vectors assigned to code k
    sum    <- decay * sum    + (1 - decay) * sum_{i -> k} x_i
    N_k = count_k / (1 - decay^t),  S_k = sum_k / (1 - decay^t)                 (debiased, step t)
    code_k = S_k / smoothed_k,  smoothed = (N + eps) / (total + K * eps) * total      (Laplace)

Codes whose debiased count ``N_k`` is below ``restart_threshold`` after the update are dead:
they are set to random input vectors of the batch (drawn from the global RNG, so a seeded,
checkpointed run resumes exactly; broadcast from rank 0 under ``torch.distributed``). So with
restarts on, the first training batch initialises every unused code from data, and a code
stays alive while it is chosen about ``restart_threshold`` times per batch. Under
``torch.distributed`` the counts and sums are summed over processes before the update, so
every process holds the same codebook, equal to one process seeing the global batch.

The encoder gets the straight-through gradient (``x + sg(q - x)``) plus the commitment loss
``beta * mean((x - sg(q))^2)``, both from the codes before this batch's update (sonnet).
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    """What :meth:`VectorQuantizer.forward` returns for inputs ``(..., D)``."""

    quantized: torch.Tensor
    """``(..., D)`` the nearest codes, with the straight-through gradient to the inputs."""
    ids: torch.Tensor
    """``(...)`` long: the index of each input's code."""
    commitment: torch.Tensor
    """Scalar: ``beta * mean((x - sg(q))^2)``."""
    perplexity: torch.Tensor
    """Scalar: ``exp(entropy)`` of the batch's code frequencies (global batch under DDP); the
    number of equally used codes it corresponds to, up to ``num_codes``."""
    usage: torch.Tensor
    """Scalar: fraction of the codebook used at least once in the (global) batch."""


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with an EMA-updated codebook of ``num_codes`` x ``dim``."""

    def __init__(
        self,
        num_codes: int,
        dim: int,
        decay: float = 0.99,
        commitment: float = 0.25,
        eps: float = 1e-5,
        restart_threshold: float = 1.0,
    ):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(f"VectorQuantizer needs num_codes >= 2 and dim >= 1, got {num_codes} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer decay must be in [0, 1), got {decay}")
        if commitment < 0 or eps <= 0 or restart_threshold < 0:
            raise ValueError(
                f"VectorQuantizer needs commitment >= 0, eps > 0, restart_threshold >= 0; got {commitment}, "
                f"{eps}, {restart_threshold}"
            )
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.beta, self.eps, self.restart_threshold = decay, commitment, eps, restart_threshold
        self.register_buffer("codebook", torch.randn(num_codes, dim))  # (K, D); sonnet: a unit normal initialiser
        self.register_buffer("ema_count", torch.zeros(num_codes))  # (K,) hidden state, before debiasing
        self.register_buffer("ema_sum", torch.zeros(num_codes, dim))  # (K, D) hidden state
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))  # t, the updates so far

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, decay={self.decay}, commitment={self.beta}, "
                f"restart_threshold={self.restart_threshold}")  # fmt: skip

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Code index ``(N,)`` of each row of ``flat`` ``(N, D)`` (fp32 distances)."""
        flat, codes = flat.float(), self.codebook.float()
        dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)  # (N, K)
        return dist2.argmin(dim=1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Codes ``(..., D)`` of ``ids`` ``(...)``."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_codes):
            raise ValueError(f"code ids must be in [0, {self.num_codes}), got {int(ids.min())}..{int(ids.max())}")
        return F.embedding(ids, self.codebook)

    def forward(self, x: torch.Tensor) -> Quantized:
        if x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer of dim {self.dim} got inputs of shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.dim)  # (N, D)
        ids = self.nearest(flat)  # (N,)
        onehot = F.one_hot(ids, self.num_codes).to(torch.float32)  # (N, K)
        counts = onehot.sum(0)  # (K,)
        q = F.embedding(ids, self.codebook).to(x.dtype).view_as(x)  # the codes before this batch's update (sonnet)
        commitment = self.beta * F.mse_loss(x, q.detach())
        if self.training:
            sums = onehot.T @ flat.detach().float()  # (K, D)
            counts, sums = _all_sum(counts), _all_sum(sums)
            self.update(counts, sums, flat.detach())
        else:
            counts = _all_sum(counts)
        p = counts / counts.sum().clamp_min(1)
        return Quantized(
            quantized=x + (q - x).detach(),
            ids=ids.view(x.shape[:-1]),
            commitment=commitment,
            perplexity=torch.exp(-(p * torch.log(p + 1e-10)).sum()),
            usage=(counts > 0).float().mean(),
        )

    @torch.no_grad()
    def update(self, counts: torch.Tensor, sums: torch.Tensor, flat: torch.Tensor) -> None:
        """One EMA step from the batch's ``counts`` ``(K,)`` and ``sums`` ``(K, D)`` (global);
        dead codes restart from rows of ``flat`` ``(N, D)`` (this process's inputs)."""
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.ema_steps.add_(1)
        debias = 1 - torch.pow(torch.tensor(self.decay, device=self.ema_steps.device), self.ema_steps.float())
        count, total_sum = self.ema_count / debias, self.ema_sum / debias  # (K,), (K, D)
        total = count.sum()
        smoothed = (count + self.eps) / (total + self.num_codes * self.eps) * total  # (K,)
        codebook = total_sum / smoothed.unsqueeze(1)
        if self.restart_threshold > 0:
            dead = count < self.restart_threshold  # (K,)
            if bool(dead.any()):
                codebook = torch.where(dead.unsqueeze(1), self.random_rows(flat), codebook)
        self.codebook.copy_(codebook)

    def random_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """``(K, D)`` rows of ``flat`` in a random order (each row once per round when there
        are fewer than K), drawn from the global RNG; under ``torch.distributed`` rank 0's draw for all."""
        n = flat.shape[0]
        reps = -(-self.num_codes // n)  # ceil: with fewer rows than codes, every row is used
        order = torch.cat([torch.randperm(n, device=flat.device) for _ in range(reps)])[: self.num_codes]
        rows = flat.float()[order].contiguous()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(rows, src=0)
        return rows


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over processes (itself outside ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t
