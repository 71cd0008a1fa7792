"""One chunk of a built-in sample, end to end: Pythia8 -> gen jets -> detector simulation -> NanoAOD.

A sample of ``n_events`` is split into chunks of ``events_per_chunk``; each chunk is an
independent job with its own seed derived from the master seed, the sample name and the chunk
index, so chunks run in parallel and adding chunks does not change existing ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import awkward as ak
import numpy as np

from pipeline import nanoaod
from pipeline.config import chunk_events
from pipeline.io import write_nanoaod
from pipeline.seeds import int_seed, rng

log = logging.getLogger(__name__)

# Events of chunk c of a sample are numbered c * EVENT_STRIDE + i, so `event` is unique per sample.
EVENT_STRIDE = 10_000_000


def _contract(arr: ak.Array, spec: Mapping[str, type]) -> ak.Array:
    """Restrict a jagged record array to the contract fields, cast to the contract dtypes."""
    return ak.zip({f: ak.values_astype(arr[f], np.dtype(dt)) for f, dt in spec.items()})


def nanoaod_events(gen, reco: Mapping, run: int, first_event: int) -> dict:
    """The NanoAOD branches of a chunk (see :mod:`pipeline.nanoaod`) as one dict."""
    n = len(gen)
    jets, muons = nanoaod.add_cross_references(
        _contract(reco["Jet"], nanoaod.JET), _contract(reco["Muon"], nanoaod.MUON)
    )
    events = {
        "run": np.full(n, run, dtype=np.uint32),
        "luminosityBlock": np.full(n, 1 + first_event // EVENT_STRIDE, dtype=np.uint32),
        "event": np.arange(first_event, first_event + n, dtype=np.uint64),
        "genWeight": np.asarray(gen.gen_weight, dtype=np.float32),
        "GenMET_pt": np.asarray(gen.gen_met_pt, dtype=np.float32),
        "GenMET_phi": np.asarray(gen.gen_met_phi, dtype=np.float32),
        "MET_pt": np.asarray(reco["MET_pt"], dtype=np.float32),
        "MET_phi": np.asarray(reco["MET_phi"], dtype=np.float32),
        "GenPart": _contract(gen.gen_part, nanoaod.GENPART),
        "GenJet": _contract(gen.gen_jets, nanoaod.GENJET),
        "Jet": jets,
        "Muon": muons,
    }
    return events


def runs_record(gen, run: int, xsec_override: float | None = None) -> dict:
    w = np.asarray(gen.gen_weight, dtype=np.float64)
    return {
        "run": np.array([run], dtype=np.uint32),
        "genEventCount": np.array([len(w)], dtype=np.int64),
        "genEventSumw": np.array([w.sum()]),
        "genEventSumw2": np.array([(w**2).sum()]),
        "xsec_pb": np.array([xsec_override if xsec_override else gen.xsec_pb]),
        "xsec_err_pb": np.array([0.0 if xsec_override else gen.xsec_err_pb]),
    }


def produce_chunk(
    sample: str,
    chunk: int,
    sample_cfg: Mapping,
    generation_cfg: Mapping,
    detector_cfg: Mapping,
    seed: int,
    out_path: str,
    progress: bool = True,
) -> dict[str, float]:
    """Generate, simulate and write chunk ``chunk`` of built-in sample ``sample``.

    ``sample_cfg`` is config ``samples.<sample>``, ``generation_cfg`` the block ``generation``,
    ``detector_cfg`` the block ``detector`` and ``seed`` the master seed.
    Returns timing and content figures (logged to MLflow by the caller).
    """
    from pipeline.samples.detsim import simulate
    from pipeline.samples.generator import generate

    process = generation_cfg["processes"][sample_cfg["process"]]
    n = chunk_events(sample_cfg, chunk)
    pythia_seed = int_seed(seed, "generate", sample, chunk)
    log.info("%s chunk %d: %d events of %s, Pythia seed %d", sample, chunk, n, sample_cfg["process"], pythia_seed)

    t0 = time.perf_counter()
    gen = generate(process["settings"], n, pythia_seed, generation_cfg, progress=progress)
    t1 = time.perf_counter()
    reco = simulate(gen, detector_cfg, rng(seed, "detsim", sample, chunk), progress=progress)
    t2 = time.perf_counter()

    run = 1
    events = nanoaod_events(gen, reco, run=run, first_event=chunk * EVENT_STRIDE)
    write_nanoaod(
        out_path,
        events,
        collections=list(nanoaod.COLLECTIONS),
        runs=runs_record(gen, run, sample_cfg.get("xsec_pb")),
        chunk_size=generation_cfg["write_chunk_events"],
    )
    t3 = time.perf_counter()
    stats = {
        "n_events": float(n),
        "xsec_pb": float(gen.xsec_pb),
        "xsec_err_pb": float(gen.xsec_err_pb),
        "generation_s_per_event": (t1 - t0) / n,
        "detsim_s_per_event": (t2 - t1) / n,
        "write_s_per_event": (t3 - t2) / n,
        "mean_n_genjets": float(ak.mean(ak.num(gen.gen_jets))),
        "mean_n_jets": float(ak.mean(ak.num(reco["Jet"]))),
        "mean_n_muons": float(ak.mean(ak.num(reco["Muon"]))),
    }
    log.info("%s chunk %d written to %s: %s", sample, chunk, out_path, stats)
    return stats
