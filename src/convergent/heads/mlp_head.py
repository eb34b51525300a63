"""Projection / prediction MLP with BatchNorm (SimCLR, BYOL, MoCo v3).

``(Linear → BN → ReLU) × (num_layers − 1)``, then ``Linear → BN`` without affine parameters
(``last_bn``; SimCLR's design, MoCo v3 further drops its γ and β). Linear layers have no bias
(BN follows each). Layout and default PyTorch init as MoCo v3's ``_build_mlp``
(``moco/builder.py``), so its ``head.*`` / ``predictor.*`` weights load by index.
"""

import torch
from torch import nn

from convergent.layers.linear import Linear


class MLPHead(nn.Sequential):
    """Features ``(B, in_dim)`` → ``(B, out_dim)``.

    Args:
        in_dim: input width (the backbone's ``num_features``, or the projector's ``out_dim``).
        hidden_dim: width of the hidden layers (MoCo v3: 4096).
        out_dim: output width (MoCo v3: 256).
        num_layers: Linear layers (MoCo v3 ViT: projector 3, predictor 2).
        last_bn: end with a BatchNorm without affine parameters.
        sync_bn: ``nn.SyncBatchNorm`` (statistics over the global batch under
            ``torch.distributed``; plain BN otherwise) instead of ``nn.BatchNorm1d``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, last_bn: bool = True,
                 sync_bn: bool = False):  # fmt: skip
        if num_layers < 1 or min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(
                f"MLPHead needs num_layers >= 1 and positive widths, got num_layers={num_layers}, "
                f"in_dim={in_dim}, hidden_dim={hidden_dim}, out_dim={out_dim}"
            )
        norm = nn.SyncBatchNorm if sync_bn else nn.BatchNorm1d
        layers: list[nn.Module] = []
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            d_out = out_dim if i == num_layers - 1 else hidden_dim
            layers.append(Linear(d_in, d_out, bias=False))
            if i < num_layers - 1:
                layers += [norm(d_out), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(norm(d_out, affine=False))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"MLPHead expects features (B, D), got {tuple(x.shape)}")
        return super().forward(x)  # (B, out_dim)
