"""Weighted distance correlation (DisCo, Kasieczka & Shih, arXiv:2001.05310) in torch.

:func:`distance_corr_sq` is the squared distance correlation dCor^2(x, y) of Szekely, Rizzo and
Bakirov in its V-statistic (biased) form, with per-event weights as in the reference
implementation (github.com/gkasieczka/DisCo, ``distance_corr(..., power=1)``): weights are
normalised to mean 1, distance matrices are double-centred with weighted row means, and every
average is weighted. With unit weights it equals ``dcor.distance_correlation_sqr(x, y)``; with
integer weights it equals dCor^2 of the sample in which each event is repeated weight times.

It is differentiable in both arguments (the DisCo loss differentiates it in the score) and costs
O(n^2) memory: compute it on batches (a few thousand events), never on a whole sample.

Trap: ``dcor.distance_correlation`` returns dCor, not dCor^2; the DisCo loss uses dCor^2.
"""

from __future__ import annotations

import torch

from pipeline.classifier.naming import lambda_tag

__all__ = ["distance_corr_sq", "lambda_tag"]


def _centred(dist: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted double centring of a symmetric distance matrix (weights of mean 1)."""
    row = (dist * w[None, :]).mean(dim=1)
    return dist - row[None, :] - row[:, None] + (row * w).mean()


def _wmean(m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean over both indices of a matrix (weights of mean 1)."""
    return ((m * w[None, :]).mean(dim=1) * w).mean()


def distance_corr_sq(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                     eps: float = 1e-12) -> torch.Tensor:
    """Weighted squared distance correlation dCor^2(x, y) of two 1-D tensors (a 0-d tensor in [0, 1]).

    ``weights`` (same length, >= 0, not all 0) are normalised to mean 1 here; None means equal
    weights. ``eps`` guards the denominator when one variable is constant (then dCor^2 = 0).
    """
    x = x.reshape(-1)
    y = y.reshape(-1).to(x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"distance_corr_sq: x has {x.numel()} entries, y {y.numel()}")
    if x.numel() < 2:
        raise ValueError("distance_corr_sq needs at least 2 events")
    if weights is None:
        w = torch.ones_like(x)
    else:
        w = weights.reshape(-1).to(x.dtype)
        if w.shape != x.shape:
            raise ValueError(f"distance_corr_sq: {w.numel()} weights for {x.numel()} events")
        w = w / w.mean()
    a = _centred((x[:, None] - x[None, :]).abs(), w)
    b = _centred((y[:, None] - y[None, :]).abs(), w)
    dcov2 = _wmean(a * b, w)
    dvar = _wmean(a * a, w) * _wmean(b * b, w)
    return dcov2 / torch.sqrt(dvar.clamp_min(eps))
