"""PDG tables: the physical constants (not detector parameters, hence not in the config) that the
generator, the reference detector simulation and the FlashSim conditions share."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Proper decay lengths c*tau [cm] of the weakly decaying ancestors of muons (PDG 2024). These are
# physical constants, not detector parameters, hence not in the config.
CTAU_CM: dict[int, float] = {
    15: 0.008703,  # tau
    411: 0.03118, 421: 0.01229, 431: 0.01510, 4122: 0.00606,  # D+, D0, Ds, Lambda_c
    4132: 0.00458, 4232: 0.0136, 4332: 0.00803,  # Xi_c0, Xi_c+, Omega_c
    511: 0.04557, 521: 0.04911, 531: 0.04527, 541: 0.01529,  # B0, B+, Bs, Bc
    5122: 0.04406, 5132: 0.0469, 5232: 0.0455, 5332: 0.0498,  # Lambda_b, Xi_b-, Xi_b0, Omega_b
    211: 780.45, 321: 371.2, 130: 1534.0, 310: 2.6844,  # pi+, K+, K_L, K_S
    3122: 7.89, 3222: 2.404, 3112: 4.434, 3312: 4.91, 3322: 8.71, 3334: 2.461,  # hyperons
}

#: PDG masses [GeV] (PDG 2024) of the weakly decaying species of the lifetime table, for GenPart
#: entries without a stored mass.
PDG_MASS_GEV: dict[int, float] = {
    15: 1.77686, 411: 1.86966, 421: 1.86484, 431: 1.96835, 4122: 2.28646, 4132: 2.47044, 4232: 2.46771,
    4332: 2.6952, 511: 5.27966, 521: 5.27934, 531: 5.36688, 541: 6.27447, 5122: 5.6196, 5132: 5.7970,
    5232: 5.7919, 5332: 6.0452, 211: 0.13957, 321: 0.49368, 130: 0.49761, 310: 0.49761, 3122: 1.11568,
    3222: 1.18937, 3112: 1.19745, 3312: 1.32171, 3322: 1.31486, 3334: 1.67245,
}

#: |pdgId| of the neutrinos (PDG Monte Carlo numbering scheme): nu_e, nu_mu, nu_tau.
NEUTRINO_PDG_IDS: tuple[int, ...] = (12, 14, 16)

#: |pdgId| of the particles no detector sees (PDG Monte Carlo numbering scheme): the neutrinos, the
#: sneutrino ~nu_eL (1000012), the lightest neutralino (1000022) and the gravitino (1000039).
#: Excluded from gen jets and summed into GenMET by the generator; invisible to the reference
#: detector simulation (isolation, MET).
INVISIBLE_PDG_IDS: tuple[int, ...] = (*NEUTRINO_PDG_IDS, 1000012, 1000022, 1000039)


def pdg_lookup(table: Mapping[int, float], abs_pdg: np.ndarray, default: float = 0.0) -> np.ndarray:
    """``table[|pdgId|]`` per entry (e.g. :data:`CTAU_CM`), ``default`` where the code is not in it."""
    codes = np.array(sorted(table))
    values = np.array([table[c] for c in codes], dtype=np.float64)
    pos = np.clip(np.searchsorted(codes, abs_pdg), 0, len(codes) - 1)
    return np.where(codes[pos] == abs_pdg, values[pos], default)
