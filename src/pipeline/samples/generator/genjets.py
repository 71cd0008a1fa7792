"""Gen jets: anti-kt clustering (FastJet) of the visible final-state particles with ghost-associated
hadron and parton flavour, and the constituent summaries (conventions: the
:mod:`pipeline.samples.generator` docstring)."""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import fastjet
import numpy as np

from pipeline import nanoaod
from pipeline.samples.generator.record import _eta, _rank_in_event, _Record

GHOST_SCALE = 1.0e-18  # CMS ghost rescaling

_GENJET_EXTRA = {
    "nConstituents": np.int32,
    "nCharged": np.int32,
    "chargedPtFraction": np.float32,
    "photonPtFraction": np.float32,
    "ptD": np.float32,
    "axis2": np.float32,
}
GENJET_FIELDS = {**nanoaod.GENJET, **_GENJET_EXTRA}


def _cluster(rec: _Record, inputs: dict[str, np.ndarray], jetdef, jets_cfg: Mapping) -> tuple[dict, np.ndarray]:
    """anti-kt gen jets with ghost flavour; returns (jet fields + counts, genJetIdx of particles)."""
    pt_min = float(jets_cfg["pt_min_gev"])
    eta_max = float(jets_cfg["abs_eta_max"])
    groups = [inputs["visible"], inputs["b_hadrons"], inputs["c_hadrons"], inputs["partons"]]
    src = np.concatenate(groups)
    kind = np.concatenate([np.full(len(x), k, dtype=np.int8) for k, x in enumerate(groups)])
    charge = np.concatenate([inputs["visible_charge"], np.zeros(len(src) - len(groups[0]), np.float32)])
    order = np.argsort(rec.event[src], kind="stable")  # per event: visible first, then ghosts
    src, kind, charge = src[order], kind[order], charge[order]
    scale = np.where(kind == 0, 1.0, GHOST_SCALE)
    in_counts = np.bincount(rec.event[src], minlength=rec.n_events)
    in_offsets = np.cumsum(in_counts) - in_counts

    momenta = ak.zip(
        {"px": rec.px[src] * scale, "py": rec.py[src] * scale, "pz": rec.pz[src] * scale, "E": rec.e[src] * scale}
    )
    sequence = fastjet.ClusterSequence(ak.unflatten(momenta, in_counts), jetdef)
    jets = sequence.inclusive_jets(min_pt=pt_min)
    constituents = sequence.constituent_index(min_pt=pt_min)

    n_jets = ak.to_numpy(ak.num(jets)).astype(np.int64)
    flat_jets = ak.flatten(jets)
    jpx, jpy, jpz, je = (ak.to_numpy(flat_jets[k]).astype(np.float64) for k in ("px", "py", "pz", "E"))
    jet_event = np.repeat(np.arange(rec.n_events), n_jets)
    jpt = np.hypot(jpx, jpy)
    jeta = _eta(jpx, jpy, jpz)
    jphi = np.arctan2(jpy, jpx)
    jmass = np.sqrt(np.maximum(je**2 - jpx**2 - jpy**2 - jpz**2, 0.0))

    # Selection and pT ordering: slot = position in the flattened output.
    selected = np.flatnonzero((jpt > pt_min) & (np.abs(jeta) < eta_max))
    selected = selected[np.lexsort((-jpt[selected], jet_event[selected]))]
    slot = np.full(len(jpt), -1, dtype=np.int64)
    slot[selected] = np.arange(len(selected))
    out_event = jet_event[selected]
    out_counts = np.bincount(out_event, minlength=rec.n_events)
    out_index = _rank_in_event(out_event, rec.n_events)
    n_out = len(selected)

    per_jet = ak.num(constituents, axis=2)
    n_const = ak.to_numpy(ak.flatten(per_jet)).astype(np.int64)
    if len(n_const) != len(jpt):  # inclusive_jets and constituent_index list the same jets
        raise RuntimeError("FastJet jets and constituent lists disagree")
    local = ak.to_numpy(ak.flatten(constituents, axis=None)).astype(np.int64)
    c_jet = np.repeat(np.arange(len(jpt)), n_const)
    c_input = in_offsets[jet_event[c_jet]] + local
    c_slot = slot[c_jet]
    ok = c_slot >= 0
    c_input, c_slot = c_input[ok], c_slot[ok]
    c_kind, c_src = kind[c_input], src[c_input]

    # Particles' genJetIdx.
    final_index = inputs["final_index"]
    final_position = np.full(len(rec), -1, dtype=np.int64)
    final_position[final_index] = np.arange(len(final_index))
    particle_jet = np.full(len(final_index), -1, dtype=np.int32)
    real = c_kind == 0
    particle_jet[final_position[c_src[real]]] = out_index[c_slot[real]]

    summaries = _constituent_summaries(
        rec, c_src[real], charge[c_input[real]], c_slot[real], jeta[selected], jphi[selected], n_out
    )
    hadron_flavour = np.zeros(n_out, dtype=np.int32)
    hadron_flavour[np.isin(np.arange(n_out), c_slot[c_kind == 2])] = 4
    hadron_flavour[np.isin(np.arange(n_out), c_slot[c_kind == 1])] = 5
    parton_flavour = _parton_flavour(rec, c_src[c_kind == 3], c_slot[c_kind == 3], n_out)

    fields = {
        "pt": jpt[selected],
        "eta": jeta[selected],
        "phi": jphi[selected],
        "mass": jmass[selected],
        "partonFlavour": parton_flavour,
        "hadronFlavour": hadron_flavour,
        **summaries,
    }
    fields = {k: v.astype(GENJET_FIELDS[k]) for k, v in fields.items()}
    return {"fields": fields, "counts": out_counts}, particle_jet


def _constituent_summaries(
    rec: _Record,
    src: np.ndarray,
    charge: np.ndarray,
    slot: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    n_jets: int,
) -> dict[str, np.ndarray]:
    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(slot, weights=weights, minlength=n_jets)

    pt = rec.pt[src]
    w = pt**2
    deta = _eta(rec.px[src], rec.py[src], rec.pz[src]) - jet_eta[slot]
    dphi = np.mod(np.arctan2(rec.py[src], rec.px[src]) - jet_phi[slot] + np.pi, 2 * np.pi) - np.pi
    sum_pt, sum_w = total(pt), total(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_pt = np.where(sum_pt > 0, sum_pt, 1.0)
        safe_w = np.where(sum_w > 0, sum_w, 1.0)
        mean_eta, mean_phi = total(deta * w) / safe_w, total(dphi * w) / safe_w
        a = total(deta**2 * w) / safe_w - mean_eta**2
        b = total(dphi**2 * w) / safe_w - mean_phi**2
        c = -(total(deta * dphi * w) / safe_w - mean_eta * mean_phi)
    delta = np.sqrt(np.abs((a - b) ** 2 + 4 * c**2))
    minor = a + b - delta
    return {
        "nConstituents": total().astype(np.int64),
        "nCharged": total((charge != 0).astype(np.float64)).astype(np.int64),
        "chargedPtFraction": total(pt * (charge != 0)) / safe_pt,
        "photonPtFraction": total(pt * (rec.id[src] == 22)) / safe_pt,
        "ptD": np.where(sum_pt > 0, np.sqrt(sum_w) / safe_pt, 0.0),
        "axis2": np.where(minor > 0, np.sqrt(0.5 * np.maximum(minor, 0.0)), 0.0),
    }


def _parton_flavour(rec: _Record, src: np.ndarray, slot: np.ndarray, n_jets: int) -> np.ndarray:
    """CMS: pdgId of the hardest b parton ghost, else the hardest c, else the hardest parton."""
    flavour = np.zeros(n_jets, dtype=np.int32)
    absid = np.abs(rec.id[src])
    for sel in (np.ones(len(src), dtype=bool), absid == 4, absid == 5):  # later ones take priority
        best = _hardest(slot[sel], rec.pt[src[sel]], n_jets)
        has = best >= 0
        flavour[has] = rec.id[src[sel][best[has]]]
    return flavour


def _hardest(slot: np.ndarray, pt: np.ndarray, n_slots: int) -> np.ndarray:
    """Index (into ``slot``) of the highest-pT entry of each slot, -1 for slots without any."""
    best = np.full(n_slots, -1, dtype=np.int64)
    if len(slot) == 0:
        return best
    order = np.lexsort((-pt, slot))
    s = slot[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    best[s[first]] = order[first]
    return best
