"""Multi-head self-attention through ``scaled_dot_product_attention``.

One module serves every backbone:

* BERT / ViT / Swin V1: scaled dot-product attention, optional additive bias
  (Swin's relative position bias plus the shifted-window mask) and key-padding mask;
* Swin V2: scaled cosine attention. q and k are L2-normalised, the learned per-head logit
  scale (clamped at log(100)) is folded into q and attention runs with ``scale=1``.

Inputs may carry several leading batch dimensions, ``(..., N, C)``: Swin passes windows as
``(B, num_windows, N, C)`` so a per-window bias of shape ``(num_windows, heads, N, N)``
broadcasts over the batch without being copied. Such inputs (more than 4-d once split into
heads) attend through the written-out ``softmax(q kᵀ + bias) v``: SDPA's fused kernels take
4-d inputs only, and its math fallback would add a fully-masked-row guard per call. Masks
there must be finite (Swin's are -100; padding uses the dtype's minimum).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from convergent.layers.linear import Linear, linear
from convergent.layers.unpad import Unpadded

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
TINY = torch.finfo(torch.float32).tiny
"""The smallest normal fp32 number (1.2e-38): the windowed softmax zeroes probabilities at or below it."""


class KVCache:
    """Keys and values of the positions a causal model has already processed, one entry per
    block, so that each new token is projected once (incremental decoding). Filled by the first
    call (the prompt, causal), then extended one token per call; :meth:`reorder` follows beam
    search's choice of rows."""

    def __init__(self, num_blocks: int):
        self.blocks: list[dict[str, torch.Tensor]] = [{} for _ in range(num_blocks)]

    @property
    def length(self) -> int:
        """Positions held (0 before the first call)."""
        first = self.blocks[0] if self.blocks else {}
        return first["k"].shape[-2] if "k" in first else 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` ``(B',)`` of the batch (beam search), in that order."""
        for kv in self.blocks:
            for name in list(kv):
                kv[name] = kv[name].index_select(0, rows)


class Attention(nn.Module):
    """Self-attention with a fused qkv projection.

    Args:
        dim: token width.
        num_heads: number of heads; ``dim`` must be divisible by it.
        qkv_bias: learn biases for q, k, v.
        key_bias: when ``qkv_bias``, whether k has a bias too. Swin V2 learns only q and v
            biases (``q_bias``/``v_bias``), the key bias is fixed at zero.
        cosine: Swin V2 scaled cosine attention with a learned per-head logit scale.
        attn_drop: dropout on attention probabilities (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        key_bias: bool = True,
        cosine: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cosine = cosine
        self.attn_drop = attn_drop
        separate_bias = qkv_bias and not key_bias
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias and key_bias)
        if separate_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        if cosine:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        unpadded: Unpadded | None = None,
        kv: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend over the second-to-last dimension.

        Args:
            x: ``(..., N, C)`` tokens.
            bias: additive float bias broadcastable to ``(..., heads, N, N)``.
            key_padding_mask: ``(B, N)`` bool, True for real tokens, False for padding
                (only with a single leading batch dimension).
            causal: each token attends to itself and earlier tokens only.
            unpadded: ``x`` is the packed real tokens ``(T, C)`` of a ``(B, L)`` batch
                (:class:`~convergent.layers.unpad.Unpadded`); the projections run on the
                ``T`` rows, attention on ``(B, L)`` with ``key_padding_mask``; returns ``(T, C)``.
            kv: this block's entry of a :class:`KVCache` (causal, ``(B, N, C)`` inputs): the keys
                and values of earlier calls are prepended and this call's appended; after the
                first call ``x`` must be one new token per row.
        """
        qkv = linear(x, self.qkv.weight, self._qkv_bias())
        if unpadded is not None:
            qkv = unpadded.unpack(qkv)  # (B, L, 3C), zeros at padding (masked as keys)
        *lead, n, c = qkv.shape
        c //= 3
        qkv = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).movedim(-3, 0).transpose(-3, -2)
        if len(lead) > 1:
            # windows (written-out attention): one copy to (3, ..., H, N, Dh) order, since the
            # batched products of strided 5-d operands ran ~4x slower than of contiguous ones
            # (q kᵀ of Swin V2 Tiny's first stage: 8.3 against 1.8 ms, AVX2 kernels, 1 thread)
            qkv = qkv.contiguous()
        q, k, v = qkv.unbind(0)  # (..., H, N, Dh)
        scale = None
        if self.cosine:
            logit_scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (H, 1, 1)
            q = F.normalize(q, dim=-1) * logit_scale
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if kv is not None:
            if "k" in kv:
                if n != 1 or key_padding_mask is not None or bias is not None:
                    raise ValueError("a filled KV cache takes one new token per row, without masks or bias")
                k, v = torch.cat([kv["k"], k], dim=-2), torch.cat([kv["v"], v], dim=-2)
                causal = False  # the one new query sees every cached position and itself
            kv["k"], kv["v"] = k, v
        mask = _combine_masks(bias, key_padding_mask, causal, n, q.dtype, q.device)
        dropout = self.attn_drop if self.training else 0.0
        if q.dim() > 4 and not causal:
            out = _windowed_attention(q, k, v, mask, dropout, scale)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and mask is None, scale=scale
            )
        out = out.transpose(-3, -2).reshape(*lead, n, c)  # (..., N, C)
        if unpadded is not None:
            out = unpadded.pack(out)  # (T, C)
        return self.proj_drop(self.proj(out))


class CrossAttention(nn.Module):
    """Multi-head attention of tokens ``(B, N, C)`` over another sequence ``(B, M, C)`` (an
    encoder's states: a decoder's cross-attention, HF ``BertLayer.crossattention``): q from the
    tokens, k and v from the states (one fused projection), output projection.

    Args:
        dim: token width (the states have it too; a task projects them first otherwise).
        num_heads: number of heads.
        qkv_bias: learn biases for q, k, v.
        attn_drop: dropout on attention probabilities (training only).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.attn_drop = num_heads, dim // num_heads, attn_drop
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, states: torch.Tensor, states_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, N, C)`` attends over ``states`` ``(B, M, C)``; ``states_mask`` ``(B, M)``
        bool, True for real states (None: all)."""
        b, n, c = x.shape
        if states.shape[0] != b or states.shape[-1] != c:
            raise ValueError(f"cross-attention of {tuple(x.shape)} tokens needs states (B={b}, M, C={c}), "
                             f"got {tuple(states.shape)}")  # fmt: skip
        q = self.q(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)
        kv = self.kv(states).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (B, H, M, Dh)
        mask = _combine_masks(None, states_mask, False, states.shape[1], q.dtype, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def _windowed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, scale: float | None
) -> torch.Tensor:
    """``softmax(q kᵀ · scale + mask) v`` written out, for inputs with several leading dimensions
    (Swin's ``(B, windows, H, N, Dh)``): SDPA's fused kernels take 4-d inputs only, and its math
    fallback adds a fully-masked-row guard that finite masks (Swin's -100) never need."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if scale != 1.0:
        q = q * scale
    attn = q @ k.transpose(-2, -1)
    if mask is not None:
        attn = attn + mask
    attn = _FlushedSoftmax.apply(attn) if attn.device.type == "cpu" else attn.softmax(-1)
    if dropout:
        attn = F.dropout(attn, dropout)
    return attn @ v


class _FlushedSoftmax(torch.autograd.Function):
    """``softmax(x, -1)`` with probabilities not above the smallest normal float set to zero, in
    the forward pass and in the one its gradient is computed from.

    Across Swin's shift mask (-100, the official value) ~10 % of the probabilities are e^-100 ≈
    4e-44: subnormal floats, which x86 cores multiply through a slow path, and softmax's gradient
    at those positions (p · (g - Σ g p)) is subnormal too. Left in, the batched products of one
    profiled SimMIM Swin V2 Tiny train step took 151 ms against HF's 34 (AVX2 kernels, Intel
    Xeon, 2 threads); zeroed, 34 against 34. Their share of any sum is 30 orders of magnitude below fp32's
    resolution, so outputs and gradients keep their values (GPUs take subnormals at full speed,
    so only CPU tensors come here)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        p = F.threshold_(x.softmax(-1), TINY, 0.0)  # one pass (a mask + masked_fill cost as much as the softmax)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad, p, -1, p.dtype)


def _combine_masks(
    bias: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    causal: bool,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Fold padding and (when mixed with other masks) causality into one additive mask."""
    mask = bias
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            key_padding_mask = key_padding_mask.bool()
        pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=device)
        pad = pad.masked_fill(~key_padding_mask, torch.finfo(dtype).min)[:, None, None, :]  # (B, 1, 1, N)
        mask = pad if mask is None else mask + pad
    if causal and mask is not None:
        future = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
        mask = mask.masked_fill(future, torch.finfo(dtype).min)
    return mask
