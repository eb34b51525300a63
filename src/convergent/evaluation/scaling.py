"""Scaling laws from the points of a sweep (numpy only; the pictures are drawn elsewhere).

* :func:`fit_loss_law` — ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022,
  "Chinchilla", approach 3; Kaplan et al. 2020) by nonlinear least squares on the loss:
  Levenberg–Marquardt from a grid of starts, the best end kept. The parameters are fitted as
  logarithms (log A, log B, log E, log alpha, log beta), so A, B, E >= 0 and alpha, beta > 0
  hold by construction; N and D are divided by their geometric means first (A and B are
  scaled back), which keeps the problem well conditioned over decades of N and D.
* :func:`pareto_frontier` — the points no other point beats in both compute and loss.
* :func:`spearman` — Spearman's rank correlation (ties get their average rank).
"""

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

PARAMETERS = 5
"""Free parameters of :func:`fit_loss_law`: E, A, alpha, B, beta."""
_LOG_BOUNDS = (-40.0, 40.0)
"""Bounds of the log parameters (E -> 0 is exp(-40), not -inf)."""
_EXPONENT_LOG_BOUNDS = (math.log(1e-4), math.log(10.0))
"""Bounds of log alpha and log beta."""


@dataclass(frozen=True)
class LossLawFit:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` fitted to ``points`` points."""

    E: float
    """The irreducible loss (N, D -> infinity)."""
    A: float
    """Coefficient of the model-size term."""
    alpha: float
    """Exponent of the model size N."""
    B: float
    """Coefficient of the data term."""
    beta: float
    """Exponent of the data size D."""
    rmse: float
    """Root mean square residual of the fitted loss."""
    r2: float
    """Coefficient of determination (1 - residual / total sum of squares)."""
    points: int
    """Points fitted."""
    starts: int
    """Starting points tried (the best end is kept)."""

    def predict(self, n, d) -> np.ndarray:
        """The fitted loss at model sizes ``n`` and data sizes ``d`` (broadcast)."""
        n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
        return self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta

    def as_dict(self) -> dict:
        return asdict(self)


def fit_problem(n, d) -> str | None:
    """Why :func:`fit_loss_law` cannot fit these N and D values (None when it can): at least
    ``PARAMETERS + 1`` points, two distinct values of each, all positive."""
    n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
    if len(n) < PARAMETERS + 1:
        return f"{len(n)} point(s); L(N, D) has {PARAMETERS} parameters and needs at least {PARAMETERS + 1}"
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        return f"{len(np.unique(n))} model size(s) and {len(np.unique(d))} data size(s); needs at least 2 of each"
    if (n <= 0).any() or (d <= 0).any():
        return "N and D must be positive"
    return None


def fit_loss_law(n, d, loss, iterations: int = 500) -> LossLawFit:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` to points ``(n[i], d[i], loss[i])`` (see
    the module docstring); a ``ValueError`` saying why when the points cannot determine it
    (:func:`fit_problem`)."""
    n, d, loss = (np.asarray(a, dtype=np.float64).ravel() for a in (n, d, loss))
    if not len(n) == len(d) == len(loss):
        raise ValueError(f"n, d and loss differ in length: {len(n)}, {len(d)}, {len(loss)}")
    problem = fit_problem(n, d)
    if problem is None and not np.isfinite(loss).all():
        problem = "a loss is not finite"
    if problem is not None:
        raise ValueError(f"cannot fit L(N, D): {problem}")
    n0, d0 = math.exp(np.log(n).mean()), math.exp(np.log(d).mean())
    u, v = np.log(n / n0), np.log(d / d0)  # centred log sizes
    best, tried = None, 0
    for start in _starts(loss):
        tried += 1
        theta, cost = _levenberg_marquardt(start, u, v, loss, iterations)
        if best is None or cost < best[1]:
            best = (theta, cost)
    log_a, log_b, log_e, log_alpha, log_beta = best[0]
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    residual = _model(best[0], u, v) - loss
    total = float(((loss - loss.mean()) ** 2).sum())
    return LossLawFit(
        E=math.exp(log_e), A=math.exp(log_a) * n0**alpha, alpha=alpha, B=math.exp(log_b) * d0**beta, beta=beta,
        rmse=float(np.sqrt((residual**2).mean())), r2=1 - float((residual**2).sum()) / total if total > 0 else 1.0,
        points=len(loss), starts=tried,
    )  # fmt: skip


def _starts(loss: np.ndarray):
    """A grid of starting log parameters: E at three fractions of the smallest loss, the rest
    of the mean loss split between the two terms, exponents 0.1, 0.3 and 0.7."""
    low, mean = float(loss.min()), float(loss.mean())
    for e_share, alpha, beta in itertools.product((0.01, 0.5, 0.9), (0.1, 0.3, 0.7), (0.1, 0.3, 0.7)):
        e = max(e_share * low, 1e-12) if low > 0 else 1e-6
        term = max((mean - e) / 2, 1e-6 * max(abs(mean), 1e-12))
        yield np.array([math.log(term), math.log(term), math.log(e), math.log(alpha), math.log(beta)])


def _model(theta: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    log_a, log_b, log_e, log_alpha, log_beta = theta
    return math.exp(log_e) + np.exp(log_a - math.exp(log_alpha) * u) + np.exp(log_b - math.exp(log_beta) * v)


def _jacobian(theta: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """d model / d theta, ``(points, 5)``."""
    log_a, log_b, log_e, log_alpha, log_beta = theta
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    term_a, term_b = np.exp(log_a - alpha * u), np.exp(log_b - beta * v)
    e = np.full_like(u, math.exp(log_e))
    return np.stack([term_a, term_b, e, -term_a * u * alpha, -term_b * v * beta], axis=1)


def _clip(theta: np.ndarray) -> np.ndarray:
    theta = np.clip(theta, *_LOG_BOUNDS)
    theta[3:] = np.clip(theta[3:], *_EXPONENT_LOG_BOUNDS)
    return theta


def _levenberg_marquardt(theta: np.ndarray, u: np.ndarray, v: np.ndarray, loss: np.ndarray,
                         iterations: int) -> tuple[np.ndarray, float]:  # fmt: skip
    """Minimise ``0.5 * sum((model - loss)^2)`` from ``theta``; the end point and its cost."""
    theta = _clip(theta.copy())
    residual = _model(theta, u, v) - loss
    cost, damping = 0.5 * float(residual @ residual), 1e-3
    for _ in range(iterations):
        jac = _jacobian(theta, u, v)
        grad, hess = jac.T @ residual, jac.T @ jac
        scale = np.diag(hess) + 1e-12
        try:
            step = np.linalg.solve(hess + damping * np.diag(scale), -grad)
        except np.linalg.LinAlgError:
            damping *= 10
            continue
        trial = _clip(theta + step)
        trial_residual = _model(trial, u, v) - loss
        trial_cost = 0.5 * float(trial_residual @ trial_residual)
        if np.isfinite(trial_cost) and trial_cost < cost:
            converged = cost - trial_cost <= 1e-15 * max(cost, 1e-300)
            theta, residual, cost, damping = trial, trial_residual, trial_cost, max(damping / 3, 1e-12)
            if converged:
                break
        else:
            damping *= 4
            if damping > 1e12:
                break
    return theta, cost


def pareto_frontier(compute, loss) -> list[int]:
    """Indices of the points on the compute–loss Pareto frontier, in order of compute: those no
    other point dominates (no more compute and no more loss, less of one). Of points equal in
    both, the first in input order stands for them."""
    compute, loss = np.asarray(compute, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if compute.shape != loss.shape:
        raise ValueError(f"compute and loss differ in shape: {compute.shape}, {loss.shape}")
    keep, best = [], math.inf
    for i in np.lexsort((np.arange(len(loss)), loss, compute)):  # by compute, then loss, then input order
        if loss[i] < best:
            keep.append(int(i))
            best = float(loss[i])
    return keep


def rank(values) -> np.ndarray:
    """1-based ranks of ``values``; tied values share their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (the Pearson correlation of their ranks);
    NaN when fewer than 2 points, or when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {x.shape}, {y.shape}")
    if len(x) < 2:
        return math.nan
    rx, ry = rank(x) - (len(x) + 1) / 2, rank(y) - (len(y) + 1) / 2
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan
