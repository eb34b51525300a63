"""Weighted kNN against a brute-force, loop-by-loop reference."""

import math

import pytest
import torch

from convergent.evaluation.knn import knn_accuracy, knn_predict


def brute_force_predict(train, train_labels, test, k, temperature, num_classes):
    """Plain-Python weighted kNN: cosine similarity, k most similar, votes exp(sim / T)."""
    train, test = train.double().tolist(), test.double().tolist()
    norm = lambda v: math.sqrt(sum(a * a for a in v))  # noqa: E731
    preds = []
    for q in test:
        sims = [sum(a * b for a, b in zip(q, t)) / (norm(q) * norm(t)) for t in train]
        top = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in top:
            votes[int(train_labels[j])] += math.exp(sims[j] / temperature)
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(preds)


@pytest.mark.parametrize("k,temperature,chunk", [(1, 0.07, 1024), (5, 0.07, 7), (20, 0.5, 3), (200, 1.0, 16)])
def test_matches_brute_force_on_random_data(k, temperature, chunk):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    train_labels, test_labels = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (25,), generator=g)
    ref = brute_force_predict(train, train_labels, test, min(k, 60), temperature, 4)
    ours = knn_predict(train, train_labels, test, k=k, temperature=temperature, num_classes=4, chunk=chunk)
    assert torch.equal(ours, ref)
    acc = knn_accuracy(train, train_labels, test, test_labels, k=k, temperature=temperature, chunk=chunk)
    assert acc == pytest.approx((ref == test_labels).float().mean().item())


def test_separable_clusters_are_perfect():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 5
    train_labels, test_labels = torch.arange(100) % 5, torch.arange(40) % 5
    train = centers[train_labels] + torch.randn(100, 16, generator=g) * 0.3
    test = centers[test_labels] + torch.randn(40, 16, generator=g) * 0.3
    assert knn_accuracy(train, train_labels, test, test_labels, k=10) == 1.0
    # shuffled training labels break it
    assert knn_accuracy(train, train_labels[torch.randperm(100, generator=g)], test, test_labels, k=10) < 0.6


def test_votes_are_weighted_by_similarity():
    """One very close neighbour of class 0 vs two far ones of class 1: a sharp temperature
    follows the close one, a flat one the majority."""
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])  # cos to query: 1.0, 0.6, 0.6
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, query, k=3, temperature=0.07).item() == 0
    assert knn_predict(train, labels, query, k=3, temperature=10.0).item() == 1
    assert knn_predict(train, labels, query, k=1, temperature=10.0).item() == 0


def test_scale_invariance_and_errors():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(30, 4, generator=g), torch.randn(10, 4, generator=g)
    labels, test_labels = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (10,), generator=g)
    a = knn_predict(train, labels, test, k=5)
    b = knn_predict(train * 100, labels, test * 0.01, k=5)
    assert torch.equal(a, b)  # cosine similarity
    with pytest.raises(ValueError, match="same C"):
        knn_accuracy(train, labels, test[:, :3], test_labels)
    with pytest.raises(ValueError, match="labels"):
        knn_accuracy(train, labels[:5], test, test_labels)
