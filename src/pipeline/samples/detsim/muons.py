"""Muons of the reference detector simulation: reconstruction efficiency, curvature smearing, the
true decay vertex from the GenPart ancestry and the impact parameters, isolation, medium/tight
IDs, and the fake muons from charged pions and kaons."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from pipeline import nanoaod
from pipeline.physics.ancestry import flat_mothers, walk_ancestors
from pipeline.physics.pdg import CTAU_CM, INVISIBLE_PDG_IDS, pdg_lookup
from pipeline.physics.tracks import track_impact_parameters
from pipeline.samples.detsim.arrays import _count_by, _delta_r2, _Flat, _sum_by, _wrap, same_event_pairs
from pipeline.samples.detsim.config import _Cfg, _interp
from pipeline.samples.detsim.sampling import _compound_poisson_exp


def _ancestry(genpart: _Flat, start: np.ndarray, rng, max_radius_cm: float):
    """Walk the mother chain of GenPart entries ``start`` (flat indices).

    Returns the true production vertex (x, y, z) [cm] relative to the primary vertex, summed over
    every weakly decaying ancestor (flight ``beta gamma c tau Exp(1)`` along its momentum,
    transverse flight truncated at ``max_radius_cm``), and whether a hadron is among the ancestors.
    """
    n = len(start)
    vtx = np.zeros((n, 3))
    has_hadron = np.zeros(n, dtype=bool)
    mother = flat_mothers(genpart.counts, genpart.genPartIdxMother)
    apdg = np.abs(genpart.pdgId)
    ctau_of = pdg_lookup(CTAU_CM, apdg)
    # mesons and baryons (not diquarks, not the beam nucleons)
    is_hadron = (apdg > 100) & (apdg < 1_000_000) & ((apdg // 10) % 10 != 0) & ~np.isin(apdg, (2212, 2112))

    for rows, a, same_as_mother in walk_ancestors(mother, apdg, start):
        has_hadron[rows] |= is_hadron[a]
        ctau = np.where(same_as_mother, 0.0, ctau_of[a])  # copies / B mixing: one flight
        lived = ctau > 0
        if lived.any():
            sel = rows[lived]
            ai = a[lived]
            m = np.maximum(genpart.mass[ai], 1e-3)
            pt, eta, phi = genpart.pt[ai], genpart.eta[ai], genpart.phi[ai]
            lam = pt / m * ctau[lived]  # mean transverse flight
            cap = 1.0 - np.exp(-max_radius_cm / np.maximum(lam, 1e-12))
            lt = -lam * np.log1p(-rng.random(len(ai)) * cap)
            vtx[sel, 0] += lt * np.cos(phi)
            vtx[sel, 1] += lt * np.sin(phi)
            vtx[sel, 2] += lt * np.sinh(eta)
    return vtx, has_hadron


def _impact_parameters(rng, vtx, pt, eta, phi, c: _Cfg):
    """dxy, dz (signed) and ip3d [cm] of a straight track from ``vtx`` with direction (eta, phi),
    smeared with the resolution."""
    n = len(pt)
    dxy, dz = track_impact_parameters(vtx, eta, phi)
    cosh = np.cosh(eta)
    ms = np.sqrt(cosh) / np.maximum(pt, 0.1)  # 1 / (pT sqrt(sin theta))
    s_dxy = np.hypot(c.f("dxy_const_cm"), c.f("dxy_ms_cm_gev") * ms)
    s_dz = np.hypot(c.f("dz_const_cm"), c.f("dz_ms_cm_gev") * ms) * cosh
    scale = np.where(rng.random(n) < c.f("tail_fraction"), c.f("tail_scale"), 1.0)
    dxy = dxy + scale * s_dxy * rng.standard_normal(n)
    dz = dz + scale * s_dz * rng.standard_normal(n)
    ip3d = np.sqrt(dxy**2 + (dz / cosh) ** 2)
    return dxy, dz, ip3d


def _smear_muon_momentum(rng, pt, eta, phi, charge, c: _Cfg):
    """Curvature smearing: returns reco pT, eta, phi, charge."""
    n = len(pt)
    rc = c["resolution"]
    aeta = np.abs(eta)
    b = _interp(aeta, rc.knots("abs_eta", "multiple_scattering"))
    a = _interp(aeta, rc.knots("abs_eta", "curvature_per_gev"))
    rel = np.hypot(a * pt, b)
    rel = rel * np.where(rng.random(n) < rc.f("tail_fraction"), rc.f("tail_scale"), 1.0)
    k = charge / np.maximum(pt, 1e-3)
    k_reco = k * (1.0 + rel * rng.standard_normal(n))
    q = np.where(k_reco >= 0, 1, -1)
    q = np.where(rng.random(n) < rc.f("charge_flip_probability"), -q, q)
    reco_pt = 1.0 / np.maximum(np.abs(k_reco), 1.0 / c.f("pt_max_gev"))
    reco_eta = eta + rc.f("eta_sigma") * rng.standard_normal(n)
    s_phi = np.hypot(rc.f("phi_const"), rc.f("phi_gev") / np.maximum(pt, 0.1))
    reco_phi = _wrap(phi + s_phi * rng.standard_normal(n))
    return reco_pt, reco_eta, reco_phi, q


def _muon_self_particle(parts: _Flat, genpart: _Flat, gp_idx: np.ndarray) -> np.ndarray:
    """Flat particle index of each GenPart muon ``gp_idx`` (flat), -1 if absent from particles."""
    out = np.full(len(gp_idx), -1, dtype=np.int64)
    if len(gp_idx) == 0:
        return out
    # exact: particles.genPartIdx
    lookup = np.full(len(genpart), -1, dtype=np.int64)
    has = parts.genPartIdx >= 0
    g = genpart.offsets[parts.evt[has]] + parts.genPartIdx[has]
    ok = g < len(genpart)
    lookup[g[ok]] = np.flatnonzero(has)[ok]
    out = lookup[gp_idx]
    # fallback: the closest particle muon within dR < 0.01
    miss = np.flatnonzero(out < 0)
    if len(miss):
        mu_pos = np.flatnonzero(np.abs(parts.pdgId) == 13)
        cnt = _count_by(parts.evt[mu_pos], len(parts.counts))
        off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        gm = gp_idx[miss]
        ia, ib = same_event_pairs(genpart.evt[gm], off, cnt)
        k = mu_pos[ib]
        dr2 = _delta_r2(genpart.eta[gm][ia], genpart.phi[gm][ia], parts.eta[k], parts.phi[k])
        good = dr2 < 1e-4
        order = np.lexsort((dr2[good], ia[good]))
        ia_g, k_g = ia[good][order], k[good][order]
        first = np.ones(len(ia_g), dtype=bool)
        first[1:] = ia_g[1:] != ia_g[:-1]
        out[miss[ia_g[first]]] = k_g[first]
    return out


def _isolation(rng, parts: _Flat, cand_evt, cand_eta, cand_phi, cand_self, cand_pt, n_pu, c: _Cfg):
    """pfRelIso04_all of each candidate from the particles around it plus pileup."""
    n_cand = len(cand_evt)
    trk_eta = c.f("tracker_abs_eta")
    apdg = np.abs(parts.pdgId)
    visible = ~np.isin(apdg, INVISIBLE_PDG_IDS)
    charged_trk = visible & (parts.charge != 0) & (np.abs(parts.eta) < trk_eta)
    neutral = visible & ~charged_trk
    # reconstructed pT of each particle, drawn once per particle
    npart = len(parts)
    reco = np.zeros(npart)
    ch_ok = charged_trk & (parts.pt > c.f("charged_pt_min_gev")) & (rng.random(npart) < c.f("charged_efficiency"))
    reco[ch_ok] = parts.pt[ch_ok]
    energy = np.maximum(parts.E, 1e-3)
    stoch = np.where(apdg == 22, c.f("photon_stochastic"), c.f("neutral_hadron_stochastic"))
    neu_reco = parts.pt * np.maximum(1.0 + stoch / np.sqrt(energy) * rng.standard_normal(npart), 0.0)
    neu_ok = neutral & (neu_reco > c.f("neutral_pt_min_gev"))
    reco[neu_ok] = neu_reco[neu_ok]
    used = np.flatnonzero(ch_ok | neu_ok)
    is_ch = ch_ok[used]
    # near the candidates only
    cnt = _count_by(parts.evt[used], len(parts.counts))
    off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    ia, ib = same_event_pairs(cand_evt, off, cnt)
    k = used[ib]
    inside = (_delta_r2(cand_eta[ia], cand_phi[ia], parts.eta[k], parts.phi[k]) < c.f("cone_dr") ** 2) & (
        k != cand_self[ia]
    )
    ch_sum = _sum_by(ia[inside & is_ch[ib]], reco[k][inside & is_ch[ib]], n_cand)
    neu_sum = _sum_by(ia[inside & ~is_ch[ib]], reco[k][inside & ~is_ch[ib]], n_cand)
    # pileup in the cone: compound Poisson, charged removed by vertex association but for a
    # misassociated fraction, neutral corrected with delta-beta
    npu = n_pu[cand_evt]
    mean_pt = c.f("pileup_particle_mean_pt_gev")
    mis = c.f("pileup_charged_misassociation")
    n_ch = c.f("pileup_charged_per_interaction") * npu
    pu_ch_kept = _compound_poisson_exp(rng, mis * n_ch, mean_pt)  # misassociated to the PV
    pu_ch_removed = _compound_poisson_exp(rng, (1.0 - mis) * n_ch, mean_pt)
    pu_neu = _compound_poisson_exp(rng, c.f("pileup_neutral_per_interaction") * npu, mean_pt)
    iso = ch_sum + pu_ch_kept + np.maximum(0.0, neu_sum + pu_neu - c.f("delta_beta") * pu_ch_removed)
    return iso / np.maximum(cand_pt, 1e-3)


def _id_probabilities(pt, cls_name: str, c: _Cfg, pt_min: float):
    idc = c["id"][cls_name]
    low = 1.0 - c["id"].f("low_pt_loss") * np.exp(-np.maximum(pt - pt_min, 0.0) / c["id"].f("low_pt_scale_gev"))
    return idc.f("medium") * low, idc.f("tight_given_medium")


def _simulate_muons(rng, genpart: _Flat, parts: _Flat, n_pu: np.ndarray, det: _Cfg, stage):
    c = det["muons"]
    pt_min, eta_max = c.f("pt_min_gev"), c.f("abs_eta_max")

    # --- real muons from stable GenPart muons
    cand = np.flatnonzero((np.abs(genpart.pdgId) == 13) & (genpart.status == 1))
    g_pt, g_eta, g_phi = genpart.pt[cand], genpart.eta[cand], genpart.phi[cand]
    ec = c["efficiency"]
    p = g_pt * np.cosh(g_eta)
    eff = _interp(np.abs(g_eta), ec.knots("abs_eta", "plateau")) * ndtr(
        (p - ec.f("p50_gev")) / ec.f("p_width_gev")
    )
    found = rng.random(len(cand)) < eff
    cand = cand[found]
    g_pt, g_eta, g_phi = g_pt[found], g_eta[found], g_phi[found]
    g_q = -np.sign(genpart.pdgId[cand]).astype(float)
    r_pt, r_eta, r_phi, r_q = _smear_muon_momentum(rng, g_pt, g_eta, g_phi, g_q, c)
    ipc = c["impact_parameter"]
    vtx, from_hadron = _ancestry(genpart, cand, rng, ipc.f("max_decay_radius_cm"))
    flags = genpart.statusFlags[cand]
    prompt_flag = (flags & ((1 << nanoaod.STATUS_FLAG_BITS["isPrompt"])
                            | (1 << nanoaod.STATUS_FLAG_BITS["isPromptTauDecayProduct"]))) != 0
    nonprompt = from_hadron | ((flags != 0) & ~prompt_flag)
    dxy, dz, ip3d = _impact_parameters(rng, vtx, g_pt, g_eta, g_phi, ipc)
    self_part = _muon_self_particle(parts, genpart, cand)
    real = {
        "evt": genpart.evt[cand], "pt": r_pt, "eta": r_eta, "phi": r_phi, "charge": r_q,
        "dxy": dxy, "dz": dz, "ip3d": ip3d, "genPartIdx": cand - genpart.offsets[genpart.evt[cand]],
        "_self": self_part, "_nonprompt": nonprompt, "_fake": np.zeros(len(cand), dtype=bool),
        "_gen_pt": g_pt, "_gen_eta": g_eta, "_gen_phi": g_phi,
    }

    # --- fake muons from charged pions and kaons
    fc = c["fakes"]
    apdg = np.abs(parts.pdgId)
    p_had = parts.pt * np.cosh(parts.eta)
    prob = np.where(apdg == 211, fc.f("pion_probability"), np.where(apdg == 321, fc.f("kaon_probability"), 0.0))
    prob = np.where((parts.charge != 0) & (p_had > fc.f("p_min_gev")) & (np.abs(parts.eta) < eta_max), prob, 0.0)
    fk = np.flatnonzero(rng.random(len(parts)) < prob)
    nf = len(fk)
    f_pt = parts.pt[fk] * rng.uniform(fc.f("momentum_fraction_min"), 1.0, nf)
    f_q = np.sign(parts.charge[fk])
    fr_pt, fr_eta, fr_phi, fr_q = _smear_muon_momentum(rng, f_pt, parts.eta[fk], parts.phi[fk], f_q, c)
    f_dxy, f_dz, _ = _impact_parameters(rng, np.zeros((nf, 3)), f_pt, parts.eta[fk], parts.phi[fk], ipc)
    f_dxy = f_dxy + rng.laplace(0.0, fc.f("dxy_scale_cm"), nf)
    f_dz = f_dz + rng.laplace(0.0, fc.f("dz_scale_cm"), nf)
    fake = {
        "evt": parts.evt[fk], "pt": fr_pt, "eta": fr_eta, "phi": fr_phi, "charge": fr_q,
        "dxy": f_dxy, "dz": f_dz, "ip3d": np.sqrt(f_dxy**2 + (f_dz / np.cosh(fr_eta)) ** 2),
        "genPartIdx": np.full(nf, -1, dtype=np.int64),
        "_self": fk, "_nonprompt": np.ones(nf, dtype=bool), "_fake": np.ones(nf, dtype=bool),
        "_gen_pt": f_pt, "_gen_eta": parts.eta[fk], "_gen_phi": parts.phi[fk],
    }
    mu = {k: np.concatenate([real[k], fake[k]]) for k in real}
    keep = (mu["pt"] > pt_min) & (np.abs(mu["eta"]) < eta_max)
    mu = {k: v[keep] for k, v in mu.items()}
    stage("isolation")

    # --- isolation (from the particles near the true direction)
    mu["pfRelIso04_all"] = _isolation(
        rng, parts, mu["evt"], mu["_gen_eta"], mu["_gen_phi"], mu["_self"], mu["pt"], n_pu, c["isolation"]
    )

    # --- identification
    nm = len(mu["pt"])
    p_med = np.empty(nm)
    p_tight = np.empty(nm)
    for name, mask in (
        ("prompt", ~mu["_nonprompt"] & ~mu["_fake"]), ("nonprompt", mu["_nonprompt"] & ~mu["_fake"]),
        ("fake", mu["_fake"]),
    ):
        pm, pt_ = _id_probabilities(mu["pt"][mask], name, c, pt_min)
        p_med[mask] = pm
        p_tight[mask] = pt_
    idc = c["id"]
    medium = rng.random(nm) < p_med
    tight = (
        medium & (rng.random(nm) < p_tight)
        & (np.abs(mu["dxy"]) < idc.f("tight_dxy_max_cm")) & (np.abs(mu["dz"]) < idc.f("tight_dz_max_cm"))
    )
    mu["mediumId"], mu["tightId"] = medium, tight
    mu["mass"] = np.full(nm, c.f("mass_gev"))
    return mu
