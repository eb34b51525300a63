"""The scaling-law fit recovers known constants and exponents from synthetic points; the Pareto
frontier and Spearman's rank correlation on examples worked out by hand."""

import math

import numpy as np
import pytest

from convergent.evaluation.scaling import fit_loss_law, fit_problem, pareto_frontier, rank, spearman

CHINCHILLA = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
"""Hoffmann et al. (2022), approach 3 (N in parameters, D in tokens)."""


def law(n, d, E, A, alpha, B, beta):
    return E + A * np.asarray(n, float) ** -alpha + B * np.asarray(d, float) ** -beta


def grid(ns, ds):
    n, d = np.meshgrid(ns, ds)
    return n.ravel(), d.ravel()


@pytest.mark.parametrize("truth", [
    CHINCHILLA,
    dict(E=0.2, A=3.0, alpha=0.3, B=5.0, beta=0.5),  # a sweep's scale: 0.6-5.5 M parameters, 10^3-10^4 samples
    dict(E=0.05, A=40.0, alpha=0.9, B=2.0, beta=0.15),
])  # fmt: skip
def test_fit_recovers_the_law_from_exact_points(truth):
    n, d = grid([6e5, 2.2e6, 5.5e6, 2e7], [6e2, 1.2e3, 3e3, 6e3, 1.2e4])
    if truth is CHINCHILLA:
        n, d = grid([1e8, 4e8, 1e9, 4e9, 1e10], [1e9, 1e10, 1e11, 1e12])
    fit = fit_loss_law(n, d, law(n, d, **truth))
    for key, value in truth.items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-4), key
    assert fit.rmse < 1e-6 and fit.r2 == pytest.approx(1.0)
    assert fit.points == len(n) and fit.starts > 1
    assert np.allclose(fit.predict(n, d), law(n, d, **truth), rtol=1e-6)


def test_fit_with_noise_stays_close_and_reports_its_residual():
    n, d = grid([6e5, 2.2e6, 5.5e6, 2e7, 5e7], [6e2, 1.2e3, 3e3, 6e3, 1.2e4, 3e4])
    truth = dict(E=0.2, A=3.0, alpha=0.3, B=5.0, beta=0.5)
    clean = law(n, d, **truth)
    noisy = clean * (1 + 0.002 * np.random.default_rng(0).standard_normal(clean.shape))
    fit = fit_loss_law(n, d, noisy)
    assert fit.alpha == pytest.approx(0.3, rel=0.15) and fit.beta == pytest.approx(0.5, rel=0.1)
    assert 0 < fit.rmse < 0.01 and fit.r2 > 0.99
    assert fit.rmse == pytest.approx(np.sqrt(((fit.predict(n, d) - noisy) ** 2).mean()))


def test_fitted_parameters_keep_their_signs():
    """Points that rise with N: the best law within A, B, E >= 0 and alpha, beta > 0."""
    n, d = grid([1e5, 1e6, 1e7], [1e3, 1e4, 1e5])
    fit = fit_loss_law(n, d, 1.0 + 0.01 * np.log10(n))
    assert fit.A >= 0 and fit.B >= 0 and fit.E >= 0 and fit.alpha > 0 and fit.beta > 0
    assert math.isfinite(fit.rmse)


def test_too_few_points_are_refused_with_the_reason():
    assert "needs at least 6" in fit_problem([1, 2, 3], [1, 2, 3])
    assert "1 model size(s)" in fit_problem([5] * 6, [1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="cannot fit L\\(N, D\\): 4 point"):
        fit_loss_law([1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="not finite"):
        fit_loss_law([1, 2, 3, 4, 5, 6], [1, 2, 1, 2, 1, 2], [1, 2, 3, 4, 5, float("nan")])


def test_pareto_frontier_by_hand():
    #           0    1    2    3    4    5
    compute = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0]
    loss = [5.0, 4.0, 3.0, 3.5, 1.0, 1.0]
    # 0 is the cheapest; 1 loses to 2 (same compute, more loss); 3 loses to 2 (more compute and loss);
    # 4 beats everything before it; 5 ties 4 on loss with more compute
    assert pareto_frontier(compute, loss) == [0, 2, 4]
    assert pareto_frontier([3.0, 1.0, 2.0], [1.0, 3.0, 2.0]) == [1, 2, 0]  # in order of compute
    assert pareto_frontier([1.0, 1.0], [2.0, 2.0]) == [0]  # equal points: the first stands for both
    assert pareto_frontier([], []) == []


def test_ranks_average_ties():
    assert rank([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)  # ranks only
    # no ties: 1 - 6 sum(d^2) / (n (n^2 - 1)); ranks of y are 2, 1, 4, 3, 5: d^2 sums to 4
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # ties: x ranks 1, 2.5, 2.5, 4 -> centred -1.5, 0, 0, 1.5; y ranks centred -1.5, .5, -.5, 1.5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1], [2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
