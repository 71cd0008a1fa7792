"""Generator-level conditions of FlashSim, computed from the Gen* branches of a NanoAOD chunk.

They must be exactly the ``gen_*`` / ``ctx_*`` columns of the training tables
(:mod:`pipeline.skim`), so they are built with the same helpers (``_nearest``,
``_nearest_other``) and the same acceptance (``training_tables.<obj>``); a test checks the
equality row by row on a produced sample.

The held-out split of the validation is a function of the event number alone
(:func:`is_holdout`), so a training table, a full-sim sample and a flash sample agree on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from pipeline import io, nanoaod
from pipeline import skim as _skim

GEN_MUON_PDGID = _skim.GEN_MUON_PDGID
_FLAG = nanoaod.STATUS_FLAG_BITS


def is_holdout(event: np.ndarray, fraction: float) -> np.ndarray:
    """True for the events of the validation split: a hash of the event number (splitmix64)
    below ``fraction``. The same event number is in the same split in every file and table."""
    x = np.asarray(event, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53 < float(fraction)


def needed_branches() -> list[str]:
    """Every input branch flash_generate reads: event ids, weight, GenMET and the GenJet/GenPart
    contract (all of which the flash sample carries over)."""
    return nanoaod.gen_branches()


def _np(a, dtype) -> np.ndarray:
    return np.asarray(ak.to_numpy(a)).astype(dtype, copy=False)


def jet_conditions(arrays: Mapping, acceptance: Mapping) -> dict[str, np.ndarray]:
    """Per gen jet in ``acceptance`` (``gen_pt_min_gev``, ``gen_abs_eta_max``): the columns of
    :data:`pipeline.skim.JET_TABLE_COLUMNS` that are conditions, plus ``ev`` (event index in the
    chunk) and ``idx`` (index of the GenJet in its event, the future ``Jet_genJetIdx``)."""
    gj = io.collection(arrays, "GenJet", list(nanoaod.GENJET))
    gp = io.collection(arrays, "GenPart", ("pt", "eta", "phi", "pdgId", "status"))
    genmu = gp[(abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)]
    n_gj = _np(ak.num(gj, axis=1), np.int64)
    acc = (gj["pt"] > acceptance["gen_pt_min_gev"]) & (abs(gj["eta"]) < acceptance["gen_abs_eta_max"])
    acc_flat = _np(ak.flatten(acc), bool)
    ev = np.repeat(np.arange(len(n_gj)), n_gj)[acc_flat]
    dr_jj, pt_jj = _skim._nearest(gj, gj, same=True)
    (dr_jm, _) = _skim._nearest(gj, genmu)
    out = {f"gen_{f}": _np(ak.flatten(gj[f]), dt)[acc_flat] for f, dt in nanoaod.GENJET.items()}
    out.update({
        "ctx_n_genjets": n_gj[ev].astype(np.int32),
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_jj), np.float32)[acc_flat],
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_jj), np.float32)[acc_flat],
        "ctx_nearest_genmuon_dr": _np(ak.flatten(dr_jm), np.float32)[acc_flat],
        "ctx_genmet_pt": _np(arrays["GenMET_pt"], np.float32)[ev],
        "ev": ev,
        "idx": _np(ak.flatten(ak.local_index(gj["pt"], axis=1)), np.int32)[acc_flat],
    })
    return out


def muon_conditions(arrays: Mapping, acceptance: Mapping) -> dict[str, np.ndarray]:
    """Per final-state gen muon in ``acceptance``: the condition columns of
    :data:`pipeline.skim.MUON_TABLE_COLUMNS`, ``ev`` and ``idx`` (the GenPart index)."""
    gj = io.collection(arrays, "GenJet", ("pt", "eta", "phi"))
    gp = io.collection(arrays, "GenPart", ("pt", "eta", "phi", "pdgId", "status", "statusFlags"))
    n_gp = _np(ak.num(gp, axis=1), np.int64)
    is_mu = (abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)
    acc = is_mu & (gp["pt"] > acceptance["gen_pt_min_gev"]) & (abs(gp["eta"]) < acceptance["gen_abs_eta_max"])
    acc_flat = _np(ak.flatten(acc), bool)
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
    dr_mj, pt_mj, sum04 = _skim._nearest(cand, gj, cone=0.4)
    out.update({
        "ctx_n_genjets": _np(ak.num(gj, axis=1), np.int32)[ev],
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_mj), np.float32),
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_mj), np.float32),
        "ctx_genjet_sumpt_dr04": _np(ak.flatten(sum04), np.float32),
        "ctx_nearest_genmuon_dr": _skim._nearest_other(cand, gp[is_mu], gp, acc, is_mu),
        "ctx_genmet_pt": _np(arrays["GenMET_pt"], np.float32)[ev],
        "ev": ev,
        "idx": _np(ak.flatten(ak.local_index(gp["pt"], axis=1)), np.int32)[acc_flat],
    })
    return out


CONDITION_BUILDERS = {"jets": jet_conditions, "muons": muon_conditions}
