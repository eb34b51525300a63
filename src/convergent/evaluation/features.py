"""Frozen features for the probes (kNN, linear probe): run a backbone over a labelled dataset
(images or text) in eval mode without gradients, and pool one layer's tokens into one vector
per sample.

``layer=-1`` probes the final normalised tokens (``forward_features``); another index probes
the output of that block (``forward_intermediates``), as in SimMIM's linear-probe setting
(an intermediate layer, average pooling): the last blocks of a masked-image-modelling encoder
specialise in pixel prediction, so earlier layers can probe better.

The modality is the backbone's business: batches come from the dataset's own ``collate_fn``
(text: ``input_ids``, ``attention_mask``, …) or :func:`collate_labelled` (images), the
backbone's inputs are picked by :func:`~convergent.backbones.protocol.backbone_inputs`, and
the image transform touches ``batch["image"]`` only.
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from convergent.backbones.protocol import backbone_inputs
from convergent.data.protocol import Dataset
from convergent.heads.classifier import pool_tokens

Transform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
"""``transform(images uint8 (B, C, H, W), generator) -> float (B, C, H, W)``; the Trainer passes
``view=v`` as well for the further views of a multi-view task."""


def collate_images(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items ``{"image": uint8 (C, H, W), ["label": int], ["skipped": [...]], …}`` → ``{"image":
    (B, C, H, W), "label": (B,) long when the items have labels, "skipped": [...]}``; other keys
    (captions) are dropped, so no tokenizer is needed."""
    if "image" not in items[0]:
        raise KeyError(f"dataset items must hold 'image'; got keys {sorted(items[0])}")
    batch: dict[str, Any] = {"image": torch.stack([torch.as_tensor(it["image"]) for it in items])}
    if "label" in items[0]:
        batch["label"] = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
    batch["skipped"] = [s for it in items for s in it.get("skipped", ())]
    return batch


def collate_labelled(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Items ``{"image": uint8 (C, H, W), "label": int}`` → ``{"image": (B, C, H, W), "label": (B,) long}``."""
    for key in ("image", "label"):
        if key not in items[0]:
            raise KeyError(
                f"dataset items must hold 'image' and 'label' (or the dataset must define collate_fn, "
                f"as text datasets do); got keys {sorted(items[0])}"
            )
    batch = collate_images(items)
    del batch["skipped"]
    return batch


def collate_for(dataset, default: Callable = collate_labelled) -> Callable:
    """The dataset's own ``collate_fn`` (text datasets, once a tokenizer is attached), looked up
    through ``Subset`` wrappers; else ``default``."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset.collate_fn if isinstance(dataset, Dataset) else default


def prepare_batch(
    batch: dict[str, Any], transform: Transform | None, device: torch.device, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Move ``batch``'s tensors to ``device``; ``transform(batch["image"], None)`` when the batch
    holds images; cast floating tensors to ``dtype`` (token ids and masks keep theirs)."""
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "image" in batch:
        if transform is not None:
            batch["image"] = transform(batch["image"], None)  # (B, C, H, W) float
        elif not batch["image"].is_floating_point():
            raise ValueError(f"batch['image'] is {batch['image'].dtype}; image data needs a transform (got None)")
    if dtype is not None:
        batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    return batch


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def place(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """Move ``model`` to ``device`` (None: where it already is) and return that device."""
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    return device


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def tokens_at(backbone: nn.Module, x: torch.Tensor, layer: int = -1, **inputs) -> torch.Tensor:
    """Tokens ``(B, P + N, C_layer)`` of input ``x`` (images, token ids; ``inputs`` are the
    backbone's keyword inputs such as ``attention_mask``): final normalised ones (``layer=-1``)
    or the output of block ``layer`` (before the final norm; negatives other than -1 count
    from the last block)."""
    if layer == -1:
        return backbone.forward_features(x, **inputs)
    _, outs = backbone.forward_intermediates(x, indices=[layer], **inputs)
    return outs[0]


def extract_features(
    backbone: nn.Module,
    dataset,
    transform: Transform | None,
    layer: int = -1,
    pooling: str = "avg",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of every item of ``dataset``.

    Args:
        backbone: a :class:`~convergent.backbones.protocol.Backbone`; put in eval mode for
            the pass and restored to its previous mode afterwards.
        dataset: map-style and labelled: items ``{"image": uint8 (C, H, W), "label": int}``,
            or a dataset with a ``collate_fn`` giving dict batches with ``"label"`` (text:
            ``input_ids``, ``attention_mask``, ``label``).
        transform: evaluation transform of images, called as ``transform(images, None)`` on
            the device; None where the batches hold no images (text).
        layer: -1 for the final normalised tokens, else a block index (see :func:`tokens_at`).
        pooling: ``"avg"`` (mean of patch tokens; of real tokens when the backbone takes an
            ``attention_mask``), ``"cls"`` (class / ``[CLS]`` token), ``"default"``
            (``backbone.pooled``); see :func:`convergent.heads.classifier.pool_tokens`.
        batch_size: samples per forward pass.
        device: where to run (None: the backbone's device); the backbone is moved there.
        num_workers: DataLoader workers.

    Returns:
        features ``(N, C_layer)`` float32 on the CPU, labels ``(N,)`` long.
    """
    device = place(backbone, device)
    dtype = next(backbone.parameters()).dtype
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_for(dataset))
    feats, labels = [], []
    with evaluating(backbone):
        for batch in loader:
            if "label" not in batch:
                raise KeyError(f"extract_features needs labelled batches; got keys {sorted(batch)}")
            x, inputs = backbone_inputs(backbone, prepare_batch(batch, transform, device, dtype))
            tokens = tokens_at(backbone, x, layer, **inputs)  # (B, P + N, C)
            pooled = pool_tokens(backbone, tokens, pooling, inputs.get("attention_mask"))  # (B, C)
            feats.append(pooled.float().cpu())
            labels.append(batch["label"].long().cpu())
    if not feats:
        raise ValueError("extract_features got an empty dataset")
    return torch.cat(feats), torch.cat(labels)
