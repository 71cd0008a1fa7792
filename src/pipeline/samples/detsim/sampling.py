"""Random variates of the reference detector simulation: double-sided Crystal Ball, truncated power
law, piecewise-linear density, compound Poisson and a clipped binomial. Each takes the
``numpy.random.Generator`` and draws in a fixed order."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri


def sample_double_crystal_ball(rng, alpha_lo, n_lo, alpha_hi, n_hi) -> np.ndarray:
    """Standardised double-sided Crystal Ball variates (Gaussian core in [-alpha_lo, alpha_hi],
    power-law tails ``(B - t)^-n``), by exact inverse CDF. All arguments broadcast; n > 1."""
    alpha_lo, n_lo, alpha_hi, n_hi = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (alpha_lo, n_lo, alpha_hi, n_hi))
    )
    size = alpha_lo.shape
    area_lo = n_lo / alpha_lo / (n_lo - 1.0) * np.exp(-0.5 * alpha_lo**2)
    area_hi = n_hi / alpha_hi / (n_hi - 1.0) * np.exp(-0.5 * alpha_hi**2)
    c_lo, c_hi = ndtr(-alpha_lo), ndtr(alpha_hi)
    area_core = np.sqrt(2.0 * np.pi) * (c_hi - c_lo)
    region = rng.random(size) * (area_lo + area_core + area_hi)
    u = 1.0 - rng.random(size)  # (0, 1]
    core = ndtri(np.clip(c_lo + u * (c_hi - c_lo), 1e-300, 1.0 - 1e-16))
    b_lo = n_lo / alpha_lo - alpha_lo
    lo = b_lo - (b_lo + alpha_lo) * u ** (-1.0 / (n_lo - 1.0))
    b_hi = n_hi / alpha_hi - alpha_hi
    hi = -b_hi + (b_hi + alpha_hi) * u ** (-1.0 / (n_hi - 1.0))
    return np.where(region < area_lo, lo, np.where(region < area_lo + area_core, core, hi))


def _truncated_power_law(rng, n: int, lo: float, hi: float, power: float) -> np.ndarray:
    """pT ~ pT^-power on [lo, hi] (power != 1), by inverse CDF."""
    u = rng.random(n)
    e = 1.0 - power
    return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)


def _sample_piecewise_density(rng, n: int, knots: tuple[np.ndarray, np.ndarray], hi: float) -> np.ndarray:
    """|x| in [0, hi] from a piecewise-linear density given at knots (constant beyond them)."""
    grid = np.linspace(0.0, hi, 512)
    dens = np.clip(np.interp(grid, *knots), 0.0, None)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    if cdf[-1] <= 0:
        return rng.random(n) * hi
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _compound_poisson_exp(rng, mean_count: np.ndarray, mean_pt: float) -> np.ndarray:
    """Sum of Poisson(mean_count) exponential pT's with mean ``mean_pt``."""
    k = rng.poisson(mean_count)
    return np.where(k > 0, rng.gamma(np.maximum(k, 1), mean_pt), 0.0)


def _binomial(rng, n: np.ndarray, p) -> np.ndarray:
    return rng.binomial(np.maximum(n, 0).astype(np.int64), np.clip(p, 0.0, 1.0))
