"""The VQ-VAE decoder (van den Oord et al. 2017; sonnet's VQ-VAE example): a 3×3 convolution
to ``width`` channels, a stack of residual blocks (ReLU, 3×3 convolution to ``width // 4``,
ReLU, 1×1 convolution back, added), ReLU, then one 4×4 transposed convolution of stride 2 per
factor of 2 of the encoder's stride (``width // 2`` channels between them, ReLU), the last one
to the image's channels. A stride of 1 ends in a 3×3 convolution instead."""

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` on ``(B, C, H, W)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class ConvDecoder(nn.Module):
    """Token map ``(B, h*w, in_dim)`` (row-major) → images ``(B, out_chans, h*stride, w*stride)``.

    Args:
        in_dim: width of the tokens (a VQ-VAE's codes).
        stride: pixels per token along each side: 1 or a power of 2.
        out_chans: image channels.
        width: channels of the residual stack.
        res_blocks: residual blocks.
    """

    def __init__(self, in_dim: int, stride: int, out_chans: int = 3, width: int = 128, res_blocks: int = 2):
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"ConvDecoder upsamples by powers of 2; the encoder's stride {stride} is not one")
        if width < 4:
            raise ValueError(f"ConvDecoder width must be >= 4, got {width}")
        self.stride = stride
        self.stem = nn.Conv2d(in_dim, width, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(width, width // 4) for _ in range(res_blocks)))
        ups: list[nn.Module] = [nn.ReLU()]
        steps = stride.bit_length() - 1  # log2(stride)
        channels = width
        for i in range(steps):
            last = i == steps - 1
            nxt = out_chans if last else width // 2
            ups.append(nn.ConvTranspose2d(channels, nxt, kernel_size=4, stride=2, padding=1))
            if not last:
                ups.append(nn.ReLU())
            channels = nxt
        if steps == 0:
            ups.append(nn.Conv2d(width, out_chans, kernel_size=3, padding=1))
        self.up = nn.Sequential(*ups)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = tokens.shape
        h, w = grid
        if h * w != n:
            raise ValueError(f"{n} tokens do not form the grid {h}x{w}")
        x = tokens.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        return self.up(self.blocks(self.stem(x)))  # (B, out, h*stride, w*stride)
