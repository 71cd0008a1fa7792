"""MET of the reference detector simulation: minus the vector sum of the reconstructed jets (with
the reconstructed muons inside them taken out), the reconstructed muons and the unclustered
particles (response below one, smeared with sumET and n_PU)."""

from __future__ import annotations

import numpy as np

from pipeline.physics.pdg import INVISIBLE_PDG_IDS
from pipeline.samples.detsim.arrays import _Flat, _sum_by
from pipeline.samples.detsim.config import _Cfg
from pipeline.samples.detsim.jets import _particle_jet


def _met(rng, parts: _Flat, jets: _Flat, real_jets: dict, pu_jets: dict, muons: dict, n_pu, det: _Cfg):
    c = det["met"]
    n_evt = len(parts.counts)
    apdg = np.abs(parts.pdgId)
    visible = ~np.isin(apdg, INVISIBLE_PDG_IDS) & (np.abs(parts.eta) < c.f("abs_eta_max"))

    jet_reco = np.zeros(len(jets), dtype=bool)
    jet_reco[real_jets["_global"]] = True
    pj = _particle_jet(parts, jets)
    in_reco_jet = np.zeros(len(parts), dtype=bool)
    in_reco_jet[pj >= 0] = jet_reco[pj[pj >= 0]]

    real_mu = ~muons["_fake"] & (muons["_self"] >= 0)
    mu_part = muons["_self"][real_mu]
    is_reco_mu = np.zeros(len(parts), dtype=bool)
    is_reco_mu[mu_part] = True

    # unclustered: visible particles neither in a reconstructed jet nor a reconstructed muon
    unc = visible & ~in_reco_jet & ~is_reco_mu
    ux = _sum_by(parts.evt[unc], parts.px[unc], n_evt)
    uy = _sum_by(parts.evt[unc], parts.py[unc], n_evt)
    sumet = _sum_by(parts.evt[unc], parts.pt[unc], n_evt)

    # jets, with the reco muons clustered inside them taken out (as the jet measured them)
    resp = np.zeros(len(jets))
    resp[real_jets["_global"]] = real_jets["_mu_scale"]
    mu_in_jet = in_reco_jet[mu_part]
    mj = pj[mu_part][mu_in_jet]
    sub_x = _sum_by(mj, parts.px[mu_part][mu_in_jet] * resp[mj], len(jets))
    sub_y = _sum_by(mj, parts.py[mu_part][mu_in_jet] * resp[mj], len(jets))
    g = real_jets["_global"]
    jx = real_jets["pt"] * np.cos(real_jets["phi"]) - sub_x[g]
    jy = real_jets["pt"] * np.sin(real_jets["phi"]) - sub_y[g]
    sx = _sum_by(real_jets["evt"], jx, n_evt) + _sum_by(pu_jets["evt"], pu_jets["pt"] * np.cos(pu_jets["phi"]), n_evt)
    sy = _sum_by(real_jets["evt"], jy, n_evt) + _sum_by(pu_jets["evt"], pu_jets["pt"] * np.sin(pu_jets["phi"]), n_evt)
    # reconstructed (non-fake) muons
    rm = ~muons["_fake"]
    sx += _sum_by(muons["evt"][rm], muons["pt"][rm] * np.cos(muons["phi"][rm]), n_evt)
    sy += _sum_by(muons["evt"][rm], muons["pt"][rm] * np.sin(muons["phi"][rm]), n_evt)
    # unclustered, with response and resolution
    sigma = np.sqrt(
        c.f("unclustered_constant_gev") ** 2
        + c.f("unclustered_stochastic_sqrt_gev") ** 2 * sumet
        + c.f("pileup_sigma_gev") ** 2 * n_pu
    )
    r_u = c.f("unclustered_response")
    sx += r_u * ux + sigma * rng.standard_normal(n_evt)
    sy += r_u * uy + sigma * rng.standard_normal(n_evt)
    return np.hypot(sx, sy), np.arctan2(-sy, -sx)
