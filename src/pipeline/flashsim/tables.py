"""The FlashSim training tables: NanoAOD in, parquet out (rule ``training_table``).

:func:`training_table`
    One row per generator-level jet or muon in the acceptance of ``training_tables.<obj>``: the
    generator conditioning (``gen_*``) and event context (``ctx_*``) of
    :mod:`pipeline.flashsim.conditions`, whether a reco object is matched to it
    (``is_reconstructed``) and the reco target (``reco_*``). Next to it (:func:`fakes_path`) a
    table of fakes (reco jets without a stored gen jet, reco muons without a stable gen muon), and
    (:func:`events_path`) one row per event read with its GenJet and fake multiplicities, which the
    fake-multiplicity model of ``train_flow`` needs (the events without any fake are in no other
    table). Columns are documented in :data:`JET_TABLE_COLUMNS`, :data:`MUON_TABLE_COLUMNS`,
    :data:`FAKE_JET_TABLE_COLUMNS`, :data:`FAKE_MUON_TABLE_COLUMNS` and :data:`EVENT_TABLE_COLUMNS`.

It reads only the branches it needs (:func:`training_branches`), one chunk at a time, checks every
input file before reading any, and writes atomically: on any error no output is left behind (a
stale output from an earlier run at the same path is removed too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline import io, nanoaod
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError
from pipeline.flashsim.conditions import (
    GEN_MUON_PDGID,
    GENJET_CTX_FIELDS,
    GENMET_PT,
    GENPART_FIELDS,
    NO_NEIGHBOUR_DR,
    jet_conditions,
    muon_conditions,
    nearest,
)

log = logging.getLogger(__name__)

EVENT = nanoaod.flat_branch(nanoaod.EVENT_ID, "event")

#: Jet training table: name -> (unit, description).
JET_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "gen_pt": ("GeV", "GenJet pT"),
    "gen_eta": ("", "GenJet pseudorapidity"),
    "gen_phi": ("rad", "GenJet azimuth"),
    "gen_mass": ("GeV", "GenJet mass"),
    "gen_partonFlavour": ("", "GenJet parton flavour"),
    "gen_hadronFlavour": ("", "GenJet hadron flavour (0, 4, 5)"),
    "ctx_n_genjets": ("", "number of GenJets in the event (all stored, not only the acceptance)"),
    "ctx_nearest_genjet_dr": ("", f"dR to the nearest other GenJet ({NO_NEIGHBOUR_DR} if none)"),
    "ctx_nearest_genjet_pt": ("GeV", "pT of the nearest other GenJet (0 if none)"),
    "ctx_nearest_genmuon_dr": ("", f"dR to the nearest gen muon ({NO_NEIGHBOUR_DR} if none)"),
    "ctx_genmet_pt": ("GeV", "GenMET_pt of the event"),
    "is_reconstructed": ("", "a reco Jet has genJetIdx pointing to this GenJet"),
    # reco_<f> for every JET field except genJetIdx, filled below
}

#: Muon training table: name -> (unit, description).
MUON_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "gen_pt": ("GeV", "gen muon pT"),
    "gen_eta": ("", "gen muon pseudorapidity"),
    "gen_phi": ("rad", "gen muon azimuth"),
    "gen_charge": ("e", "gen muon charge, -sign(pdgId)"),
    "gen_isPrompt": ("", "statusFlags bit isPrompt"),
    "gen_fromHadron": ("", "not isPrompt and not isPromptTauDecayProduct (hadron decays, direct or via tau)"),
    "gen_fromPromptTau": ("", "statusFlags bit isPromptTauDecayProduct"),
    "gen_flight_cm": ("cm", "expected transverse flight of the weakly decaying GenPart ancestors (B, D, tau, ...): "
                            "sum of pT/m c tau (PDG lifetimes); 0 for prompt muons"),
    "gen_expected_dxy_cm": ("cm", "signed dxy of the gen muon's line from the mean production vertex (ancestors "
                                  "flown by pT/m c tau along their momenta); 0 for prompt muons"),
    "gen_expected_dz_cm": ("cm", "signed dz of the same line; 0 for prompt muons"),
    "ctx_n_genjets": ("", "number of GenJets in the event"),
    "ctx_nearest_genjet_dr": ("", f"dR to the nearest GenJet ({NO_NEIGHBOUR_DR} if none); GenJets "
                              "include muons, so an isolated muon above the GenJet threshold is its own jet"),
    "ctx_nearest_genjet_pt": ("GeV", "pT of the nearest GenJet (0 if none)"),
    "ctx_genjet_sumpt_dr04": ("GeV", "scalar sum of the pT of GenJets within dR < 0.4"),
    "ctx_nearest_genmuon_dr": ("", f"dR to the nearest other gen muon ({NO_NEIGHBOUR_DR} if none)"),
    "ctx_genmet_pt": ("GeV", "GenMET_pt of the event"),
    "is_reconstructed": ("", "a reco Muon has genPartIdx pointing to this GenPart"),
}

#: Fake-jet table (reco jets whose genJetIdx is -1 or beyond the stored GenJets): name -> (unit, description).
FAKE_JET_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "ctx_n_genjets": ("", "number of GenJets in the event"),
    "ctx_nearest_genjet_dr": ("", f"dR to the nearest GenJet ({NO_NEIGHBOUR_DR} if none)"),
    "ctx_nearest_genjet_pt": ("GeV", "pT of the nearest GenJet (0 if none)"),
    "ctx_genmet_pt": ("GeV", "GenMET_pt of the event"),
    "ctx_n_fakes": ("", "number of fake jets in the event"),
    # reco_<f> for every JET field except genJetIdx, filled below
}

#: Fake-muon table (reco muons whose genPartIdx is -1, beyond the stored GenParts, or points to a
#: GenPart that is not a final-state muon, |pdgId| != 13 or status != 1: every reco muon that is not
#: a reco candidate of a row of the muon table): name -> (unit, description).
FAKE_MUON_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "ctx_n_genjets": ("", "number of GenJets in the event"),
    "ctx_nearest_genjet_dr": ("", f"dR to the nearest GenJet ({NO_NEIGHBOUR_DR} if none)"),
    "ctx_nearest_genjet_pt": ("GeV", "pT of the nearest GenJet (0 if none)"),
    "ctx_genmet_pt": ("GeV", "GenMET_pt of the event"),
    "ctx_n_fakes": ("", "number of fake muons in the event"),
    # reco_<f> for every MUON field except genPartIdx, filled below
}

# per object: reco collection, its contract, its gen-index field, its two tables
_RECO = {"jets": ("Jet", nanoaod.JET, "genJetIdx"), "muons": ("Muon", nanoaod.MUON, "genPartIdx")}
_TABLE_COLUMNS = {"jets": JET_TABLE_COLUMNS, "muons": MUON_TABLE_COLUMNS}
_FAKE_TABLE_COLUMNS = {"jets": FAKE_JET_TABLE_COLUMNS, "muons": FAKE_MUON_TABLE_COLUMNS}
for _obj, (_coll, _spec, _idx) in _RECO.items():
    for _f in _spec:
        if _f != _idx:
            _TABLE_COLUMNS[_obj][f"reco_{_f}"] = (
                "", f"{_coll}_{_f} of the matched (leading) reco object; NaN / -1 / False if none")
            _FAKE_TABLE_COLUMNS[_obj][f"reco_{_f}"] = ("", f"{_coll}_{_f} of the fake {_obj[:-1]}")
for _t in (*_TABLE_COLUMNS.values(), *_FAKE_TABLE_COLUMNS.values()):
    _t["sample"] = ("", "sample name")
    _t["event"] = ("", "event number")
    _t["file_index"] = ("", "index of the file in the sample's file list")

#: Event table (one row per event read, in reading order: samples, their files, their events):
#: name -> (unit, description).
EVENT_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "sample": ("", "sample name"),
    "file_index": ("", "index of the file in the sample's file list"),
    "event": ("", "event number"),
    "n_genjets": ("", "number of GenJets in the event"),
    "n_fakes": ("", "number of fake objects (rows of the fake table) in the event"),
}



def _np(values, dtype) -> np.ndarray:
    return np.asarray(ak.to_numpy(values)).astype(dtype, copy=False)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="evt", disable=not enabled, mininterval=2.0)


def fakes_path(out_path: str | os.PathLike) -> Path:
    """Where :func:`training_table` writes the fake table: ``muons.parquet`` -> ``muons_fakes.parquet``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_fakes{p.suffix or '.parquet'}")


def events_path(out_path: str | os.PathLike) -> Path:
    """Where :func:`training_table` writes the event table: ``muons.parquet`` -> ``muons_events.parquet``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_events{p.suffix or '.parquet'}")


def training_branches(obj: str) -> list[str]:
    """Every branch :func:`training_table` reads for ``obj`` ("jets" or "muons")."""
    coll, spec, _ = _RECO[obj]
    genjet_fields = list(nanoaod.GENJET) if obj == "jets" else list(GENJET_CTX_FIELDS)
    return [
        EVENT,
        GENMET_PT,
        *nanoaod.checked_branches("GenJet", genjet_fields),
        *nanoaod.checked_branches("GenPart", GENPART_FIELDS),
        *nanoaod.checked_branches(coll, list(spec)),
    ]


def _leading_match(
    n_gen: np.ndarray, idx: ak.Array, reco_pt: ak.Array, target: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Match reco objects to gen objects through a per-event index (``genJetIdx``/``genPartIdx``).

    ``target`` (per gen object, flattened over events; default all): the gen objects a reco object
    may be matched to. Returns ``match`` (for every gen object: the flat index of its leading
    matched reco object or -1), ``valid`` (per flat reco object: it points to a stored target gen
    object; the others are fakes) and the number of reco objects that lost a duplicate match to a
    harder one.
    """
    counts = _np(ak.num(idx, axis=1), np.int64)
    ev = np.repeat(np.arange(len(counts)), counts)
    gi = _np(ak.flatten(idx), np.int64)
    pt = _np(ak.flatten(reco_pt), np.float64)
    offsets = np.concatenate([[0], np.cumsum(n_gen)])
    valid = (gi >= 0) & (gi < n_gen[ev])
    gidx = np.where(valid, offsets[ev] + gi, -1)
    if target is not None:
        valid[valid] = target[gidx[valid]]
        gidx = np.where(valid, gidx, -1)
    match = np.full(int(offsets[-1]), -1, dtype=np.int64)
    cand = np.flatnonzero(valid)
    order = cand[np.lexsort((-pt[cand], gidx[cand]))]
    uniq, first = np.unique(gidx[order], return_index=True)
    match[uniq] = order[first]
    return match, valid, int(len(cand) - len(uniq))


def _reco_columns(reco: ak.Array, fields: Iterable[str], spec: Mapping, rows: np.ndarray) -> dict:
    """reco_<f> for gen rows whose flat matched reco index is ``rows`` (-1: none)."""
    out = {}
    has = rows >= 0
    for f in fields:
        dtype = np.dtype(spec[f])
        flat = _np(ak.flatten(reco[f]), dtype)
        fill = np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else -1)
        col = np.full(len(rows), fill, dtype=dtype)
        col[has] = flat[rows[has]]
        out[f"reco_{f}"] = col
    return out


def _reco_fields(obj: str) -> list[str]:
    """The contract fields of the reco collection of ``obj`` that become ``reco_*`` columns."""
    _, spec, idx_field = _RECO[obj]
    return [f for f in spec if f != idx_field]


def _fake_rows(obj: str, arrays, reco: ak.Array, valid: np.ndarray, gj: ak.Array, ids: dict) -> tuple[dict, np.ndarray]:
    """Rows of the fake table of ``obj``: the reco objects that are not ``valid`` (see
    :func:`_leading_match`), with their event context; and the number of fakes per event of the
    chunk."""
    n_reco = _np(ak.num(reco, axis=1), np.int64)
    ev_reco = np.repeat(np.arange(len(n_reco)), n_reco)
    fake = ~valid
    ev_f = ev_reco[fake]
    n_fakes_ev = np.bincount(ev_f, minlength=len(n_reco))
    dr_fg, pt_fg = nearest(reco, gj)
    rows: dict[str, np.ndarray] = {
        "ctx_n_genjets": _np(ak.num(gj, axis=1), np.int32)[ev_f],
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_fg), np.float32)[fake],
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_fg), np.float32)[fake],
        "ctx_genmet_pt": _np(arrays[GENMET_PT], np.float32)[ev_f],
        "ctx_n_fakes": n_fakes_ev[ev_f].astype(np.int32),
    }
    rows.update(_reco_columns(reco, _reco_fields(obj), _RECO[obj][1], np.flatnonzero(fake)))
    rows.update(_ids(ids, ev_f))
    return rows, n_fakes_ev


def _chunk_stats(gj: ak.Array, n_fakes_ev: np.ndarray, dup: int, ids: dict) -> dict:
    """Per chunk: duplicate matches, the fake multiplicity (number of events with 0, 1, 2, ...
    fakes) and the rows of the event table."""
    events = _ids(ids, np.arange(len(n_fakes_ev)))
    events["n_genjets"] = _np(ak.num(gj, axis=1), np.int32)
    events["n_fakes"] = n_fakes_ev.astype(np.int32)
    return {"duplicate_matches": dup, "fake_multiplicity": np.bincount(n_fakes_ev), "events": events}


def _flat_position(counts: np.ndarray, ev: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Position in the flattened collection of object ``idx`` of event ``ev``."""
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return starts[ev] + idx


def _jet_chunk(arrays, tcfg, ids) -> tuple[dict, dict, dict]:
    rows = jet_conditions(arrays, tcfg)
    ev_gen, idx = rows.pop("ev"), rows.pop("idx")
    gj = io.collection(arrays, "GenJet", GENJET_CTX_FIELDS)
    jets = io.collection(arrays, "Jet", list(nanoaod.JET))
    n_gj = _np(ak.num(gj, axis=1), np.int64)
    match, valid, dup = _leading_match(n_gj, jets["genJetIdx"], jets["pt"])
    m = match[_flat_position(n_gj, ev_gen, idx)]
    rows["is_reconstructed"] = m >= 0
    rows.update(_reco_columns(jets, _reco_fields("jets"), nanoaod.JET, m))
    rows.update(_ids(ids, ev_gen))
    # fakes: reco jets that point to no stored GenJet
    fakes, n_fakes_ev = _fake_rows("jets", arrays, jets, valid, gj, ids)
    return rows, fakes, _chunk_stats(gj, n_fakes_ev, dup, ids)


def _muon_chunk(arrays, tcfg, ids) -> tuple[dict, dict, dict]:
    rows = muon_conditions(arrays, tcfg)
    ev_gen, idx = rows.pop("ev"), rows.pop("idx")
    gj = io.collection(arrays, "GenJet", GENJET_CTX_FIELDS)
    gp = io.collection(arrays, "GenPart", ("pdgId", "status"))
    muons = io.collection(arrays, "Muon", list(nanoaod.MUON))
    n_gp = _np(ak.num(gp, axis=1), np.int64)
    is_mu = (abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)
    # only final-state gen muons are match targets: a reco muon pointing elsewhere is a fake
    match, valid, dup = _leading_match(n_gp, muons["genPartIdx"], muons["pt"], _np(ak.flatten(is_mu), bool))
    m = match[_flat_position(n_gp, ev_gen, idx)]
    rows["is_reconstructed"] = m >= 0
    rows.update(_reco_columns(muons, _reco_fields("muons"), nanoaod.MUON, m))
    rows.update(_ids(ids, ev_gen))
    fakes, n_fakes_ev = _fake_rows("muons", arrays, muons, valid, gj, ids)
    return rows, fakes, _chunk_stats(gj, n_fakes_ev, dup, ids)


def _ids(ids: dict, ev: np.ndarray) -> dict:
    return {"event": ids["event"][ev], "file_index": np.full(len(ev), ids["file_index"], dtype=np.int32),
            "sample": ids["sample"]}


def _to_table(parts: list[dict], columns: Mapping[str, tuple]):
    """A pyarrow Table of ``columns`` from the per-chunk row dicts."""
    import pyarrow as pa

    out = {}
    for name in columns:
        if name == "sample":
            out[name] = pa.array([s for p in parts for s in [p["sample"]] * len(p["event"])], type=pa.string())
        else:
            out[name] = np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)
    return pa.table(out)


def training_table(
    obj: str,
    sample_files: dict[str, list[str]],
    out_path: str,
    acceptance: Mapping,
    chunk_events: int,
    progress: bool = True,
) -> dict:
    """Write the FlashSim training table of ``obj`` ("jets" or "muons") and return summary counts.

    One row per generator-level object in ``acceptance`` (``training_tables.<obj>``:
    ``pt > gen_pt_min_gev`` and ``|eta| < gen_abs_eta_max``), over all files of all samples in
    ``sample_files``: GenJets for jets; final-state gen muons (``|pdgId| == 13``, ``status == 1``)
    for muons. Files are read in chunks of ``chunk_events`` events. Columns: :data:`JET_TABLE_COLUMNS` /
    :data:`MUON_TABLE_COLUMNS`. A gen object is reconstructed when a reco object's
    ``Jet_genJetIdx`` / ``Muon_genPartIdx`` points to it; when several do, the leading one is the
    target. Fakes are written to :func:`fakes_path` (columns :data:`FAKE_JET_TABLE_COLUMNS` /
    :data:`FAKE_MUON_TABLE_COLUMNS`, an empty table keeps its schema): reco jets whose
    ``genJetIdx`` is -1 or points beyond the stored GenJets; reco muons whose ``genPartIdx`` is -1,
    points beyond the stored GenParts or to a GenPart that is not a final-state muon (so every
    reco muon is either a fake or a match candidate of a final-state gen muon; one pointing to a
    gen muon outside the acceptance is neither a fake nor the target of a row, as for jets). The
    summary's ``fakes.fake_multiplicity`` (events with 0, 1, 2, ... fakes) lets a model of the fake
    rate include the events without fakes; the event table (:func:`events_path`, columns
    :data:`EVENT_TABLE_COLUMNS`) holds the same per event, with its number of GenJets. Raises
    :class:`EmptySelectionError` if no gen object is in the acceptance; on any error none of the
    three outputs is left behind.
    """
    if obj not in _RECO:
        raise ConfigError(f"training table object {obj!r}; expected one of {', '.join(_RECO)}")
    outputs = [Path(out_path), fakes_path(out_path), events_path(out_path)]
    try:
        return _training_table(obj, sample_files, outputs, acceptance, int(chunk_events), progress)
    except BaseException:
        io.remove_outputs(outputs)
        raise


def _training_table(obj, sample_files, outputs, tcfg, chunk_events, progress) -> dict:
    stage = f"training table '{obj}'"
    branches = training_branches(obj)
    all_files = [str(f) for files in sample_files.values() for f in files]
    if not all_files:
        raise InputFileError(f"{stage}: no input files (training_tables.samples)")
    entries = io.check_inputs(all_files, branches, stage)
    chunk_fn = _jet_chunk if obj == "jets" else _muon_chunk
    parts, fake_parts, event_parts = [], [], []
    per_sample: dict[str, dict] = {}
    dup = 0
    fake_mult = np.zeros(1, dtype=np.int64)
    with _progress(sum(entries.values()), f"training table {obj}", progress) as bar:
        for sample, files in sample_files.items():
            st = per_sample.setdefault(sample, {"n_events": 0, "n_rows": 0, "n_reconstructed": 0, "n_fakes": 0})
            for file_index, path in enumerate(files):
                for _, arrays in io.iterate_events([str(path)], branches, step_size=chunk_events, stage=stage):
                    ids = {"event": _np(arrays[EVENT], nanoaod.EVENT_ID["event"]), "file_index": file_index,
                           "sample": sample}
                    rows, fakes, stats = chunk_fn(arrays, tcfg, ids)
                    n = len(ids["event"])
                    st["n_events"] += n
                    st["n_rows"] += len(rows["event"])
                    st["n_reconstructed"] += int(rows["is_reconstructed"].sum())
                    dup += stats["duplicate_matches"]
                    if len(rows["event"]):
                        parts.append(rows)
                    st["n_fakes"] += len(fakes["event"])
                    if len(fakes["event"]):
                        fake_parts.append(fakes)
                    fm = stats["fake_multiplicity"]
                    if len(fm) > len(fake_mult):
                        fake_mult = np.pad(fake_mult, (0, len(fm) - len(fake_mult)))
                    fake_mult[: len(fm)] += fm
                    event_parts.append(stats["events"])
                    del arrays
                    bar.update(n)

    n_rows = sum(len(p["event"]) for p in parts)
    if n_rows == 0:
        raise EmptySelectionError(
            f"{stage}: no generator-level {obj} with pT > {tcfg['gen_pt_min_gev']} GeV and "
            f"|eta| < {tcfg['gen_abs_eta_max']} in samples {', '.join(sample_files)} "
            f"({sum(s['n_events'] for s in per_sample.values())} events read)"
        )
    columns = _TABLE_COLUMNS[obj]
    table = _to_table(parts, columns)
    n_reco = int(np.asarray(table["is_reconstructed"]).sum())
    summary = {
        "object": obj,
        "path": str(outputs[0]),
        "acceptance": dict(tcfg),
        "n_rows": n_rows,
        "n_reconstructed": n_reco,
        "matched_fraction": n_reco / n_rows,
        "duplicate_matches": dup,
        "per_sample": per_sample,
        "columns": list(columns),
    }
    fake_columns = _FAKE_TABLE_COLUMNS[obj]
    fake_table = _to_table(fake_parts, fake_columns)
    if not fake_parts:  # keep the schema of an empty table
        fake_table = fake_table.cast(_empty_fake_schema(obj))
    io.write_parquet(outputs[1], fake_table)
    summary["fakes"] = {
        "path": str(outputs[1]),
        "n_rows": fake_table.num_rows,
        "fake_multiplicity": {str(i): int(c) for i, c in enumerate(fake_mult)},
        "columns": list(fake_columns),
    }
    event_table = _to_table(event_parts, EVENT_TABLE_COLUMNS)
    io.write_parquet(outputs[2], event_table)
    summary["events"] = {"path": str(outputs[2]), "n_rows": event_table.num_rows,
                         "columns": list(EVENT_TABLE_COLUMNS)}
    io.write_parquet(outputs[0], table)
    log.info("training table %s: %d rows, %.1f%% reconstructed", obj, n_rows, 100 * n_reco / n_rows)
    return summary


def _empty_fake_schema(obj: str):
    """The schema of the fake table of ``obj`` (what :func:`_fake_rows` writes)."""
    import pyarrow as pa

    spec = _RECO[obj][1]
    fields = []
    for name in _FAKE_TABLE_COLUMNS[obj]:
        if name == "sample":
            t = pa.string()
        elif name.startswith("reco_"):
            t = pa.from_numpy_dtype(np.dtype(spec[name[5:]]))
        elif name in ("ctx_n_genjets", "ctx_n_fakes", "file_index"):
            t = pa.int32()
        elif name == "event":
            t = pa.from_numpy_dtype(np.dtype(nanoaod.EVENT_ID["event"]))
        else:
            t = pa.float32()
        fields.append(pa.field(name, t))
    return pa.schema(fields)
