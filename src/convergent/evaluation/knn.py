"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018, InstDisc; the
kNN evaluation of DINO ``eval_knn.py``).

Features are L2-normalised, so the dot product is the cosine similarity; each test sample
takes its ``k`` most similar training samples, and each neighbour votes for its label with
weight ``exp(sim / T)``. The predicted class is the one with the largest total weight (ties
go to the smaller class index).
"""

import torch
import torch.nn.functional as F


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted labels ``(N_test,)`` for ``test_feats`` ``(N_test, C)`` from ``train_feats``
    ``(N_train, C)`` with labels ``(N_train,)``; ``chunk`` test rows at a time bound memory to
    ``chunk * N_train`` similarities."""
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            "features must be (N, C) with the same C; "
            f"got train {tuple(train_feats.shape)}, test {tuple(test_feats.shape)}"
        )
    if train_labels.shape != train_feats.shape[:1]:
        raise ValueError(f"{train_feats.shape[0]} train features but labels of shape {tuple(train_labels.shape)}")
    if len(train_feats) == 0 or k < 1 or temperature <= 0:
        raise ValueError(
            f"need training samples, k >= 1 and temperature > 0 (got {len(train_feats)}, {k}, {temperature})"
        )
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_feats))
    train = F.normalize(train_feats.float(), dim=1)  # (N_train, C)
    labels = train_labels.to(train.device).long()
    preds = []
    for start in range(0, len(test_feats), chunk):
        test = F.normalize(test_feats[start : start + chunk].float().to(train.device), dim=1)  # (b, C)
        sims, idx = (test @ train.T).topk(k, dim=1)  # (b, k) each
        weights = (sims / temperature).exp()  # (b, k)
        votes = torch.zeros(len(test), num_classes, device=train.device)  # (b, K)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy in [0, 1] of the weighted kNN classifier (see :func:`knn_predict`);
    ``num_classes`` None: inferred from the largest label."""
    if test_labels.shape != test_feats.shape[:1] or len(test_labels) == 0:
        raise ValueError(f"{test_feats.shape[0]} test features but labels of shape {tuple(test_labels.shape)}")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    preds = knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes, chunk)
    return (preds.cpu() == test_labels.cpu().long()).float().mean().item()
