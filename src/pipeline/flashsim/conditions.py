"""Generator-level conditions of FlashSim, computed from the Gen* branches of a NanoAOD chunk.

They are the ``gen_*`` / ``ctx_*`` columns of the training tables (:mod:`pipeline.flashsim.tables`),
which are built by these same functions (:func:`jet_conditions`, :func:`muon_conditions`) with the
same acceptance (``training_tables.<obj>``); a test checks the equality row by row on a produced
sample. Everything here reads Gen* branches only and uses the shared physics
(:mod:`pipeline.physics`): flash-simulating a CMS file does not import the reference detector
simulation.

The held-out split of the validation is a function of the event number alone
(:func:`pipeline.seeds.is_holdout`), so a training table, a full-sim sample and a flash sample
agree on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from pipeline import features, io, nanoaod
from pipeline.physics.ancestry import flat_mothers, walk_ancestors
from pipeline.physics.pdg import CTAU_CM, PDG_MASS_GEV, pdg_lookup
from pipeline.physics.tracks import track_impact_parameters

# A nearest-neighbour dR when there is no neighbour: above any dR of two objects with |eta| < 4.9.
NO_NEIGHBOUR_DR = 10.0

GEN_MUON_PDGID = 13  # gen muon: |pdgId| == 13 and status == 1 (final state)

GENPART_FIELDS = ("pt", "eta", "phi", "mass", "pdgId", "status", "statusFlags", "genPartIdxMother")
GENJET_CTX_FIELDS = ("pt", "eta", "phi")

_FLAG = nanoaod.STATUS_FLAG_BITS


GENMET_PT = nanoaod.flat_branch(nanoaod.GENMET, "GenMET_pt")


def _np(values, dtype) -> np.ndarray:
    return np.asarray(ak.to_numpy(values)).astype(dtype, copy=False)


def needed_branches() -> list[str]:
    """Every input branch flash_generate reads: event ids, weight, GenMET and the GenJet/GenPart
    contract (all of which the flash sample carries over)."""
    return nanoaod.gen_branches()


def nearest(objs: ak.Array, others: ak.Array, same: bool = False, cone: float | None = None):
    """Per object in ``objs``: (dR, pT) of the nearest of ``others`` (sentinels if none) and, if
    ``cone`` is given, the scalar pT sum of ``others`` within dR < cone. ``same``: skip itself."""
    a = ak.zip({"eta": objs["eta"], "phi": objs["phi"]})
    b = ak.zip({"eta": others["eta"], "phi": others["phi"], "pt": others["pt"]})
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    dr = features.delta_r(pairs["a"]["eta"], pairs["a"]["phi"], pairs["b"]["eta"], pairs["b"]["phi"])
    if same:
        idx = ak.argcartesian({"a": a, "b": b}, axis=1, nested=True)
        dr = ak.where(idx["a"] == idx["b"], np.inf, dr)
    imin = ak.argmin(dr, axis=2, keepdims=True)
    dmin = ak.fill_none(ak.firsts(dr[imin], axis=2), np.inf)
    ptmin = ak.fill_none(ak.firsts(pairs["b"]["pt"][imin], axis=2), 0.0)
    none = dmin == np.inf
    out = [ak.where(none, NO_NEIGHBOUR_DR, dmin), ak.where(none, 0.0, ptmin)]
    if cone is not None:
        out.append(ak.sum(ak.where(dr < cone, pairs["b"]["pt"], 0.0), axis=2))
    return out


def jet_conditions(arrays: Mapping, acceptance: Mapping) -> dict[str, np.ndarray]:
    """Per gen jet in ``acceptance`` (``gen_pt_min_gev``, ``gen_abs_eta_max``): the columns of
    :data:`pipeline.flashsim.tables.JET_TABLE_COLUMNS` that are conditions, plus ``ev`` (event
    index in the chunk) and ``idx`` (index of the GenJet in its event, the future ``Jet_genJetIdx``)."""
    gj = io.collection(arrays, "GenJet", list(nanoaod.GENJET))
    gp = io.collection(arrays, "GenPart", ("pt", "eta", "phi", "pdgId", "status"))
    genmu = gp[(abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)]
    n_gj = _np(ak.num(gj, axis=1), np.int64)
    acc = (gj["pt"] > acceptance["gen_pt_min_gev"]) & (abs(gj["eta"]) < acceptance["gen_abs_eta_max"])
    acc_flat = _np(ak.flatten(acc), bool)
    ev = np.repeat(np.arange(len(n_gj)), n_gj)[acc_flat]
    dr_jj, pt_jj = nearest(gj, gj, same=True)
    (dr_jm, _) = nearest(gj, genmu)
    out = {f"gen_{f}": _np(ak.flatten(gj[f]), dt)[acc_flat] for f, dt in nanoaod.GENJET.items()}
    out.update({
        "ctx_n_genjets": n_gj[ev].astype(np.int32),
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_jj), np.float32)[acc_flat],
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_jj), np.float32)[acc_flat],
        "ctx_nearest_genmuon_dr": _np(ak.flatten(dr_jm), np.float32)[acc_flat],
        "ctx_genmet_pt": _np(arrays[GENMET_PT], np.float32)[ev],
        "ev": ev,
        "idx": _np(ak.flatten(ak.local_index(gj["pt"], axis=1)), np.int32)[acc_flat],
    })
    return out


def muon_conditions(arrays: Mapping, acceptance: Mapping) -> dict[str, np.ndarray]:
    """Per final-state gen muon in ``acceptance``: the condition columns of
    :data:`pipeline.flashsim.tables.MUON_TABLE_COLUMNS`, ``ev`` and ``idx`` (the GenPart index)."""
    gj = io.collection(arrays, "GenJet", GENJET_CTX_FIELDS)
    gp = io.collection(arrays, "GenPart", GENPART_FIELDS)
    n_gp = _np(ak.num(gp, axis=1), np.int64)
    is_mu = (abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)
    acc = is_mu & (gp["pt"] > acceptance["gen_pt_min_gev"]) & (abs(gp["eta"]) < acceptance["gen_abs_eta_max"])
    acc_flat = _np(ak.flatten(acc), bool)
    flat = {f: _np(ak.flatten(gp[f]), np.float64) for f in ("pt", "eta", "phi", "mass")}
    flight, vertex = ancestor_flight(n_gp, _np(ak.flatten(gp["pdgId"]), np.int64), flat["pt"], flat["eta"],
                                     flat["phi"], flat["mass"], _np(ak.flatten(gp["genPartIdxMother"]), np.int64),
                                     np.flatnonzero(acc_flat))
    ev = np.repeat(np.arange(len(n_gp)), n_gp)[acc_flat]
    cand = gp[acc]
    out = {f"gen_{f}": _np(ak.flatten(cand[f]), nanoaod.GENPART[f]) for f in ("pt", "eta", "phi")}
    pdg = _np(ak.flatten(cand["pdgId"]), np.int32)
    out["gen_charge"] = (-np.sign(pdg)).astype(np.int32)
    flags = _np(ak.flatten(cand["statusFlags"]), np.int64)
    prompt = (flags >> _FLAG["isPrompt"]) & 1 == 1
    prompt_tau = (flags >> _FLAG["isPromptTauDecayProduct"]) & 1 == 1
    out["gen_isPrompt"] = prompt
    out["gen_fromHadron"] = ~prompt & ~prompt_tau
    out["gen_fromPromptTau"] = prompt_tau
    out["gen_flight_cm"] = flight.astype(np.float32)
    exp_dxy, exp_dz = track_impact_parameters(vertex, flat["eta"][acc_flat], flat["phi"][acc_flat])
    out["gen_expected_dxy_cm"] = exp_dxy.astype(np.float32)
    out["gen_expected_dz_cm"] = exp_dz.astype(np.float32)
    dr_mj, pt_mj, sum04 = nearest(cand, gj, cone=0.4)
    out.update({
        "ctx_n_genjets": _np(ak.num(gj, axis=1), np.int32)[ev],
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_mj), np.float32),
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_mj), np.float32),
        "ctx_genjet_sumpt_dr04": _np(ak.flatten(sum04), np.float32),
        "ctx_nearest_genmuon_dr": _nearest_other(cand, gp[is_mu], gp, acc, is_mu),
        "ctx_genmet_pt": _np(arrays[GENMET_PT], np.float32)[ev],
        "ev": ev,
        "idx": _np(ak.flatten(ak.local_index(gp["pt"], axis=1)), np.int32)[acc_flat],
    })
    return out


def ancestor_flight(counts: np.ndarray, pdg: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                    mass: np.ndarray, mother_local: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected flight of the weakly decaying ancestors of GenPart entries ``start`` (flat indices
    into the flattened GenPart arrays, ``counts`` per event), with the PDG lifetimes of
    :data:`pipeline.physics.pdg.CTAU_CM` (the reference simulation's table); a copy of a particle
    (same pdgId as its mother) flies once. A mass that is not stored (CMS NanoAOD writes 0 for e.g.
    D0 and pi+) is taken from :data:`pipeline.physics.pdg.PDG_MASS_GEV`.

    Returns ``(flight_cm, vertex_cm)``: the sum over the mother chain of the mean transverse flight
    pT/m c tau (what the impact parameters of a non-prompt muon scale with), and the (n, 3) mean
    displacement of the production vertex from the primary one, sum of pT/m c tau (cos phi, sin phi,
    sinh eta) of each ancestor (what their signs and the 3D direction follow)."""
    mother = flat_mothers(counts, mother_local)
    apdg = np.abs(pdg)
    ctau = pdg_lookup(CTAU_CM, apdg)
    mass = np.where(mass > 0, mass, pdg_lookup(PDG_MASS_GEV, apdg, 1.0))
    flight = np.zeros(len(start))
    vertex = np.zeros((len(start), 3))
    for alive, a, copy in walk_ancestors(mother, apdg, start):
        lam = np.where(copy, 0.0, pt[a] / np.maximum(mass[a], 1e-3) * ctau[a])
        flight[alive] += lam
        fly = lam > 0  # only these: an incoming proton has eta = +-inf
        fa = a[fly]
        vertex[alive[fly]] += lam[fly, None] * np.column_stack([np.cos(phi[fa]), np.sin(phi[fa]), np.sinh(eta[fa])])
    return flight, vertex


def _nearest_other(cand, genmu, gp, acc, is_mu) -> np.ndarray:
    """dR from each candidate gen muon to the nearest *other* gen muon (by GenPart index)."""
    local = ak.local_index(gp["pt"], axis=1)
    a = ak.zip({"eta": cand["eta"], "phi": cand["phi"], "i": local[acc]})
    b = ak.zip({"eta": genmu["eta"], "phi": genmu["phi"], "i": local[is_mu]})
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    dr = features.delta_r(pairs["a"]["eta"], pairs["a"]["phi"], pairs["b"]["eta"], pairs["b"]["phi"])
    dr = ak.where(pairs["a"]["i"] == pairs["b"]["i"], np.inf, dr)
    dmin = _np(ak.flatten(ak.fill_none(ak.min(dr, axis=2), np.inf)), np.float32)
    return np.where(np.isinf(dmin), NO_NEIGHBOUR_DR, dmin).astype(np.float32)


CONDITION_BUILDERS = {"jets": jet_conditions, "muons": muon_conditions}
