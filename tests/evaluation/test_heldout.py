"""The held-out loss with fixed masks: the same number every time, the same masks for every
model, the caller's random stream untouched; other seeds draw other masks."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.data.protocol import ItemList
from convergent.data.transforms import BatchTransform
from convergent.evaluation.heldout import heldout_loss, heldout_subset
from convergent.tasks.configs import MAEConfig, SimMIMConfig
from convergent.tasks.mae import MAE
from convergent.tasks.simmim import SimMIM

TRANSFORM = BatchTransform(32, (0.5,) * 3, (0.5,) * 3, train=False)


def images(n: int = 20) -> ItemList:
    g = torch.Generator().manual_seed(1)
    return ItemList([{"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g), "label": i % 2}
                     for i in range(n)])  # fmt: skip


class RecordingSimMIM(SimMIM):
    """SimMIM that keeps the pixel masks it was given or drew."""

    def forward(self, batch, return_outputs=False):
        out = super().forward(batch, return_outputs=True)
        self.masks.append(out["mask_pixels"].clone())
        return out


def simmim(recording: bool = False, **overrides) -> SimMIM:
    backbone = build_backbone("swinv2_test", **overrides)
    task = (RecordingSimMIM if recording else SimMIM)(backbone, SimMIMConfig(mask_patch_size=8, mask_ratio=0.5))
    task.masks = []
    return task


def test_the_same_loss_twice_and_the_training_stream_untouched():
    task, data = simmim(), images()
    state = torch.get_rng_state()
    first = heldout_loss(task.train(), data, TRANSFORM, batch_size=8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # forked: a training run draws what it would have
    torch.rand(100)  # whatever the caller drew in between
    second = heldout_loss(task, data, TRANSFORM, batch_size=8, seed=3)
    assert first == second and first["val_samples"] == 20
    assert task.training  # the mode is given back


def test_every_model_sees_the_same_masks():
    """Masks are drawn at the image's resolution from the seeded RNG: a wider model, and a model
    with another patch size, get the same pixels hidden."""
    small, wide, fine = simmim(True), simmim(True, embed_dim=32), simmim(True, patch_size=2, window_size=4)
    for task in (small, wide, fine):
        heldout_loss(task, images(), TRANSFORM, batch_size=8, seed=0)
    assert len(small.masks) == 3  # batches of 8, 8, 4
    for a, b, c in zip(small.masks, wide.masks, fine.masks):
        assert torch.equal(a, b) and torch.equal(a, c)
    other = simmim(True)
    heldout_loss(other, images(), TRANSFORM, batch_size=8, seed=1)
    assert not torch.equal(other.masks[0], small.masks[0])  # another seed, other masks


def test_mae_noise_is_fixed_too():
    task = MAE(build_backbone("vit_test"), MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2))
    a = heldout_loss(task, images(), TRANSFORM, batch_size=6, seed=0)
    b = heldout_loss(task, images(), TRANSFORM, batch_size=6, seed=0)
    assert a == b
    assert heldout_loss(task, images(), TRANSFORM, batch_size=6, seed=5)["val_loss"] != a["val_loss"]


def test_subset_takes_the_first_samples():
    data = images(10)
    assert heldout_subset(data, None) is data and heldout_subset(data, 50) is data
    part = heldout_subset(data, 4)
    assert len(part) == 4 and torch.equal(part[3]["image"], data[3]["image"])
    with pytest.raises(ValueError, match="empty"):
        heldout_loss(simmim(), heldout_subset(data, 0), TRANSFORM)
