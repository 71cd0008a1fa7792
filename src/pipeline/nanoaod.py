"""The NanoAOD data contract: every branch name and type the pipeline reads or writes.

This module is the one place where branch lists live. Built-in samples, FlashSim outputs and real
CMS NanoAOD all follow it, so coffea's ``NanoAODSchema`` and a physicist's habits both work.

Collections are described as ``{field: numpy dtype}``; the branch of field ``f`` in collection
``C`` is ``C_f`` and its counter is ``nC`` (as written by uproot for a jagged ``ak.zip`` record).
Index fields (``genJetIdx``, ``genPartIdx``, ``genPartIdxMother``) use ``-1`` for "no partner".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

# Event-level bookkeeping. coffea's NanoAODSchema requires run, luminosityBlock and event.
EVENT_ID = {"run": np.uint32, "luminosityBlock": np.uint32, "event": np.uint64}
EVENT_WEIGHT = {"genWeight": np.float32}

GENPART = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "pdgId": np.int32,
    "status": np.int32,
    "statusFlags": np.int32,
    "genPartIdxMother": np.int32,
}

GENJET = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "partonFlavour": np.int32,
    "hadronFlavour": np.int32,
}

JET = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "btagDeepFlavB": np.float32,
    "qgl": np.float32,
    "nConstituents": np.int32,
    "jetId": np.int32,
    "hadronFlavour": np.int32,
    "genJetIdx": np.int32,
}

MUON = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "charge": np.int32,
    "pfRelIso04_all": np.float32,
    "mediumId": np.bool_,
    "tightId": np.bool_,
    "dxy": np.float32,
    "dz": np.float32,
    "ip3d": np.float32,
    "genPartIdx": np.int32,
}

# Flat (one value per event) branches.
GENMET = {"GenMET_pt": np.float32, "GenMET_phi": np.float32}
MET = {"MET_pt": np.float32, "MET_phi": np.float32}

GEN_COLLECTIONS: dict[str, dict] = {"GenPart": GENPART, "GenJet": GENJET}
RECO_COLLECTIONS: dict[str, dict] = {"Jet": JET, "Muon": MUON}
COLLECTIONS: dict[str, dict] = {**GEN_COLLECTIONS, **RECO_COLLECTIONS}

GEN_FLAT = {**EVENT_ID, **EVENT_WEIGHT, **GENMET}
RECO_FLAT = dict(MET)

# The `Runs` tree: one entry per file, as in CMS NanoAOD, plus the cross-section of the process.
RUNS = {
    "run": np.uint32,
    "genEventCount": np.int64,
    "genEventSumw": np.float64,
    "genEventSumw2": np.float64,
    "xsec_pb": np.float64,
    "xsec_err_pb": np.float64,
}

# GenPart statusFlags bits, as in CMS NanoAOD.
STATUS_FLAG_BITS = {
    "isPrompt": 0,
    "isDecayedLeptonHadron": 1,
    "isTauDecayProduct": 2,
    "isPromptTauDecayProduct": 3,
    "isDirectTauDecayProduct": 4,
    "isDirectPromptTauDecayProduct": 5,
    "isDirectHadronDecayProduct": 6,
    "isHardProcess": 7,
    "fromHardProcess": 8,
    "isHardProcessTauDecayProduct": 9,
    "isDirectHardProcessTauDecayProduct": 10,
    "fromHardProcessBeforeFSR": 11,
    "isFirstCopy": 12,
    "isLastCopy": 13,
    "isLastCopyBeforeFSR": 14,
}


def branches(collection: str, fields: Iterable[str] | None = None) -> list[str]:
    """Branch names of ``collection`` (all contract fields, or only ``fields``)."""
    spec = COLLECTIONS[collection]
    names = spec.keys() if fields is None else fields
    return [f"{collection}_{f}" for f in names]


def checked_branches(collection: str, fields: Iterable[str]) -> list[str]:
    """Branch names of ``fields`` of ``collection``, each checked against the contract (a field
    outside it is a programming error, not a user error)."""
    spec = COLLECTIONS[collection]
    bad = [f for f in fields if f not in spec]
    if bad:
        raise AssertionError(f"{collection} fields {bad} are not in the nanoaod contract")
    return branches(collection, fields)


def flat_branch(spec: Mapping, name: str) -> str:
    """A flat branch name (``MET_pt`` in :data:`MET` etc.), checked against the contract."""
    if name not in spec:
        raise AssertionError(f"{name} is not in the nanoaod contract")
    return name


def counter(collection: str) -> str:
    """The counter branch of a collection, e.g. ``nJet``."""
    return f"n{collection}"


def gen_branches() -> list[str]:
    """Every generator-level branch of the contract (what FlashSim keeps from its input)."""
    out = list(GEN_FLAT)
    for name in GEN_COLLECTIONS:
        out += [counter(name), *branches(name)]
    return out


def reco_branches() -> list[str]:
    """Every reco-level branch of the contract (what FlashSim replaces), cross-references included."""
    out = list(RECO_FLAT)
    for name in RECO_COLLECTIONS:
        out += [counter(name), *branches(name)]
        out += [f"{name}_{f}" for f in CROSS_REFERENCES.get(name, {})]
    return out


def all_branches() -> list[str]:
    return gen_branches() + reco_branches()


# Cross-references between reco collections, as in CMS NanoAOD. They are derived from the
# collections after simulation (full or flash) by :func:`add_cross_references`, not simulated,
# so they are not among the fields a FlashSim model generates.
CROSS_REFERENCES: dict[str, dict] = {
    "Jet": {"muonIdx1": np.int32, "muonIdx2": np.int32},
    "Muon": {"jetIdx": np.int32},
}
CROSS_REFERENCE_DR = 0.4


def add_cross_references(jets, muons, dr_max: float = CROSS_REFERENCE_DR):
    """Return ``(jets, muons)`` with ``Jet_muonIdx1/2`` and ``Muon_jetIdx`` filled.

    A muon belongs to the closest jet within ``dr_max`` (``Muon_jetIdx``, -1 if none); a jet lists
    the first two muons (in muon order) that belong to it (``Jet_muonIdx1/2``, -1 if none).
    """
    import awkward as ak

    pairs = ak.cartesian({"mu": muons[["eta", "phi"]], "jet": jets[["eta", "phi"]]}, nested=True)
    dphi = (pairs.mu.phi - pairs.jet.phi + np.pi) % (2 * np.pi) - np.pi
    dr = np.hypot(pairs.mu.eta - pairs.jet.eta, dphi)  # [event][muon][jet]
    best = ak.argmin(dr, axis=2, keepdims=True)
    best_dr = ak.firsts(dr[best], axis=2)
    jet_idx = ak.fill_none(ak.where(best_dr < dr_max, ak.firsts(best, axis=2), -1), -1)
    jet_idx = ak.values_astype(jet_idx, np.int32)

    # For each jet, the muons pointing to it, in muon order.
    mu_index = ak.local_index(jet_idx, axis=1)
    jet_index = ak.local_index(jets.eta, axis=1)
    owns = ak.cartesian({"jet": jet_index, "mu": jet_idx}, nested=True)  # [event][jet][muon]
    owned = ak.cartesian({"jet": jet_index, "mu": mu_index}, nested=True)
    mine = owned.mu[owns.mu == owns.jet]
    padded = ak.fill_none(ak.pad_none(mine, 2, axis=2, clip=True), -1)
    jets = ak.with_field(jets, ak.values_astype(padded[:, :, 0], np.int32), "muonIdx1")
    jets = ak.with_field(jets, ak.values_astype(padded[:, :, 1], np.int32), "muonIdx2")
    muons = ak.with_field(muons, jet_idx, "jetIdx")
    return jets, muons
