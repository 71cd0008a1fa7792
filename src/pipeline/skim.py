"""The skim: preselection and event-level columns of one sample, NanoAOD in, parquet out.

:func:`skim_sample`
    Preselection of one sample (:func:`pipeline.features.preselection`) and the event-level
    columns of :data:`pipeline.features.EVENT_COLUMNS`, plus :data:`BOOKKEEPING_COLUMNS`, normalised
    to the configured luminosity (:mod:`pipeline.normalisation`); writes the skim parquet file and
    a cutflow JSON.

It reads only the branches it needs (:func:`skim_branches`), one chunk at a time, checks every
input file before reading any, and writes atomically: on any error no output is left behind (a
stale output from an earlier run at the same path is removed too). The FlashSim training tables,
read the same way, are :mod:`pipeline.flashsim.tables`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline import features, io, nanoaod
from pipeline.errors import EmptySelectionError, InputFileError
from pipeline.normalisation import GENWEIGHT, cross_section, read_runs

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

MET_PT = nanoaod.flat_branch(nanoaod.MET, "MET_pt")
MET_PHI = nanoaod.flat_branch(nanoaod.MET, "MET_phi")


def _np(values, dtype) -> np.ndarray:
    return np.asarray(ak.to_numpy(values)).astype(dtype, copy=False)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="evt", disable=not enabled, mininterval=2.0)


# --------------------------------------------------------------------------------------------
# skim
# --------------------------------------------------------------------------------------------
def skim_branches(skim_cfg: Mapping) -> list[str]:
    """Every branch :func:`skim_sample` reads."""
    return [
        *nanoaod.EVENT_ID,
        GENWEIGHT,
        *nanoaod.checked_branches("Muon", features.muon_fields(skim_cfg)),
        *nanoaod.checked_branches("Jet", features.jet_fields(skim_cfg)),
        MET_PT,
        MET_PHI,
    ]


def skim_columns() -> list[str]:
    """Columns of a skim parquet file, in order."""
    return [*features.EVENT_COLUMNS, *BOOKKEEPING_COLUMNS]


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
        io.remove_outputs(outputs)
        raise


def _skim_sample(files, outputs, sample, sample_cfg, skim_cfg, luminosity_fb, progress) -> dict:
    import pyarrow as pa

    stage = f"skim of sample '{sample}'"
    if not files:
        raise InputFileError(f"sample '{sample}': no input files")
    role = sample_cfg["role"]
    features.btag_wp(skim_cfg)  # fail on a config error before reading anything
    chunk_events = int(skim_cfg["chunk_events"])
    branches = skim_branches(skim_cfg)
    entries = io.check_inputs(files, branches, stage)
    runs = {f: read_runs(f) for f in files}
    xsec, xsec_source = cross_section(sample, sample_cfg, files, runs)

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
