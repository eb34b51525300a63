"""Run a text Transformer on its real tokens only.

Padded text wastes the work of every linear layer (qkv, output projection, MLP) and every
norm on positions whose outputs nobody reads. :class:`Unpadded` packs the real tokens of a
``(B, L, C)`` batch into ``(T, C)`` rows, ``T`` = number of real tokens; everything
per-token then runs on ``T`` rows, and only attention, which needs the sequence layout,
scatters q/k/v back to ``(B, L, ·)`` (padding as zeros, masked out as keys) and gathers its
output again. Real positions get the same values as the padded computation; padded
positions come back as zeros.
"""

import torch


class Unpadded:
    """Gather / scatter between ``(B, L, ...)`` and the packed real tokens ``(T, ...)``.

    Args:
        keep: ``(B, L)`` bool, True for real tokens.
    """

    def __init__(self, keep: torch.Tensor):
        if keep.ndim != 2 or keep.dtype != torch.bool:
            raise ValueError(f"expected a (B, L) bool mask, got {tuple(keep.shape)} {keep.dtype}")
        self.batch, self.length = keep.shape
        self.index = keep.flatten().nonzero().squeeze(1)  # (T,) rows of the flattened batch

    @property
    def num_tokens(self) -> int:
        return self.index.numel()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, ...)`` → ``(T, ...)``."""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, ...)`` → ``(B, L, ...)`` with zeros at padded positions (differentiable)."""
        full = x.new_zeros((self.batch * self.length, *x.shape[1:]))
        return full.index_copy(0, self.index, x).unflatten(0, (self.batch, self.length))
