"""The skim and the FlashSim training tables: NanoAOD in, parquet out.

:func:`skim_sample`
    Preselection of one sample (:func:`pipeline.features.preselection`) and the event-level
    columns of :data:`pipeline.features.EVENT_COLUMNS`, plus :data:`BOOKKEEPING_COLUMNS`, normalised
    to the configured luminosity; writes ``results/skims/{sample}.parquet`` and a cutflow JSON.

:func:`training_table`
    One row per generator-level jet or muon in the acceptance of ``training_tables.<obj>``: the
    generator conditioning (``gen_*``), the event context (``ctx_*``), whether a reco object is
    matched to it (``is_reconstructed``) and the reco target (``reco_*``). A second table of
    fakes (reco jets without a stored gen jet, reco muons without a stable gen muon) is written
    next to it (:func:`fakes_path`). Columns are documented in :data:`JET_TABLE_COLUMNS`,
    :data:`MUON_TABLE_COLUMNS`, :data:`FAKE_JET_TABLE_COLUMNS` and :data:`FAKE_MUON_TABLE_COLUMNS`.

Both read only the branches they need (:func:`skim_branches`, :func:`training_branches`), one
chunk at a time, check every input file before reading any, and write atomically: on any error
no output is left behind (a stale output from an earlier run at the same path is removed too).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline import features, io, nanoaod
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError

log = logging.getLogger(__name__)

#: Columns the skim adds to :data:`pipeline.features.EVENT_COLUMNS`: name -> (unit, description).
BOOKKEEPING_COLUMNS: dict[str, tuple[str, str]] = {
    "run": ("", "run number"),
    "luminosityBlock": ("", "luminosity block"),
    "event": ("", "event number"),
    "genWeight": ("", "generator weight"),
    "weight": ("events", "genWeight * xsec_pb * 1000 * luminosity_fb / sum of genWeight (all events)"),
    "sample": ("", "sample name (key of samples:)"),
    "is_signal": ("", "samples.<sample>.role == 'signal'"),
}

# A nearest-neighbour dR when there is no neighbour: above any dR of two objects with |eta| < 4.9.
NO_NEIGHBOUR_DR = 10.0

GEN_MUON_PDGID = 13  # gen muon: |pdgId| == 13 and status == 1 (final state)

_FLAG = nanoaod.STATUS_FLAG_BITS

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


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _contract_fields(collection: str, fields: Iterable[str]) -> list[str]:
    spec = nanoaod.COLLECTIONS[collection]
    bad = [f for f in fields if f not in spec]
    if bad:  # a programming error, not a user error
        raise AssertionError(f"{collection} fields {bad} are not in the nanoaod contract")
    return nanoaod.branches(collection, fields)


def _flat_branch(spec: Mapping, name: str) -> str:
    """A flat branch name, checked against the contract (``nanoaod.MET`` etc.)."""
    if name not in spec:
        raise AssertionError(f"{name} is not in the nanoaod contract")
    return name


MET_PT = _flat_branch(nanoaod.MET, "MET_pt")
MET_PHI = _flat_branch(nanoaod.MET, "MET_phi")
GENMET_PT = _flat_branch(nanoaod.GENMET, "GenMET_pt")
EVENT = _flat_branch(nanoaod.EVENT_ID, "event")
GENWEIGHT = _flat_branch(nanoaod.EVENT_WEIGHT, "genWeight")


def _np(values, dtype) -> np.ndarray:
    return np.asarray(ak.to_numpy(values)).astype(dtype, copy=False)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="evt", disable=not enabled, mininterval=2.0)


def _check_inputs(files: Iterable[str], branches: list[str], stage: str) -> dict[str, int]:
    """Open every file (InputFileError / MissingBranchError on problems); return entries per file."""
    entries = {}
    for path in files:
        tree = io.open_tree(path)
        io.check_branches(tree, branches, path, stage)
        entries[path] = int(tree.num_entries)
        try:
            tree.file.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    return entries


def _read_runs(path: str) -> dict:
    try:
        return io.read_runs(path) or {}
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: 'Runs' tree unreadable, truncated or corrupt? ({exc})") from None


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def fakes_path(out_path: str | os.PathLike) -> Path:
    """Where :func:`training_table` writes the fake table: ``muons.parquet`` -> ``muons_fakes.parquet``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_fakes{p.suffix or '.parquet'}")


# --------------------------------------------------------------------------------------------
# skim
# --------------------------------------------------------------------------------------------
def skim_branches(skim_cfg: Mapping) -> list[str]:
    """Every branch :func:`skim_sample` reads."""
    return [
        *nanoaod.EVENT_ID,
        GENWEIGHT,
        *_contract_fields("Muon", features.muon_fields(skim_cfg)),
        *_contract_fields("Jet", features.jet_fields(skim_cfg)),
        MET_PT,
        MET_PHI,
    ]


def skim_columns() -> list[str]:
    """Columns of a skim parquet file, in order."""
    return [*features.EVENT_COLUMNS, *BOOKKEEPING_COLUMNS]


def _cross_section(sample: str, sample_cfg: Mapping, files: list[str], runs: dict) -> tuple[float | None, str]:
    """xsec [pb] from the config, or None (to be averaged from the Runs trees); its source."""
    key = f"samples.{sample}.xsec_pb"
    xsec = sample_cfg.get("xsec_pb")
    if xsec is not None:
        if not float(xsec) > 0:
            raise ConfigError(f"{key} is {xsec}; expected a cross-section > 0 [pb]")
        return float(xsec), f"config {key}"
    lacking = [f for f in files if runs[f].get("xsec_pb") is None]
    if lacking:
        raise ConfigError(
            f"{key} is not set and {lacking[0]} has no 'Runs' tree with xsec_pb; "
            f"set {key} (cross-section in pb) for sample '{sample}'"
        )
    return None, "Runs tree xsec_pb (sum-of-weights weighted mean over files)"


def sample_normalisation(files: list[str], sample: str, sample_cfg: Mapping, luminosity_fb: float) -> dict:
    """Luminosity normalisation of a sample, as :func:`skim_sample` computes it, without a skim.

    ``norm = xsec_pb * 1000 * luminosity_fb / sum_genWeight`` (so ``weight = genWeight * norm``);
    ``sum_genWeight`` sums every file's ``Runs`` ``genEventSumw``, or its ``genWeight`` branch where
    the file has none; ``xsec_pb`` is ``sample_cfg['xsec_pb']``, else the ``Runs`` trees'
    (sum-of-weights weighted mean). Used by the Coffea analysis for full and flash samples (flash
    events carry ``genWeight / k`` and the input's ``Runs`` tree, so the sums agree).
    Returns ``{"norm", "xsec_pb", "xsec_source", "sum_genWeight"}``.
    """
    files = [str(f) for f in files]
    if not files:
        raise InputFileError(f"sample '{sample}': no input files")
    for f in files:
        io.open_tree(f).file.close()  # existence, ROOT magic, Events tree: one clear error
    runs = {f: _read_runs(f) for f in files}
    xsec, source = _cross_section(sample, sample_cfg, files, runs)
    sumws = []
    for f in files:
        if runs[f].get("genEventSumw") is not None:
            sumws.append(float(runs[f]["genEventSumw"]))
        else:
            tree = io.open_tree(f)
            io.check_branches(tree, [GENWEIGHT], f, f"normalisation of sample '{sample}'")
            sumws.append(float(np.sum(tree[GENWEIGHT].array(library="np"), dtype=np.float64)))
            del tree
    ws = np.asarray(sumws)
    sumw = float(ws.sum())
    if xsec is None:
        xs = np.array([runs[f]["xsec_pb"] for f in files], dtype=float)
        xsec = float(np.average(xs, weights=ws)) if sumw > 0 else float(xs.mean())
    if not sumw > 0:
        raise InputFileError(f"sample '{sample}': sum of genWeight is {sumw} over {len(files)} files; expected > 0")
    return {"norm": xsec * 1000.0 * float(luminosity_fb) / sumw, "xsec_pb": xsec, "xsec_source": source,
            "sum_genWeight": sumw}


def skim_sample(
    files: list[str],
    out_parquet: str,
    out_cutflow: str,
    sample: str,
    sample_cfg: dict,
    skim_cfg: dict,
    luminosity_fb: float,
    progress: bool = True,
) -> dict:
    """Preselect one sample and write its event-level columns and cutflow.

    Weights: ``weight = genWeight * xsec_pb * 1000 * luminosity_fb / sum_genWeight``, where
    ``sum_genWeight`` covers every event of every file before any cut: per file the ``Runs`` tree's
    ``genEventSumw`` when present (so a file that is itself a skim is normalised correctly), else
    the sum of ``genWeight`` read. ``xsec_pb`` is ``sample_cfg['xsec_pb']`` if set, else the
    ``Runs`` trees' ``xsec_pb``. Returns the cutflow dict that is written to ``out_cutflow``.

    Raises :class:`InputFileError` / :class:`MissingBranchError` for a bad input,
    :class:`ConfigError` when no cross-section is known, :class:`EmptySelectionError` when no
    event passes; in every case no output is left behind.
    """
    outputs = [Path(out_parquet), Path(out_cutflow)]
    try:
        return _skim_sample(
            [str(f) for f in files], outputs, sample, sample_cfg, skim_cfg, float(luminosity_fb), progress
        )
    except BaseException:
        _remove(outputs)
        raise


def _skim_sample(files, outputs, sample, sample_cfg, skim_cfg, luminosity_fb, progress) -> dict:
    import pyarrow as pa

    stage = f"skim of sample '{sample}'"
    if not files:
        raise InputFileError(f"sample '{sample}': no input files")
    role = sample_cfg.get("role")
    if role is None:
        raise ConfigError(f"samples.{sample}.role is missing (signal or background)")
    features.btag_wp(skim_cfg)  # fail on a config error before reading anything
    chunk_events = int(skim_cfg.get("chunk_events", 100_000))
    branches = skim_branches(skim_cfg)
    entries = _check_inputs(files, branches, stage)
    runs = {f: _read_runs(f) for f in files}
    xsec, xsec_source = _cross_section(sample, sample_cfg, files, runs)

    mu_fields, jet_fields = features.muon_fields(skim_cfg), features.jet_fields(skim_cfg)
    sumw_read: dict[str, float] = defaultdict(float)
    n_cut: list[int] = []
    w_cut: list[float] = []
    names: list[tuple[str, str]] = []
    parts: list[dict[str, np.ndarray]] = []
    n_read = 0
    with _progress(sum(entries.values()), f"skim {sample}", progress) as bar:
        for path, arrays in io.iterate_events(files, branches, step_size=chunk_events, stage=stage):
            gw = _np(arrays[GENWEIGHT], np.float64)
            n = len(gw)
            n_read += n
            sumw_read[path] += float(gw.sum())
            muons = io.collection(arrays, "Muon", mu_fields)
            jets = io.collection(arrays, "Jet", jet_fields)
            cols = features.compute_event_features(muons, jets, arrays[MET_PT], arrays[MET_PHI], skim_cfg)
            cuts = [("all", "all events read", np.ones(n, dtype=bool)), *features.preselection(cols, skim_cfg)]
            if not names:
                names = [(c[0], c[1]) for c in cuts]
                n_cut, w_cut = [0] * len(cuts), [0.0] * len(cuts)
            for i, (_, _, mask) in enumerate(cuts):
                n_cut[i] += int(mask.sum())
                w_cut[i] += float(gw[mask].sum())
            sel = cuts[-1][2]
            if sel.any():
                part = {k: v[sel] for k, v in cols.items()}
                for k, dtype in {**nanoaod.EVENT_ID, **nanoaod.EVENT_WEIGHT}.items():
                    part[k] = _np(arrays[k], dtype)[sel]
                parts.append(part)
            del arrays, muons, jets, cols, cuts
            bar.update(n)

    # sum of weights before any cut, per file
    sumw, sources = 0.0, set()
    for f in files:
        if runs[f].get("genEventSumw") is not None:
            sumw += runs[f]["genEventSumw"]
            sources.add("Runs.genEventSumw")
        else:
            sumw += sumw_read[f]
            sources.add("genWeight of all events read")
    if xsec is None:
        ws = np.array([runs[f].get("genEventSumw", sumw_read[f]) for f in files], dtype=float)
        xs = np.array([runs[f]["xsec_pb"] for f in files], dtype=float)
        xsec = float(np.average(xs, weights=ws)) if ws.sum() > 0 else float(xs.mean())
        if not xsec > 0:
            raise InputFileError(f"sample '{sample}': Runs trees give xsec_pb = {xsec}; expected > 0")
    if not names:  # no events at all
        names = [("all", "all events read")] + [(c[0], c[1]) for c in features.preselection(
            {k: np.zeros(0) for k in ("n_muons", "mu1_charge", "mu2_charge", "m_mumu")}, skim_cfg)]
        n_cut, w_cut = [0] * len(names), [0.0] * len(names)
    norm = xsec * 1000.0 * luminosity_fb / sumw if sumw > 0 else float("nan")

    cutflow = {
        "sample": sample,
        "files": files,
        "luminosity_fb": luminosity_fb,
        "xsec_pb": xsec,
        "xsec_source": xsec_source,
        "sum_genWeight": sumw,
        "sum_genWeight_source": " + ".join(sorted(sources)),
        "n_events_read": n_read,
        "is_signal": role == "signal",
        "cuts": [
            {
                "name": name,
                "description": desc,
                "events": n_cut[i],
                "sum_genWeight": w_cut[i],
                "yield": w_cut[i] * norm if np.isfinite(norm) else 0.0,
            }
            for i, (name, desc) in enumerate(names)
        ],
    }
    n_sel = n_cut[-1]
    if n_sel == 0:
        flow = " -> ".join(f"{c['name']} {c['events']}" for c in cutflow["cuts"])
        raise EmptySelectionError(
            f"sample '{sample}': no event passes the preselection (cutflow: {flow}; "
            f"{len(files)} file(s), first {files[0]})"
        )
    if not sumw > 0:
        raise InputFileError(
            f"sample '{sample}': the sum of generator weights is {sumw} "
            f"({cutflow['sum_genWeight_source']}); cannot normalise to a luminosity"
        )
    cutflow["n_selected"] = n_sel
    cutflow["selected_yield"] = cutflow["cuts"][-1]["yield"]
    cutflow["weight_per_genWeight"] = norm

    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    table = {k: data[k].astype(np.int32 if k in features.INT_COLUMNS else np.float64) for k in features.EVENT_COLUMNS}
    for k in nanoaod.EVENT_ID:
        table[k] = data[k]
    table[GENWEIGHT] = data[GENWEIGHT]
    table["weight"] = data[GENWEIGHT].astype(np.float64) * norm
    table["sample"] = pa.array([sample] * n_sel, type=pa.string())
    table["is_signal"] = np.full(n_sel, role == "signal")
    assert list(table) == skim_columns()
    io.write_parquet(outputs[0], pa.table(table))
    io.write_json(outputs[1], cutflow)
    log.info("skim %s: %d of %d events selected, yield %.4g", sample, n_sel, n_read, cutflow["selected_yield"])
    return cutflow


# --------------------------------------------------------------------------------------------
# training tables
# --------------------------------------------------------------------------------------------
_GENPART_FIELDS = ("pt", "eta", "phi", "mass", "pdgId", "status", "statusFlags", "genPartIdxMother")
_GENJET_CTX_FIELDS = ("pt", "eta", "phi")


def training_branches(obj: str) -> list[str]:
    """Every branch :func:`training_table` reads for ``obj`` ("jets" or "muons")."""
    coll, spec, _ = _RECO[obj]
    genjet_fields = list(nanoaod.GENJET) if obj == "jets" else list(_GENJET_CTX_FIELDS)
    return [
        EVENT,
        GENMET_PT,
        *_contract_fields("GenJet", genjet_fields),
        *_contract_fields("GenPart", _GENPART_FIELDS),
        *_contract_fields(coll, list(spec)),
    ]


def _nearest(objs: ak.Array, others: ak.Array, same: bool = False, cone: float | None = None):
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
    :func:`_leading_match`), with their event context; and the fake multiplicity of the chunk
    (number of events with 0, 1, 2, ... fakes)."""
    n_reco = _np(ak.num(reco, axis=1), np.int64)
    ev_reco = np.repeat(np.arange(len(n_reco)), n_reco)
    fake = ~valid
    ev_f = ev_reco[fake]
    n_fakes_ev = np.bincount(ev_f, minlength=len(n_reco))
    dr_fg, pt_fg = _nearest(reco, gj)
    rows: dict[str, np.ndarray] = {
        "ctx_n_genjets": _np(ak.num(gj, axis=1), np.int32)[ev_f],
        "ctx_nearest_genjet_dr": _np(ak.flatten(dr_fg), np.float32)[fake],
        "ctx_nearest_genjet_pt": _np(ak.flatten(pt_fg), np.float32)[fake],
        "ctx_genmet_pt": _np(arrays[GENMET_PT], np.float32)[ev_f],
        "ctx_n_fakes": n_fakes_ev[ev_f].astype(np.int32),
    }
    rows.update(_reco_columns(reco, _reco_fields(obj), _RECO[obj][1], np.flatnonzero(fake)))
    rows.update(_ids(ids, ev_f))
    return rows, np.bincount(n_fakes_ev)


def jet_conditions(arrays: Mapping, acceptance: Mapping) -> dict[str, np.ndarray]:
    """Per gen jet in ``acceptance`` (``gen_pt_min_gev``, ``gen_abs_eta_max``): the columns of
    :data:`JET_TABLE_COLUMNS` that are conditions, plus ``ev`` (event index in the
    chunk) and ``idx`` (index of the GenJet in its event, the future ``Jet_genJetIdx``)."""
    gj = io.collection(arrays, "GenJet", list(nanoaod.GENJET))
    gp = io.collection(arrays, "GenPart", ("pt", "eta", "phi", "pdgId", "status"))
    genmu = gp[(abs(gp["pdgId"]) == GEN_MUON_PDGID) & (gp["status"] == 1)]
    n_gj = _np(ak.num(gj, axis=1), np.int64)
    acc = (gj["pt"] > acceptance["gen_pt_min_gev"]) & (abs(gj["eta"]) < acceptance["gen_abs_eta_max"])
    acc_flat = _np(ak.flatten(acc), bool)
    ev = np.repeat(np.arange(len(n_gj)), n_gj)[acc_flat]
    dr_jj, pt_jj = _nearest(gj, gj, same=True)
    (dr_jm, _) = _nearest(gj, genmu)
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
    :data:`MUON_TABLE_COLUMNS`, ``ev`` and ``idx`` (the GenPart index)."""
    from pipeline.samples.detsim import track_impact_parameters

    gj = io.collection(arrays, "GenJet", ("pt", "eta", "phi"))
    gp = io.collection(arrays, "GenPart", _GENPART_FIELDS)
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
    dr_mj, pt_mj, sum04 = _nearest(cand, gj, cone=0.4)
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


def _flat_position(counts: np.ndarray, ev: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Position in the flattened collection of object ``idx`` of event ``ev``."""
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return starts[ev] + idx


def _jet_chunk(arrays, tcfg, ids) -> tuple[dict, dict, dict]:
    rows = jet_conditions(arrays, tcfg)
    ev_gen, idx = rows.pop("ev"), rows.pop("idx")
    gj = io.collection(arrays, "GenJet", _GENJET_CTX_FIELDS)
    jets = io.collection(arrays, "Jet", list(nanoaod.JET))
    n_gj = _np(ak.num(gj, axis=1), np.int64)
    match, valid, dup = _leading_match(n_gj, jets["genJetIdx"], jets["pt"])
    m = match[_flat_position(n_gj, ev_gen, idx)]
    rows["is_reconstructed"] = m >= 0
    rows.update(_reco_columns(jets, _reco_fields("jets"), nanoaod.JET, m))
    rows.update(_ids(ids, ev_gen))
    # fakes: reco jets that point to no stored GenJet
    fakes, mult = _fake_rows("jets", arrays, jets, valid, gj, ids)
    return rows, fakes, {"duplicate_matches": dup, "fake_multiplicity": mult}


def _muon_chunk(arrays, tcfg, ids) -> tuple[dict, dict, dict]:
    rows = muon_conditions(arrays, tcfg)
    ev_gen, idx = rows.pop("ev"), rows.pop("idx")
    gj = io.collection(arrays, "GenJet", _GENJET_CTX_FIELDS)
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
    fakes, mult = _fake_rows("muons", arrays, muons, valid, gj, ids)
    return rows, fakes, {"duplicate_matches": dup, "fake_multiplicity": mult}


#: PDG masses [GeV] of the weakly decaying species of the lifetime table, for GenPart entries
#: without a stored mass.
PDG_MASS_GEV = {
    15: 1.77686, 411: 1.86966, 421: 1.86484, 431: 1.96835, 4122: 2.28646, 4132: 2.47044, 4232: 2.46771,
    4332: 2.6952, 511: 5.27966, 521: 5.27934, 531: 5.36688, 541: 6.27447, 5122: 5.6196, 5132: 5.7970,
    5232: 5.7919, 5332: 6.0452, 211: 0.13957, 321: 0.49368, 130: 0.49761, 310: 0.49761, 3122: 1.11568,
    3222: 1.18937, 3112: 1.19745, 3312: 1.32171, 3322: 1.31486, 3334: 1.67245,
}


def ancestor_flight(counts: np.ndarray, pdg: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                    mass: np.ndarray, mother_local: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected flight of the weakly decaying ancestors of GenPart entries ``start`` (flat indices
    into the flattened GenPart arrays, ``counts`` per event), with the PDG lifetimes of the
    reference simulation's table (:data:`pipeline.samples.detsim.CTAU_CM`); a copy of a particle
    (same pdgId as its mother) flies once. A mass that is not stored (CMS NanoAOD writes 0 for e.g.
    D0 and pi+) is taken from :data:`PDG_MASS_GEV`.

    Returns ``(flight_cm, vertex_cm)``: the sum over the mother chain of the mean transverse flight
    pT/m c tau (what the impact parameters of a non-prompt muon scale with), and the (n, 3) mean
    displacement of the production vertex from the primary one, sum of pT/m c tau (cos phi, sin phi,
    sinh eta) of each ancestor (what their signs and the 3D direction follow)."""
    from pipeline.samples.detsim import CTAU_CM, MAX_ANCESTRY_DEPTH, pdg_lookup

    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    evt = np.repeat(np.arange(len(counts)), counts)
    mother = np.where(mother_local >= 0, offsets[evt] + mother_local, -1) if len(evt) else mother_local
    apdg = np.abs(pdg)
    ctau = pdg_lookup(CTAU_CM, apdg)
    mass = np.where(mass > 0, mass, pdg_lookup(PDG_MASS_GEV, apdg, 1.0))
    flight = np.zeros(len(start))
    vertex = np.zeros((len(start), 3))
    cur = mother[start] if len(start) else np.zeros(0, dtype=np.int64)
    for _ in range(MAX_ANCESTRY_DEPTH):
        alive = np.flatnonzero(cur >= 0)
        if not len(alive):
            break
        a = cur[alive]
        ma = mother[a]
        copy = (ma >= 0) & (apdg[np.maximum(ma, 0)] == apdg[a])
        lam = np.where(copy, 0.0, pt[a] / np.maximum(mass[a], 1e-3) * ctau[a])
        flight[alive] += lam
        fly = lam > 0  # only these: an incoming proton has eta = +-inf
        fa = a[fly]
        vertex[alive[fly]] += lam[fly, None] * np.column_stack([np.cos(phi[fa]), np.sin(phi[fa]), np.sinh(eta[fa])])
        cur = np.full(len(start), -1, dtype=np.int64)
        cur[alive] = ma
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
    cfg: dict,
    progress: bool = True,
) -> dict:
    """Write the FlashSim training table of ``obj`` ("jets" or "muons") and return summary counts.

    One row per generator-level object in ``cfg['training_tables'][obj]``'s acceptance
    (``pt > gen_pt_min_gev`` and ``|eta| < gen_abs_eta_max``), over all files of all samples in
    ``sample_files``: GenJets for jets; final-state gen muons (``|pdgId| == 13``, ``status == 1``)
    for muons. Files are read in chunks of ``cfg['skim']['chunk_events']``. Columns: :data:`JET_TABLE_COLUMNS` /
    :data:`MUON_TABLE_COLUMNS`. A gen object is reconstructed when a reco object's
    ``Jet_genJetIdx`` / ``Muon_genPartIdx`` points to it; when several do, the leading one is the
    target. Fakes are written to :func:`fakes_path` (columns :data:`FAKE_JET_TABLE_COLUMNS` /
    :data:`FAKE_MUON_TABLE_COLUMNS`, an empty table keeps its schema): reco jets whose
    ``genJetIdx`` is -1 or points beyond the stored GenJets; reco muons whose ``genPartIdx`` is -1,
    points beyond the stored GenParts or to a GenPart that is not a final-state muon (so every
    reco muon is either a fake or a match candidate of a final-state gen muon; one pointing to a
    gen muon outside the acceptance is neither a fake nor the target of a row, as for jets). The
    summary's ``fakes.fake_multiplicity`` (events with 0, 1, 2, ... fakes) lets a model of the fake
    rate include the events without fakes. Raises :class:`EmptySelectionError` if no gen object
    is in the acceptance; on any error neither output is left behind.
    """
    if obj not in _RECO:
        raise ConfigError(f"training table object {obj!r}; expected one of {', '.join(_RECO)}")
    try:
        tcfg = cfg["training_tables"][obj]
        tcfg["gen_pt_min_gev"], tcfg["gen_abs_eta_max"]  # noqa: B018
    except (KeyError, TypeError):
        raise ConfigError(f"training_tables.{obj}.gen_pt_min_gev / gen_abs_eta_max missing from the config") from None
    chunk_events = int(cfg.get("skim", {}).get("chunk_events", 100_000))
    outputs = [Path(out_path), fakes_path(out_path)]
    try:
        return _training_table(obj, sample_files, outputs, tcfg, chunk_events, progress)
    except BaseException:
        _remove(outputs)
        raise


def _training_table(obj, sample_files, outputs, tcfg, chunk_events, progress) -> dict:
    stage = f"training table '{obj}'"
    branches = training_branches(obj)
    all_files = [str(f) for files in sample_files.values() for f in files]
    if not all_files:
        raise InputFileError(f"{stage}: no input files (training_tables.samples)")
    entries = _check_inputs(all_files, branches, stage)
    chunk_fn = _jet_chunk if obj == "jets" else _muon_chunk
    parts, fake_parts = [], []
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
