"""Linear probe: learns separable clusters, stays at chance on random labels, is deterministic
and does not care about the features' scale (standardised with train statistics)."""

import pytest
import torch

from convergent.evaluation.linear_probe import linear_probe, standardize


def clusters(n_train=400, n_test=200, classes=10, dim=32, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 2
    y_train = torch.randint(0, classes, (n_train,), generator=g)
    y_test = torch.randint(0, classes, (n_test,), generator=g)
    x_train = centers[y_train] + spread * torch.randn(n_train, dim, generator=g)
    x_test = centers[y_test] + spread * torch.randn(n_test, dim, generator=g)
    return x_train, y_train, x_test, y_test


def test_separable_clusters():
    out = linear_probe(*clusters(), num_classes=10, epochs=20)
    assert out["acc"] >= 0.95 and out["train_acc"] >= 0.95


def test_random_labels_stay_near_chance():
    g = torch.Generator().manual_seed(1)
    x_train, x_test = torch.randn(400, 32, generator=g), torch.randn(500, 32, generator=g)
    y_train, y_test = torch.randint(0, 10, (400,), generator=g), torch.randint(0, 10, (500,), generator=g)
    out = linear_probe(x_train, y_train, x_test, y_test, num_classes=10, epochs=30)
    assert out["acc"] < 0.2  # chance: 0.1
    assert out["train_acc"] > out["acc"] + 0.1  # it fits (memorises) the training split


def test_deterministic_and_seed_dependent():
    data = clusters(spread=3.0)
    a = linear_probe(*data, num_classes=10, epochs=3, seed=0)
    b = linear_probe(*data, num_classes=10, epochs=3, seed=0)
    c = linear_probe(*data, num_classes=10, epochs=3, seed=1)
    assert a == b
    assert a["loss"] != c["loss"]


def test_invariant_to_feature_scale_and_offset():
    x_train, y_train, x_test, y_test = clusters(spread=3.0)
    a = linear_probe(x_train, y_train, x_test, y_test, num_classes=10, epochs=5)
    b = linear_probe(x_train * 1e3 + 50, y_train, x_test * 1e3 + 50, y_test, num_classes=10, epochs=5)
    assert a["acc"] == pytest.approx(b["acc"], abs=0.011) and a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def test_standardize_uses_train_statistics():
    train = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    s_train, s_test = standardize(train, torch.tensor([[1.0, 20.0], [3.0, 40.0]]))
    torch.testing.assert_close(s_train, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s_test, torch.tensor([[0.0, 0.0], [2.0, 2.0]]), atol=1e-5, rtol=0)


def test_labels_out_of_range():
    x_train, y_train, x_test, y_test = clusters(n_train=20, n_test=10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        linear_probe(x_train, y_train, x_test, y_test, num_classes=5)
