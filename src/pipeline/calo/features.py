"""High-level shower features, as in the CaloChallenge evaluation, in numpy and in torch.

Per shower: E_total / E_incident; per layer: deposited energy E_l [MeV], its fraction of the
incident energy, the centre of energy <x>, <y> [mm] (layers with angular bins) and the radial
centre <r> and width sqrt(<r^2> - <r>^2) [mm] (energy-weighted over voxel centres), and the
sparsity (fraction of voxels with energy above zero). Empty layers get centre and width 0.

:class:`TorchFeatures` computes the differentiable ones on a batch of showers: the GAN's critic
sees them next to the voxels, so that it is trained on what the validation checks.
"""

from __future__ import annotations

import numpy as np

from pipeline.calo.geometry import Geometry


def _layer_matrix(geometry: Geometry) -> np.ndarray:
    m = np.zeros((geometry.n_voxels, geometry.n_layers), dtype=np.float32)
    m[np.arange(geometry.n_voxels), geometry.voxel_layer] = 1.0
    return m


def _voxel_radius(geometry: Geometry) -> np.ndarray:
    rs = []
    for layer in geometry.layers:
        edges = np.asarray(layer.r_edges)
        rs.append(np.tile(0.5 * (edges[1:] + edges[:-1]), layer.n_alpha))
    return np.concatenate(rs).astype(np.float32)


def _voxel_xy(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    x, y = geometry.voxel_centres()
    return x.astype(np.float32), y.astype(np.float32)


def angular_layers(geometry: Geometry) -> list[int]:
    return [i for i, la in enumerate(geometry.layers) if la.n_alpha > 1]


def high_level(showers: np.ndarray, incident: np.ndarray, geometry: Geometry) -> dict[str, np.ndarray]:
    """The features of every shower, keyed by name (``e_ratio``, ``e_layer_0``, ...)."""
    s = np.asarray(showers, dtype=np.float64)
    inc = np.asarray(incident, dtype=np.float64).reshape(-1)
    lm = _layer_matrix(geometry).astype(np.float64)
    r = _voxel_radius(geometry).astype(np.float64)
    x, y = (a.astype(np.float64) for a in _voxel_xy(geometry))
    e_l = s @ lm
    safe = np.where(e_l > 0, e_l, 1.0)
    out: dict[str, np.ndarray] = {"e_ratio": s.sum(1) / inc}
    nz = (s > 0).astype(np.float64) @ lm / lm.sum(0)
    mean_r = (s * r) @ lm / safe
    mean_r2 = (s * r * r) @ lm / safe
    width_r = np.sqrt(np.clip(mean_r2 - mean_r**2, 0, None))
    cx = (s * x) @ lm / safe
    cy = (s * y) @ lm / safe
    for i, layer in enumerate(geometry.layers):
        out[f"e_layer_{i}"] = e_l[:, i]
        out[f"centre_r_{i}"] = np.where(e_l[:, i] > 0, mean_r[:, i], 0.0)
        out[f"width_r_{i}"] = np.where(e_l[:, i] > 0, width_r[:, i], 0.0)
        if layer.n_alpha > 1:
            out[f"centre_x_{i}"] = np.where(e_l[:, i] > 0, cx[:, i], 0.0)
            out[f"centre_y_{i}"] = np.where(e_l[:, i] > 0, cy[:, i], 0.0)
        out[f"sparsity_{i}"] = nz[:, i]
    return out


def classifier_inputs(showers: np.ndarray, incident: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The high-level classifier's inputs: log10 E_inc, E_tot/E_inc, log10 of the layer energies
    (1 keV floor), centres, widths, sparsities."""
    f = high_level(showers, incident, geometry)
    cols = [np.log10(np.asarray(incident, dtype=np.float64).reshape(-1))]
    for k, v in f.items():
        cols.append(np.log10(v + 1e-3) if k.startswith("e_layer_") else v)
    return np.stack(cols, axis=1)


class TorchFeatures:
    """Differentiable features of a batch (B, V) of showers [any energy unit] given E_inc (B,).

    Returns (B, F): log(E_tot/E_inc), layer fractions E_l/E_tot, per layer <r>/r_scale and
    width_r/r_scale, and <x>, <y> / r_scale for layers with angular bins. ``r_scale`` is the
    outermost radial edge of each layer, so that every feature is O(1).
    """

    def __init__(self, geometry: Geometry):
        import torch

        self.lm = torch.from_numpy(_layer_matrix(geometry))
        scale = np.concatenate([np.full(la.n_voxels, la.r_edges[-1]) for la in geometry.layers]).astype(np.float32)
        self.r = torch.from_numpy(_voxel_radius(geometry) / scale)
        x, y = _voxel_xy(geometry)
        self.x, self.y = torch.from_numpy(x / scale), torch.from_numpy(y / scale)
        self.ang = angular_layers(geometry)
        self.n_features = 1 + 3 * geometry.n_layers + 2 * len(self.ang)

    def __call__(self, showers, incident):
        import torch

        eps = 1e-6
        e_l = showers @ self.lm
        e_tot = e_l.sum(1, keepdim=True)
        denom = e_l + eps * e_tot + 1e-12
        mean_r = (showers * self.r) @ self.lm / denom
        mean_r2 = (showers * self.r * self.r) @ self.lm / denom
        width = torch.sqrt(torch.clamp(mean_r2 - mean_r**2, min=0) + 1e-8)
        cx = ((showers * self.x) @ self.lm / denom)[:, self.ang]
        cy = ((showers * self.y) @ self.lm / denom)[:, self.ang]
        log_ratio = torch.log(e_tot.squeeze(1) / incident + 1e-6).unsqueeze(1)
        return torch.cat([log_ratio, e_l / (e_tot + 1e-12), mean_r, width, cx, cy], dim=1)
