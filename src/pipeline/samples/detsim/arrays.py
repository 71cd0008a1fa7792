"""Array plumbing of the reference detector simulation: the generated collections as flat numpy
arrays with an event index (:class:`_Flat`), per-event sums and counts, same-event pairs, angles,
and the assembly of the output collections."""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from pipeline import nanoaod
from pipeline.errors import MissingColumnError
from pipeline.samples.events import GeneratedEvents

PARTICLE_FIELDS = ("px", "py", "pz", "E", "pdgId", "charge", "genPartIdx", "genJetIdx")
GENJET_FIELDS = (
    "pt", "eta", "phi", "mass", "partonFlavour", "hadronFlavour",
    "nConstituents", "nCharged", "chargedPtFraction", "photonPtFraction", "ptD", "axis2",
)
GENPART_FIELDS = tuple(nanoaod.GENPART)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _delta_r2(eta1, phi1, eta2, phi2) -> np.ndarray:
    return (eta1 - eta2) ** 2 + _wrap(phi1 - phi2) ** 2


def _flat(arr: ak.Array, field: str, dtype=np.float64) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(arr[field], axis=1)), dtype=dtype)


def _check_fields(arr: ak.Array, needed: tuple[str, ...], what: str) -> None:
    missing = [f for f in needed if f not in arr.fields]
    if missing:
        raise MissingColumnError(
            f"GeneratedEvents.{what} lacks field(s) {', '.join(missing)} needed by the detector "
            "simulation (see pipeline.samples.events.GeneratedEvents)"
        )


def same_event_pairs(evt_a: np.ndarray, b_offsets: np.ndarray, b_counts: np.ndarray):
    """All pairs (i, j) of objects i of set A and j of set B in the same event.

    ``evt_a`` is the event of each A object; B objects of event e occupy the flat positions
    ``b_offsets[e] : b_offsets[e] + b_counts[e]``. Returns flat index arrays ``(ia, ib)``.
    """
    nb = b_counts[evt_a]
    ia = np.repeat(np.arange(len(evt_a)), nb)
    first = np.cumsum(nb) - nb
    ib = np.repeat(b_offsets[evt_a] - first, nb) + np.arange(int(nb.sum()))
    return ia, ib


def _sum_by(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``weights`` per ``index`` in ``[0, n)`` (float, also when empty)."""
    return np.bincount(np.asarray(index, dtype=np.int64), weights, minlength=n).astype(np.float64)


def _count_by(index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(np.asarray(index, dtype=np.int64), minlength=n)


class _Flat:
    """One collection as flat numpy arrays, event index, counts and offsets."""

    def __init__(self, counts: np.ndarray, **cols: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.evt = np.repeat(np.arange(len(self.counts)), self.counts)
        self.cols = cols

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __len__(self) -> int:
        return len(self.evt)


def _flatten_inputs(gen: GeneratedEvents) -> tuple[_Flat, _Flat, _Flat]:
    _check_fields(gen.particles, PARTICLE_FIELDS, "particles")
    _check_fields(gen.gen_jets, GENJET_FIELDS, "gen_jets")
    _check_fields(gen.gen_part, GENPART_FIELDS, "gen_part")

    p = gen.particles
    px, py, pz, e = (_flat(p, f) for f in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.sign(pz) * 1e4)
    parts = _Flat(
        ak.to_numpy(ak.num(p, axis=1)),
        px=px, py=py, pz=pz, E=e, pt=pt, eta=eta, phi=np.arctan2(py, px),
        pdgId=_flat(p, "pdgId", np.int64), charge=_flat(p, "charge"),
        genPartIdx=_flat(p, "genPartIdx", np.int64), genJetIdx=_flat(p, "genJetIdx", np.int64),
    )
    gj = gen.gen_jets
    jets = _Flat(
        ak.to_numpy(ak.num(gj, axis=1)),
        **{f: _flat(gj, f, np.int64 if f in ("partonFlavour", "hadronFlavour", "nConstituents", "nCharged")
                   else np.float64) for f in GENJET_FIELDS},
    )
    gp = gen.gen_part
    genpart = _Flat(
        ak.to_numpy(ak.num(gp, axis=1)),
        **{f: _flat(gp, f, np.int64 if f in ("pdgId", "status", "statusFlags", "genPartIdxMother")
                   else np.float64) for f in GENPART_FIELDS},
    )
    return parts, jets, genpart


def _assemble(parts_list: list[dict], spec: Mapping[str, type], n_evt: int) -> ak.Array:
    """Concatenate flat collections, order by event then decreasing pT, cast to the contract and
    build a jagged record array."""
    cat = {k: np.concatenate([np.asarray(p[k]) for p in parts_list]) for k in ("evt", *spec)}
    order = np.lexsort((-cat["pt"], cat["evt"]))
    counts = _count_by(cat["evt"], n_evt)
    return ak.zip({f: ak.unflatten(cat[f][order].astype(np.dtype(dt)), counts) for f, dt in spec.items()})
