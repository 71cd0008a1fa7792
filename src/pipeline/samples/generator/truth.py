"""Generator truth of a Pythia batch: particle classification from pdgId, copies, mothers, status
and ``statusFlags``, the GenPart pruning, the final-state particles, GenMET and the inputs of the
gen-jet clustering (conventions: the :mod:`pipeline.samples.generator` docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import nanoaod
from pipeline.physics.pdg import INVISIBLE_PDG_IDS, NEUTRINO_PDG_IDS
from pipeline.samples.generator.record import _at, _eta, _is_pointed_at, _nearest, _rank_in_event, _Record

# Resonances of which GenPart keeps the first and the last copy (top, Z/gamma*, W, H).
RESONANCE_PDG_IDS = (6, 23, 24, 25)
PARTON_PDG_IDS = (1, 2, 3, 4, 5, 21)

_BITS = nanoaod.STATUS_FLAG_BITS


# --------------------------------------------------------------------------------------------
# Particle classification from pdgId


def _digits(absid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (absid // 1000) % 10, (absid // 100) % 10, (absid // 10) % 10


def _is_hadron(absid: np.ndarray) -> np.ndarray:
    _, _, q3 = _digits(absid)
    standard = absid < 1_000_000
    exotic_meson = (absid // 1_000_000 == 9) & (absid < 9_900_000)  # f0(500) = 9000221, ...
    return (absid > 100) & (q3 > 0) & (standard | exotic_meson) & (absid != 990)


def _heavy_flavour(pdg: np.ndarray) -> np.ndarray:
    """5 for b quarks and b-flavoured hadrons/diquarks, 4 for c (without b), 0 otherwise."""
    absid = np.abs(pdg)
    q1, q2, q3 = _digits(absid)
    diquark = (absid > 1000) & (absid < 10000) & (q3 == 0)
    composite = _is_hadron(absid) | diquark
    has = {f: (absid == f) | (composite & ((q1 == f) | (q2 == f) | (q3 == f))) for f in (5, 4)}
    return np.where(has[5], 5, np.where(has[4], 4, 0)).astype(np.int8)


# --------------------------------------------------------------------------------------------
# GenPart, particles and the inputs of the clustering


@dataclass
class _Truth:
    """Per-particle classification of a :class:`_Record` (arrays over all its particles)."""

    absid: np.ndarray
    hadron: np.ndarray
    hflav: np.ndarray  # 5, 4, 0: heavy flavour of quarks, diquarks and hadrons
    decayed: np.ndarray  # decayed by Pythia's particle decays (daughters with status 91-99)
    hard: np.ndarray  # Pythia status 21-29
    mother: np.ndarray  # effective mother (global index, -1 none)
    direct_mother: np.ndarray  # mother of the first copy
    first_copy: np.ndarray
    last_copy: np.ndarray
    flags: dict[str, np.ndarray]  # statusFlags bits by name
    cms_status: np.ndarray


def _classify(rec: _Record) -> _Truth:
    absid = np.abs(rec.id)
    abs_status = np.abs(rec.status)
    hadron = _is_hadron(absid)
    lepton = (absid >= 11) & (absid <= 16)
    hflav = _heavy_flavour(rec.id)
    daughter_status = np.abs(_at(rec.status, rec.daughter1, 0))
    decayed = (rec.status < 0) & (daughter_status >= 91) & (daughter_status <= 99)
    hard = (abs_status >= 21) & (abs_status <= 29)
    mother = _effective_mother(rec, hadron, hflav)

    # Copies: same pdgId as the mother; hard-process particles start a new chain.
    prev_copy = np.where((mother >= 0) & (_at(rec.id, mother, 0) == rec.id) & ~hard, mother, -1)
    first_copy = prev_copy < 0
    root = _nearest(prev_copy, first_copy)
    last_copy = ~_is_pointed_at(prev_copy, len(rec))
    fsr_next = _is_pointed_at(np.where(abs_status == 51, prev_copy, -1), len(rec))
    last_before_fsr = _earliest_in_chain(fsr_next | last_copy, root)

    from_hard = hard[root]
    direct_mother = mother[root]
    decayer = decayed & (hadron | (absid == 13) | (absid == 15))
    prompt = _at(_nearest(mother, decayer), mother, -1) < 0
    tau = decayed & (absid == 15)
    tau_anc = _at(_nearest(mother, tau), mother, -1)
    tau_product = tau_anc >= 0
    direct_tau = _at(tau, direct_mother, False)
    decayed_hl = decayed & (hadron | lepton)
    flags = {
        "isPrompt": prompt,
        "isDecayedLeptonHadron": decayed_hl,
        "isTauDecayProduct": tau_product,
        "isPromptTauDecayProduct": tau_product & _at(prompt, tau_anc, False),
        "isDirectTauDecayProduct": direct_tau,
        "isDirectPromptTauDecayProduct": direct_tau & _at(prompt, direct_mother, False),
        "isDirectHadronDecayProduct": _at(decayed & hadron, direct_mother, False),
        "isHardProcess": hard,
        "fromHardProcess": from_hard,
        "isHardProcessTauDecayProduct": tau_product & _at(from_hard, tau_anc, False),
        "isDirectHardProcessTauDecayProduct": direct_tau & _at(from_hard, direct_mother, False),
        "fromHardProcessBeforeFSR": from_hard & last_before_fsr,
        "isFirstCopy": first_copy,
        "isLastCopy": last_copy,
        "isLastCopyBeforeFSR": last_before_fsr,
    }
    cms_status = np.where(rec.status > 0, 1, np.where(rec.status == -12, 4, np.where(decayed_hl, 2, abs_status)))
    return _Truth(absid, hadron, hflav, decayed, hard, mother, direct_mother, first_copy, last_copy, flags, cms_status)


def _effective_mother(rec: _Record, hadron: np.ndarray, hflav: np.ndarray) -> np.ndarray:
    """First mother, but the string end with the heavy quark for heavy hadrons from a string
    (Pythia lists the whole string, mother1..mother2, as their mothers)."""
    abs_status = np.abs(rec.status)
    from_string = hadron & (hflav > 0) & (abs_status >= 81) & (abs_status <= 89)
    flav1 = _heavy_flavour(_at(rec.id, rec.mother1, 0))
    flav2 = _heavy_flavour(_at(rec.id, rec.mother2, 0))
    use2 = from_string & (flav1 != hflav) & (flav2 == hflav) & (rec.mother2 >= 0)
    return np.where(use2, rec.mother2, rec.mother1)


def _earliest_in_chain(candidate: np.ndarray, root: np.ndarray) -> np.ndarray:
    """The candidate with the lowest index among the candidates sharing a copy-chain root."""
    idx = np.arange(len(root))
    earliest = np.full(len(root), np.iinfo(np.int64).max)
    np.minimum.at(earliest, root[candidate], idx[candidate])
    return candidate & (earliest[root] == idx)


def _genpart_mask(rec: _Record, t: _Truth, lepton_pt_min: float) -> np.ndarray:
    """Which particles GenPart keeps (see the module docstring)."""
    final = rec.status > 0
    above = rec.pt > lepton_pt_min
    charged_lepton = final & ((t.absid == 11) | (t.absid == 13)) & above
    prompt_like = t.flags["isPrompt"] | t.flags["isPromptTauDecayProduct"]
    neutrino = final & np.isin(t.absid, NEUTRINO_PDG_IDS) & above & prompt_like
    keep = (
        t.hard
        | (np.isin(t.absid, RESONANCE_PDG_IDS) & (t.first_copy | t.last_copy))
        | charged_lepton
        | neutrino
        | (t.decayed & (t.absid == 15) & t.last_copy & above)
        | (t.decayed & t.hadron & (t.hflav > 0))
    )
    # The decayed hadron (or tau) a stored lepton comes from directly.
    lepton_mother = t.direct_mother[charged_lepton | neutrino]
    lepton_mother = lepton_mother[lepton_mother >= 0]
    keep[lepton_mother[t.decayed[lepton_mother]]] = True
    return keep


def _genpart(rec: _Record, t: _Truth, keep: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """GenPart fields of the kept particles and every particle's position in GenPart (-1)."""
    g = np.flatnonzero(keep)
    position = np.full(len(rec), -1, dtype=np.int64)
    position[g] = _rank_in_event(rec.event[g], rec.n_events)
    stored_mother = _at(_nearest(t.mother, keep), t.mother, -1)
    status_flags = np.zeros(len(g), dtype=np.int32)
    for name, value in t.flags.items():
        status_flags |= value[g].astype(np.int32) << _BITS[name]
    fields = {
        "pt": rec.pt[g],
        "eta": _eta(rec.px[g], rec.py[g], rec.pz[g]),
        "phi": np.arctan2(rec.py[g], rec.px[g]),
        "mass": rec.m[g],
        "pdgId": rec.id[g],
        "status": t.cms_status[g],
        "statusFlags": status_flags,
        "genPartIdxMother": _at(position, stored_mother[g], -1),
    }
    return {k: v.astype(nanoaod.GENPART[k]) for k, v in fields.items()}, position


def _ghost_candidates(rec: _Record, t: _Truth) -> dict[str, np.ndarray]:
    """Last B and C hadrons (no daughter of the same flavour), partons without parton daughters."""
    heavy_hadron = t.hadron & (t.hflav > 0)
    nonzero_pt = rec.pt > 0
    out = {}
    for name, f in (("b_hadrons", 5), ("c_hadrons", 4)):
        same_flavour_daughter = _is_pointed_at(np.where(heavy_hadron & (t.hflav == f), rec.mother1, -1), len(rec))
        out[name] = np.flatnonzero(heavy_hadron & (t.hflav == f) & ~same_flavour_daughter & nonzero_pt)
    parton = np.isin(t.absid, PARTON_PDG_IDS)
    parton_daughter = _is_pointed_at(np.where(parton, rec.mother1, -1), len(rec))
    parton_daughter |= _is_pointed_at(np.where(parton, rec.mother2, -1), len(rec))
    out["partons"] = np.flatnonzero(parton & ~parton_daughter & nonzero_pt)
    return out


def _process_record(
    rec: _Record,
    charge_of: Callable[[np.ndarray], np.ndarray],
    lepton_pt_min: float,
) -> dict:
    """GenPart, final-state particles, GenMET and the clustering inputs of one batch."""
    t = _classify(rec)
    keep = _genpart_mask(rec, t, lepton_pt_min)
    gen_part, position = _genpart(rec, t, keep)

    fin = np.flatnonzero(rec.status > 0)
    invisible = np.isin(t.absid[fin], INVISIBLE_PDG_IDS)
    charge = charge_of(rec.id[fin])
    particles = {
        "px": rec.px[fin],
        "py": rec.py[fin],
        "pz": rec.pz[fin],
        "E": rec.e[fin],
        "pdgId": rec.id[fin].astype(np.int32),
        "charge": charge,
        "genPartIdx": position[fin].astype(np.int32),
    }
    nu = fin[invisible]
    met_px = np.bincount(rec.event[nu], weights=rec.px[nu], minlength=rec.n_events)
    met_py = np.bincount(rec.event[nu], weights=rec.py[nu], minlength=rec.n_events)
    clustering = {
        "visible": fin[~invisible],
        "visible_charge": charge[~invisible],
        "final_index": fin,
        **_ghost_candidates(rec, t),
    }
    return {
        "particles": particles,
        "particle_counts": np.bincount(rec.event[fin], minlength=rec.n_events),
        "gen_part": gen_part,
        "gen_part_counts": np.bincount(rec.event[keep], minlength=rec.n_events),
        "met": {"pt": np.hypot(met_px, met_py), "phi": np.arctan2(met_py, met_px)},
        "_clustering": clustering,
    }
