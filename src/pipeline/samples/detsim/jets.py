"""Jets of the reference detector simulation: reconstruction efficiency, pT response (flavour,
neutral-hadron fraction, double-sided Crystal Ball tails), direction and mass, constituents, qgl,
btagDeepFlavB, jet ID, and the pileup jets."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtr

from pipeline.physics.pdg import NEUTRINO_PDG_IDS
from pipeline.samples.detsim.arrays import _count_by, _delta_r2, _Flat, _sum_by, _wrap, same_event_pairs
from pipeline.samples.detsim.config import _Cfg, _interp
from pipeline.samples.detsim.sampling import (
    _binomial,
    _sample_piecewise_density,
    _truncated_power_law,
    sample_double_crystal_ball,
)

# Jet flavour classes of the response shift.
LIGHT_QUARK, GLUON, CHARM, BOTTOM, UNKNOWN = range(5)
_TAIL_CLASSES = ("light", "charm", "bottom", "semileptonic")


def _flavour_class(hadron: np.ndarray, parton: np.ndarray) -> np.ndarray:
    cls = np.full(len(hadron), UNKNOWN, dtype=np.int64)
    ap = np.abs(parton)
    cls[(ap >= 1) & (ap <= 5)] = LIGHT_QUARK
    cls[ap == 21] = GLUON
    cls[hadron == 4] = CHARM
    cls[hadron == 5] = BOTTOM
    return cls


def _particle_jet(parts: _Flat, jets: _Flat) -> np.ndarray:
    """Flat gen-jet index of each particle (-1: not clustered into a stored gen jet)."""
    ok = (parts.genJetIdx >= 0) & (parts.genJetIdx < jets.counts[parts.evt])
    return np.where(ok, jets.offsets[parts.evt] + parts.genJetIdx, -1)


def _jet_lepton_content(parts: _Flat, jets: _Flat, nu_cone_dr: float):
    """Per gen jet: muon and electron pT fractions of its constituents, and the pT fraction of
    neutrinos within ``nu_cone_dr`` (gen jets exclude neutrinos)."""
    njet = len(jets)
    gidx = _particle_jet(parts, jets)
    in_jet = gidx >= 0
    apdg = np.abs(parts.pdgId)
    denom = np.maximum(jets.pt, 1e-9)
    mu = _sum_by(gidx[in_jet & (apdg == 13)], parts.pt[in_jet & (apdg == 13)], njet) / denom
    el = _sum_by(gidx[in_jet & (apdg == 11)], parts.pt[in_jet & (apdg == 11)], njet) / denom

    is_nu = np.isin(apdg, NEUTRINO_PDG_IDS)
    nu_pos = np.flatnonzero(is_nu)
    nu_counts = _count_by(parts.evt[nu_pos], len(jets.counts))
    nu_offsets = np.concatenate([[0], np.cumsum(nu_counts)[:-1]])
    ij, inu = same_event_pairs(jets.evt, nu_offsets, nu_counts)
    k = nu_pos[inu]
    close = _delta_r2(jets.eta[ij], jets.phi[ij], parts.eta[k], parts.phi[k]) < nu_cone_dr**2
    nu = _sum_by(ij[close], parts.pt[k][close], njet) / denom
    return mu, el, nu


def _btag(rng, flav_hadron: np.ndarray, pt: np.ndarray, eta: np.ndarray, c: _Cfg) -> np.ndarray:
    """btagDeepFlavB: sigmoid of a flavour-dependent Gaussian mixture in the logit."""
    n = len(pt)
    perf = c["performance"]
    abs_eta_max = c.f("abs_eta_max")
    d = (
        1.0
        - perf.f("abs_eta_coefficient") * (np.abs(eta) / max(abs_eta_max, 1e-6)) ** 2
        - perf.f("low_pt_coefficient") * np.exp(-(np.maximum(pt, 20.0) - 20.0) / perf.f("low_pt_scale_gev"))
        - perf.f("high_pt_coefficient") * np.log(np.maximum(pt / perf.f("high_pt_ref_gev"), 1.0))
    )
    d = np.clip(d, perf.f("minimum"), 1.0)
    pivot = perf.f("pivot")

    mean = np.empty(n)
    sigma = np.empty(n)
    is_b, is_c = flav_hadron == 5, flav_hadron == 4
    is_l = ~(is_b | is_c)
    u = rng.random(n)
    b_untag = is_b & (u < c["bottom_untagged"].f("fraction"))
    l_mis = is_l & (u < c["light_mistag"].f("fraction"))
    for mask, key in (
        (is_b & ~b_untag, "bottom"), (b_untag, "bottom_untagged"), (is_c, "charm"),
        (is_l & ~l_mis, "light"), (l_mis, "light_mistag"),
    ):
        mean[mask] = c[key].f("mean")
        sigma[mask] = c[key].f("sigma")
    z = pivot + d * (mean - pivot) + sigma * rng.standard_normal(n)
    score = expit(z)
    return np.where(np.abs(eta) < abs_eta_max, score, c.f("default"))


def _qgl(rng, ptd, axis2, mult, pt, eta, c: _Cfg) -> np.ndarray:
    """Quark-gluon likelihood-like discriminant from smeared ptD, ln(axis2) and multiplicity."""
    n = len(pt)
    ptd_r = np.clip(ptd + c.f("ptd_smear") * rng.standard_normal(n), 0.0, 1.0)
    nla = -(np.log(np.maximum(axis2, c.f("axis2_min"))) + c.f("log_axis2_smear") * rng.standard_normal(n))
    lpt = np.log(np.maximum(pt, 1.0) / c.f("pt_ref_gev"))
    t = (
        (ptd_r - (c.f("ptd_centre") + c.f("ptd_slope") * lpt)) / c.f("ptd_scale")
        + (nla - (c.f("neg_log_axis2_centre") + c.f("neg_log_axis2_slope") * lpt)) / c.f("neg_log_axis2_scale")
        - (mult - (c.f("multiplicity_centre") + c.f("multiplicity_slope") * lpt)) / c.f("multiplicity_scale")
    )
    k = c.f("sharpness") * _interp(np.abs(eta), c.knots("abs_eta", "sharpness_scale"))
    return expit(k * t)


def _simulate_jets(rng, jets: _Flat, parts: _Flat, n_pu: np.ndarray, det: _Cfg) -> dict:
    c = det["jets"]
    mean_pu = max(det["pileup"].f("mean_interactions"), 1e-9)
    n = len(jets)
    pt, eta, phi = jets.pt, jets.eta, jets.phi
    aeta = np.abs(eta)
    pu_ratio = n_pu[jets.evt] / mean_pu

    # reconstruction efficiency
    eff_c = c["efficiency"]
    eff = _interp(aeta, eff_c.knots("abs_eta", "plateau")) * ndtr(
        (pt - eff_c.f("pt50_gev")) / eff_c.f("width_gev")
    )
    found = rng.random(n) < eff

    # The muons of the jet are measured by the tracker (PF muons); the hadronic remainder gets the
    # calorimeter/PF response: median (flavour, neutral-hadron fraction), core width, tails.
    tc = c["tails"]
    mu_frac, el_frac, nu_frac = _jet_lepton_content(parts, jets, tc.f("nu_cone_dr"))
    mu_frac = np.clip(mu_frac, 0.0, 1.0)
    pt_had = np.maximum(pt * (1.0 - mu_frac), 1e-3)

    res = c["resolution"]
    noise = _interp(aeta, res.knots("abs_eta", "noise_gev"))
    fpu = res.f("noise_pileup_fraction")
    noise2 = noise**2 * ((1.0 - fpu) + fpu * pu_ratio)
    stoch = _interp(aeta, res.knots("abs_eta", "stochastic_sqrt_gev"))
    const = _interp(aeta, res.knots("abs_eta", "constant"))
    sigma = np.sqrt(noise2 / pt_had**2 + stoch**2 / pt_had + const**2)

    rc = c["response"]
    flav = _flavour_class(jets.hadronFlavour, jets.partonFlavour)
    shifts = np.array([rc.f("shift_light_quark"), rc.f("shift_gluon"), rc.f("shift_charm"),
                       rc.f("shift_bottom"), rc.f("shift_unknown")])
    f_nh = np.clip(1.0 - jets.chargedPtFraction - jets.photonPtFraction, 0.0, 1.0)
    damp = (rc.f("pt_ref_gev") / np.maximum(pt_had, rc.f("pt_ref_gev"))) ** rc.f("pt_power")
    mu = 1.0 + (shifts[flav] + rc.f("neutral_hadron_slope") * (f_nh - rc.f("neutral_hadron_reference"))) * damp

    tail_cls = np.zeros(n, dtype=np.int64)  # light
    tail_cls[jets.hadronFlavour == 4] = 1
    tail_cls[jets.hadronFlavour == 5] = 2
    tail_cls[(jets.hadronFlavour >= 4) & (nu_frac > tc.f("semileptonic_nu_fraction"))] = 3
    tail_par = np.array([[tc[k].f(p) for p in ("alpha_low", "n_low", "alpha_high", "n_high")]
                         for k in _TAIL_CLASSES])[tail_cls]
    t = sample_double_crystal_ball(rng, tail_par[:, 0], tail_par[:, 1], tail_par[:, 2], tail_par[:, 3])
    r_had = np.clip(mu + sigma * t, rc.f("min"), rc.f("max"))
    mu_scale = 1.0 + res.f("muon_relative") * rng.standard_normal(n)
    reco_pt = pt_had * r_had + pt * mu_frac * mu_scale
    r = reco_pt / np.maximum(pt, 1e-9)
    ptc = np.maximum(pt, 1.0)

    # direction and mass
    ac = c["angular"]
    ascale = _interp(aeta, ac.knots("abs_eta", "scale"))
    s_eta = ascale * np.hypot(ac.f("eta_const"), ac.f("eta_gev") / ptc)
    s_phi = ascale * np.hypot(ac.f("phi_const"), ac.f("phi_gev") / ptc)
    reco_eta = eta + s_eta * rng.standard_normal(n)
    reco_phi = _wrap(phi + s_phi * rng.standard_normal(n))
    mc = c["mass"]
    s_m = np.hypot(mc.f("sigma_const"), mc.f("sigma_gev") / ptc)
    reco_mass = np.abs(jets.mass * r * (1.0 + s_m * rng.standard_normal(n)))

    # constituents
    cc = c["constituents"]
    in_trk = aeta < cc.f("tracker_abs_eta")
    n_ch = jets.nCharged
    n_neu = np.maximum(jets.nConstituents - n_ch, 0)
    n_c = np.where(
        in_trk,
        _binomial(rng, n_ch, cc.f("charged_efficiency")) + _binomial(rng, n_neu, cc.f("neutral_efficiency")),
        _binomial(rng, jets.nConstituents, cc.f("forward_efficiency")),
    ) + rng.poisson(cc.f("pileup_per_interaction") * n_pu[jets.evt])
    n_c = np.maximum(n_c, 1)

    qgl = _qgl(rng, jets.ptD, jets.axis2, n_c, reco_pt, reco_eta, c["qgl"])
    btag = _btag(rng, jets.hadronFlavour, reco_pt, reco_eta, det["btag"])

    # jet ID: tight, and tightLepVeto from the lepton pT fractions
    jc = c["jet_id"]
    tight = rng.random(n) < _interp(np.abs(reco_eta), jc.knots("abs_eta", "tight_efficiency"))
    smear = jc.f("lepton_fraction_smear")
    lep_max = jc.f("lepton_fraction_max")
    lep_ok = (mu_frac + smear * rng.standard_normal(n) < lep_max) & (
        el_frac + smear * rng.standard_normal(n) < lep_max
    )
    lep_ok |= np.abs(reco_eta) >= jc.f("lepton_veto_abs_eta_max")
    jet_id = np.where(tight, np.where(lep_ok, 6, 2), 0)

    keep = found & (reco_pt > c.f("pt_min_gev")) & (np.abs(reco_eta) < c.f("abs_eta_max"))
    idx = np.flatnonzero(keep)
    return {
        "evt": jets.evt[idx],
        "pt": reco_pt[idx], "eta": reco_eta[idx], "phi": reco_phi[idx], "mass": reco_mass[idx],
        "btagDeepFlavB": btag[idx], "qgl": qgl[idx], "nConstituents": n_c[idx],
        "jetId": jet_id[idx], "hadronFlavour": jets.hadronFlavour[idx],
        "genJetIdx": (np.arange(n) - jets.offsets[jets.evt])[idx],
        "_global": idx, "_mu_scale": mu_scale[idx],
    }


def _pileup_jets(rng, n_pu: np.ndarray, real: dict, det: _Cfg) -> dict:
    pc = det["pileup"]["jets"]
    jc = det["jets"]
    eta_max = jc.f("abs_eta_max")
    counts = rng.poisson(pc.f("per_interaction") * n_pu)
    m = int(counts.sum())
    evt = np.repeat(np.arange(len(n_pu)), counts)
    pt = _truncated_power_law(rng, m, pc.f("pt_min_gev"), pc.f("pt_max_gev"), pc.f("pt_power"))
    eta = _sample_piecewise_density(rng, m, pc.knots("abs_eta", "density"), eta_max)
    eta *= np.where(rng.random(m) < 0.5, -1.0, 1.0)
    phi = rng.uniform(-np.pi, np.pi, m)
    mass = pt * rng.uniform(pc.f("mass_over_pt_min"), pc.f("mass_over_pt_max"), m)
    n_c = 1 + rng.poisson(pc.f("n_constituents_mean"), m)
    qgl = rng.beta(pc.f("qgl_beta_a"), pc.f("qgl_beta_b"), m)
    btag = _btag(rng, np.zeros(m, dtype=np.int64), pt, eta, det["btag"])
    jet_id = np.where(rng.random(m) < pc.f("tight_id_efficiency"), 6, 0)

    # merge with (drop if overlapping) a reconstructed hard-scatter jet
    rc = _count_by(real["evt"], len(n_pu))
    ro = np.concatenate([[0], np.cumsum(rc)[:-1]])
    i_f, i_r = same_event_pairs(evt, ro, rc)
    close = _delta_r2(eta[i_f], phi[i_f], real["eta"][i_r], real["phi"][i_r]) < pc.f("overlap_dr") ** 2
    overlap = np.zeros(m, dtype=bool)
    overlap[i_f[close]] = True
    keep = np.flatnonzero(~overlap & (pt > jc.f("pt_min_gev")))
    return {
        "evt": evt[keep], "pt": pt[keep], "eta": eta[keep], "phi": phi[keep], "mass": mass[keep],
        "btagDeepFlavB": btag[keep], "qgl": qgl[keep], "nConstituents": n_c[keep],
        "jetId": jet_id[keep], "hadronFlavour": np.zeros(len(keep), dtype=np.int64),
        "genJetIdx": np.full(len(keep), -1, dtype=np.int64),
    }
