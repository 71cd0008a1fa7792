"""Straight-track geometry shared by the reference detector simulation and the FlashSim muon
conditions."""

from __future__ import annotations

import numpy as np


def track_impact_parameters(vertex: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed dxy, dz [cm] (NanoAOD's sign convention) of a straight track of direction
    (eta, phi) from ``vertex`` (n, 3) [cm], relative to the primary vertex at the origin."""
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)
    dxy = -vertex[:, 0] * sin_phi + vertex[:, 1] * cos_phi
    s = vertex[:, 0] * cos_phi + vertex[:, 1] * sin_phi
    dz = vertex[:, 2] - s * np.sinh(eta)
    return dxy, dz
