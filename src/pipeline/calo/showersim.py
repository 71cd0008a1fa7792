"""The reference shower simulation: GFlash-like spot-by-spot deposition, vectorised numpy.

It plays the role of Geant4 for the calorimeter GAN: slow compared to the GAN, stochastic, seeded,
every tunable number in ``calo.simulation`` of the config. Per shower of incident energy E:

1. **Start.** Electrons start showering at the front face; photons first convert after a depth
   drawn from Exp(mean ``photon_conversion_x0`` = 9/7 X0), so their showers start later and
   fluctuate more.
2. **Longitudinal profile** (Grindhammer & Peters, "The parameterized simulation of
   electromagnetic showers in homogeneous and sampling calorimeters", hep-ex/0001020): energy
   density dE/dt ~ Gamma(t; alpha, beta) in radiation lengths t, peak depth T = (alpha-1)/beta.
   ln T and ln alpha are drawn per shower from a correlated 2-D Gaussian with energy-dependent
   means, widths and correlation (y = E / E_c):
   <ln T> = ln(ln y - 0.812), <ln alpha> = ln(0.81 + (0.458 + 2.26/Z) ln y),
   sigma(ln T) = 1/(-1.4 + 1.26 ln y), sigma(ln alpha) = 1/(-0.58 + 0.86 ln y),
   rho = 0.705 - 0.023 ln y. So the shower maximum moves deeper as ln E.
3. **Spots.** N_spots = clip(``spots_per_gev`` E[GeV]^``spots_exponent``, ``spots_min``,
   ``spots_max``). Each spot gets a depth drawn from its shower's Gamma profile, so
   layers see the fluctuating profile of that shower, not the average.
4. **Lateral profile**: two components (core and halo), f(r) = 2 r R^2 / (r^2 + R^2)^2 each,
   with R_C, R_T (in Moliere radii) and the core probability p depending on tau = t/T and on ln E
   and Z as in GFlash. Sampled by inversion, r = R sqrt(u / (1 - u)); azimuth uniform. Per shower
   the core radius fluctuates by a log-normal factor (``lateral_fluctuation``) and the shower axis
   is displaced by a Gaussian (``impact_sigma_mm``).
5. **Sampling fluctuations.** The spots of a shower carry Gamma-distributed energies of mean
   E/N and shape k = E[GeV] / (N a^2), so the deposited energy fluctuates with
   sigma/E = a / sqrt(E[GeV]) (``stochastic``) wherever it lands; a per-shower calibration
   factor 1 + ``constant`` N(0, 1) adds the constant term.
6. **Leakage, noise, threshold.** Spots beyond the last layer or the outermost radial edge are
   lost (longitudinal and lateral leakage: the response falls below 1 at high energy). Every
   voxel gets Gaussian electronics noise (``noise_mev``) and voxels below ``threshold_mev`` read
   zero (zero suppression), so showers are sparse and never negative.

Pions are not simulated (no credible hadronic model here).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import numpy as np

from pipeline.calo.geometry import Geometry
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SIMULATED_PARTICLES = ("photon", "electron", "positron")


def sample_energies(n: int, emin_mev: float, emax_mev: float, rng: np.random.Generator) -> np.ndarray:
    """Incident energies log-uniform in [emin, emax] [MeV]."""
    return np.exp(rng.uniform(math.log(emin_mev), math.log(emax_mev), n))


def _longitudinal(lny: np.ndarray, z: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower (T, alpha) from GFlash's correlated log-normal parametrisation."""
    lny = np.maximum(lny, 2.0)  # the fits hold for y >~ 10; keep widths finite at the lowest energies
    mean_lnt = np.log(lny - 0.812)
    mean_lna = np.log(0.81 + (0.458 + 2.26 / z) * lny)
    s_t = 1.0 / (-1.4 + 1.26 * lny)
    s_a = 1.0 / (-0.58 + 0.86 * lny)
    rho = np.clip(0.705 - 0.023 * lny, -0.99, 0.99)
    g1, g2 = rng.standard_normal((2, len(lny)))
    t_peak = np.exp(mean_lnt + s_t * g1)
    alpha = np.exp(mean_lna + s_a * (rho * g1 + np.sqrt(1 - rho**2) * g2))
    return t_peak, np.maximum(alpha, 1.05)


def _lateral_radius(tau: np.ndarray, ln_e: np.ndarray, z: float, core_scale: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Radial distance of each spot [Moliere radii] from GFlash's two-component profile."""
    r_core = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z) * tau
    k1, k2, k3, k4 = 0.659 - 0.00309 * z, 0.645, -2.59, 0.3585 + 0.0421 * ln_e
    r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2, p3 = 0.2632 - 0.00094 * z, 0.401 + 0.00187 * z, 1.313 - 0.0686 * ln_e
    arg = (p2 - tau) / p3
    p_core = np.clip(p1 * np.exp(arg - np.exp(arg)), 0.0, 1.0)
    radius = np.where(rng.random(len(tau)) < p_core, r_core * core_scale, r_tail)
    u = rng.random(len(tau))
    return radius * np.sqrt(u / (1.0 - u))


def _check(sim: Mapping, geometry: Geometry, particle: str) -> None:
    if particle not in SIMULATED_PARTICLES:
        raise ConfigError(f"calo.samples: particle '{particle}' is not simulated by the reference "
                          f"(choose from {', '.join(SIMULATED_PARTICLES)}, or give a CaloChallenge file)")
    if not geometry.has_depth():
        raise ConfigError("calo.geometries: the reference simulation needs every layer's depth (x0)")


def simulate(energies_mev: np.ndarray, particle: str, geometry: Geometry, sim: Mapping,
             rng: np.random.Generator, batch: int = 1000) -> np.ndarray:
    """Showers (N, n_voxels) [MeV] for the incident energies ``energies_mev``, in batches."""
    _check(sim, geometry, particle)
    energies_mev = np.asarray(energies_mev, dtype=np.float64).reshape(-1)
    out = np.zeros((len(energies_mev), geometry.n_voxels), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(energies_mev), batch):
        stop = min(start + batch, len(energies_mev))
        out[start:stop] = _simulate_batch(energies_mev[start:stop], particle, geometry, sim, rng)
        if stop == len(energies_mev) or (start // batch) % 10 == 0:
            log.info("simulated %d/%d %s showers (%.1f s)", stop, len(energies_mev), particle,
                     time.perf_counter() - t0)
    return out


def _simulate_batch(e_mev: np.ndarray, particle: str, geometry: Geometry, sim: Mapping,
                    rng: np.random.Generator) -> np.ndarray:
    nb, nvox = len(e_mev), geometry.n_voxels
    mat = sim["material"]
    z, ec, rm = float(mat["z_eff"]), float(mat["critical_energy_mev"]), float(mat["moliere_radius_mm"])
    e_gev = e_mev / 1000.0
    ln_e = np.log(e_gev)
    t_peak, alpha = _longitudinal(np.log(e_mev / ec), z, rng)
    beta = (alpha - 1.0) / t_peak
    if particle == "photon":
        t_start = rng.exponential(float(sim["photon_conversion_x0"]), nb)
    else:
        t_start = np.zeros(nb)
    sp = sim["spots"]
    n_spots = np.clip(np.ceil(sp["per_gev"] * e_gev ** sp["exponent"]), sp["min"], sp["max"]).astype(np.int64)
    shower = np.repeat(np.arange(nb), n_spots)
    n_tot = int(n_spots.sum())

    # longitudinal: depth after the shower start, Gamma(alpha, 1/beta)
    depth = rng.standard_gamma(alpha[shower]) / beta[shower]
    t = t_start[shower] + depth
    # sampling fluctuations: Gamma-distributed spot energies, relative variance a^2 / E[GeV] per shower
    a = float(sim["response"]["stochastic"])
    k = e_gev / (n_spots * a * a) if a > 0 else np.full(nb, np.inf)
    k_s = k[shower]
    finite_k = np.isfinite(k_s)
    weight = np.ones(n_tot)
    weight[finite_k] = rng.standard_gamma(k_s[finite_k]) / k_s[finite_k]
    energy = (e_mev / n_spots)[shower] * weight

    # lateral
    core_scale = np.exp(float(sim["lateral_fluctuation"]) * rng.standard_normal(nb))
    r = _lateral_radius(depth / t_peak[shower], ln_e[shower], z, core_scale[shower], rng) * rm
    phi = rng.uniform(-math.pi, math.pi, n_tot)
    impact = rng.normal(0.0, float(sim["impact_sigma_mm"]), (2, nb))
    x = impact[0][shower] + r * np.cos(phi)
    y = impact[1][shower] + r * np.sin(phi)
    rr = np.hypot(x, y)
    aa = np.arctan2(y, x)

    # voxelise layer by layer
    ends = np.array([la.x0_end for la in geometry.layers])
    layer_of = np.searchsorted(ends, t, side="right")  # n_layers: leaked out of the back
    vox = np.full(n_tot, -1, dtype=np.int64)
    offsets = geometry.layer_offsets
    for li, layer in enumerate(geometry.layers):
        m = layer_of == li
        edges = np.asarray(layer.r_edges)
        rbin = np.searchsorted(edges, rr[m], side="right") - 1
        abin = np.floor(((aa[m] + math.pi - layer.alpha_offset) % (2 * math.pi)) / (2 * math.pi) * layer.n_alpha)
        abin = np.minimum(abin.astype(np.int64), layer.n_alpha - 1)
        inside = (rbin >= 0) & (rbin < layer.n_r)
        vox[np.flatnonzero(m)[inside]] = offsets[li] + abin[inside] * layer.n_r + rbin[inside]
    keep = vox >= 0
    flat = np.bincount(shower[keep] * nvox + vox[keep], weights=energy[keep], minlength=nb * nvox)
    showers = flat.reshape(nb, nvox)

    resp = sim["response"]
    showers *= np.maximum(1.0 + float(resp["constant"]) * rng.standard_normal(nb), 0.0)[:, None]
    if resp["noise_mev"] > 0:
        showers += rng.normal(0.0, float(resp["noise_mev"]), showers.shape)
    showers[showers < float(resp["threshold_mev"])] = 0.0
    return showers.astype(np.float32)


def reference_sample(n: int, particle: str, geometry: Geometry, calo_cfg: Mapping,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(incident energies, showers) of ``n`` showers with log-uniform energies from the config."""
    e = sample_energies(n, float(calo_cfg["energy_min_mev"]), float(calo_cfg["energy_max_mev"]), rng)
    return e, simulate(e, particle, geometry, calo_cfg["simulation"], rng)
