"""Statistics of the validation plots: response profiles, binned quantiles, efficiencies.

Numbers only (no drawing, no matplotlib): :mod:`pipeline.plotting` draws what is computed here,
and the metrics JSON files of every stage are written from the same objects (``to_dict``).

Profiles (:class:`Profile`) summarise a response distribution in bins of ``x``:

``stat="quantile"`` (default, robust to the non-Gaussian tails of detector response)
    centre = median, width = half the 16-84 % inter-quantile range (equals sigma for a Gaussian).
    Uncertainties are the large-sample Gaussian approximations
    ``sqrt(pi/2) * width / sqrt(n)`` for the median and ``0.964 * width / sqrt(n)`` for the width
    (from the asymptotic covariance of the 16 % and 84 % sample quantiles).
``stat="mean"``
    centre = mean +- std/sqrt(n), width = standard deviation +- std/sqrt(2(n-1)).

The relative resolution is ``width / centre``. Bins with fewer than ``min_entries`` entries give
NaN. Profiles can be computed exactly from arrays (:func:`profile`) or, for data read in chunks,
from a 2-D ``hist`` (x, y) filled chunk by chunk (:func:`profile_from_hist`), where quantiles are
interpolated linearly inside the fine ``y`` bins (choose ``y`` bins well below the resolution).

Efficiencies (:class:`Efficiency`, :func:`efficiency`) carry Clopper-Pearson (exact binomial)
68.3 % intervals (:func:`clopper_pearson`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GAUSS_1SIGMA = 0.682689492137086  # coverage of +-1 sigma
_Q_LO, _Q_HI = 0.5 - GAUSS_1SIGMA / 2, 0.5 + GAUSS_1SIGMA / 2  # 0.1587, 0.8413
_MEDIAN_ERR = math.sqrt(math.pi / 2)
_HALF_IQR68_ERR = 0.964  # see module docstring


# --------------------------------------------------------------------------------------------
# profiles: response and resolution
# --------------------------------------------------------------------------------------------
@dataclass
class Profile:
    """A response profile in bins of x (see the module docstring for the definitions)."""

    edges: np.ndarray
    n: np.ndarray
    center: np.ndarray
    center_err: np.ndarray
    width: np.ndarray
    width_err: np.ndarray
    stat: str = "quantile"

    @property
    def resolution(self) -> np.ndarray:
        """Relative resolution ``width / centre``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.width / self.center

    @property
    def resolution_err(self) -> np.ndarray:
        """Uncertainty of :attr:`resolution` (centre and width errors added in quadrature)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.resolution) * np.hypot(self.width_err / self.width, self.center_err / self.center)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (NaN -> None)."""
        names = ("response", "resolution")
        return {
            "stat": self.stat,
            "definition": ("median; (q84-q16)/2; resolution = width/median" if self.stat == "quantile"
                           else "mean; std; resolution = std/mean"),
            "edges": _json_list(self.edges),
            "entries": [int(x) for x in self.n],
            names[0]: _json_list(self.center),
            f"{names[0]}_err": _json_list(self.center_err),
            "width": _json_list(self.width),
            "width_err": _json_list(self.width_err),
            names[1]: _json_list(self.resolution),
            f"{names[1]}_err": _json_list(self.resolution_err),
        }


def _json_list(a: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, dtype=float)]


def _summarise(n: float, center: float, width: float, std: float, stat: str) -> tuple[float, float, float, float]:
    if stat == "quantile":
        return center, _MEDIAN_ERR * width / math.sqrt(n), width, _HALF_IQR68_ERR * width / math.sqrt(n)
    return center, std / math.sqrt(n), std, std / math.sqrt(2 * max(n - 1, 1))


def _check_stat(stat: str) -> None:
    if stat not in ("quantile", "mean"):
        raise ValueError(f"stat must be 'quantile' or 'mean', not {stat!r}")


def profile(x, y, bins, stat: str = "quantile", min_entries: int = 10) -> Profile:
    """Exact profile of ``y`` in bins of ``x`` from arrays (for data that fits in memory)."""
    _check_stat(stat)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    edges = np.asarray(bins, dtype=float)
    nb = len(edges) - 1
    out = {k: np.full(nb, np.nan) for k in ("center", "center_err", "width", "width_err")}
    n = np.zeros(nb, dtype=np.int64)
    idx = np.digitize(x, edges) - 1
    for b in range(nb):
        sel = y[(idx == b) & np.isfinite(y)]
        n[b] = sel.size
        if sel.size < max(min_entries, 2):
            continue
        q_lo, med, q_hi = np.quantile(sel, [_Q_LO, 0.5, _Q_HI])
        center = med if stat == "quantile" else float(np.mean(sel))
        vals = _summarise(sel.size, center, 0.5 * (q_hi - q_lo), float(np.std(sel, ddof=1)), stat)
        for k, v in zip(("center", "center_err", "width", "width_err"), vals, strict=True):
            out[k][b] = v
    return Profile(edges, n, stat=stat, **out)


def _binned_quantiles(counts_with_flow: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of a binned distribution (flow bins as mass at the edges), linear inside bins."""
    inner = counts_with_flow[1:-1]
    cum = counts_with_flow[0] + np.concatenate([[0.0], np.cumsum(inner)])
    total = counts_with_flow.sum()
    # np.interp needs increasing xp: keep the first edge of each flat stretch
    keep = np.concatenate([[True], np.diff(cum) > 0])
    return np.interp(np.asarray(qs) * total, cum[keep], edges[keep])


def profile_from_hist(h, stat: str = "quantile", min_entries: int = 10) -> Profile:
    """Profile of a 2-D ``hist`` with axes (x, y): y's distribution summarised per x bin.

    y's underflow and overflow count in ``n`` and in the quantiles (as mass at the range edges),
    so a median or 16-84 % range is exact as long as it lies inside the y range. ``stat="mean"``
    uses the y bin centres (and ignores y's flow bins).
    """
    _check_stat(stat)
    if h.ndim != 2:
        raise ValueError(f"profile_from_hist needs a 2-D histogram (x, y), got {h.ndim}-D")
    counts = np.asarray(h.values(flow=True), dtype=float)
    x_flow = h.axes[0].traits.underflow
    counts = counts[1:-1] if x_flow else counts[: len(h.axes[0])]
    if not h.axes[1].traits.underflow:
        counts = np.pad(counts, ((0, 0), (1, 0)))
    if not h.axes[1].traits.overflow:
        counts = np.pad(counts, ((0, 0), (0, 1)))
    edges = np.asarray(h.axes[0].edges, dtype=float)
    yedges = np.asarray(h.axes[1].edges, dtype=float)
    ycent = 0.5 * (yedges[1:] + yedges[:-1])
    nb = len(edges) - 1
    out = {k: np.full(nb, np.nan) for k in ("center", "center_err", "width", "width_err")}
    n = counts.sum(axis=1)
    for b in range(nb):
        if n[b] < max(min_entries, 2):
            continue
        q_lo, med, q_hi = _binned_quantiles(counts[b], yedges, [_Q_LO, 0.5, _Q_HI])
        inner = counts[b, 1:-1]
        ni = inner.sum()
        mean = float(np.sum(inner * ycent) / ni) if ni > 0 else np.nan
        std = float(np.sqrt(np.sum(inner * (ycent - mean) ** 2) / max(ni - 1, 1))) if ni > 1 else np.nan
        center = med if stat == "quantile" else mean
        vals = _summarise(n[b], center, 0.5 * (q_hi - q_lo), std, stat)
        for k, v in zip(("center", "center_err", "width", "width_err"), vals, strict=True):
            out[k][b] = v
    return Profile(edges, np.round(n).astype(np.int64), stat=stat, **out)


# --------------------------------------------------------------------------------------------
# efficiencies: Clopper-Pearson intervals
# --------------------------------------------------------------------------------------------
def clopper_pearson(passed, total, cl: float = GAUSS_1SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson (exact binomial) interval ``(low, high)``; NaN where ``total`` is 0."""
    from scipy.stats import beta

    k = np.asarray(passed, dtype=float)
    n = np.asarray(total, dtype=float)
    alpha = 1.0 - cl
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n <= 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


@dataclass
class Efficiency:
    """Per-bin efficiency ``passed / total`` with a Clopper-Pearson 68.3 % interval."""

    edges: np.ndarray
    passed: np.ndarray
    total: np.ndarray

    @property
    def value(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.total > 0, self.passed / self.total, np.nan)

    @property
    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        return clopper_pearson(self.passed, self.total)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {
            "edges": _json_list(self.edges),
            "passed": [int(round(x)) for x in self.passed],
            "total": [int(round(x)) for x in self.total],
            "efficiency": _json_list(self.value),
            "cp68_low": _json_list(lo),
            "cp68_high": _json_list(hi),
        }


def efficiency(passed, total, bins=None) -> Efficiency:
    """An :class:`Efficiency` from x values (``bins`` given) or from two 1-D hists (``bins=None``).

    With arrays, ``passed`` holds the x of the objects that pass and ``total`` the x of all objects
    (passing ones included); x outside the bins is ignored.
    """
    if bins is None:
        edges = np.asarray(total.axes[0].edges, dtype=float)
        if not np.allclose(np.asarray(passed.axes[0].edges, dtype=float), edges):
            raise ValueError("passed and total histograms have different bins")
        k, n = np.asarray(passed.values(), dtype=float), np.asarray(total.values(), dtype=float)
    else:
        edges = np.asarray(bins, dtype=float)
        k = np.histogram(np.asarray(passed, dtype=float), edges)[0].astype(float)
        n = np.histogram(np.asarray(total, dtype=float), edges)[0].astype(float)
    if np.any(k > n):
        raise ValueError("more passing than total entries in some bin: passed must be a subset of total")
    return Efficiency(edges, k, n)
