"""The equal-bits baseline of the reconstruction evaluation against a hand-written version."""

import math

import pytest
import torch

from convergent.config import DataConfig
from convergent.evaluation.reconstruction import grid_baseline, reconstruction_metrics


def test_grid_baseline_matches_hand_written():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    out = grid_baseline(x, (2, 2), bits=9)  # 3 bits per channel: levels 0/7 ... 7/7
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    cell = x[b, c, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].mean().item()
                    want = round(cell * 7) / 7
                    # bilinear resize of a 2 x 2 grid keeps each cell's value at its inner corner pixel
                    pi, pj = (1 if i == 0 else 6), (1 if j == 0 else 6)
                    assert out[b, c, pi, pj].item() == pytest.approx(want, abs=1e-6)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="cannot hold 3 channels"):
        grid_baseline(x, (2, 2), bits=2)


class _Identityish(torch.nn.Module):
    """A 'tokenizer' that keeps an 8 x 8 grid of 4-bit grey levels, decoding by nearest resize."""

    num_codes = 16

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        grey = torch.nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), (8, 8))
        return torch.round(((grey + 1) / 2).clamp(0, 1) * 15).long()[:, 0]

    def decode(self, ids):
        v = ids.float()[:, None] / 15 * 2 - 1
        return torch.nn.functional.interpolate(v, size=(32, 32), mode="nearest").expand(-1, 3, -1, -1)


def test_metrics_report_baseline_and_paired_gain():
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(10, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    data = [{"image": im} for im in images]
    cfg = DataConfig(img_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    m = reconstruction_metrics(_Identityish(), data, cfg, batch_size=4)
    assert m["reconstruction_images"] == 10
    assert math.isfinite(m["baseline_psnr"]) and m["psnr_gain_se"] > 0
    assert m["psnr"] != pytest.approx(m["baseline_psnr"])
