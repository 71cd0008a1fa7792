"""L1-like trigger inputs from NanoAOD.

Per event: the ``n`` leading muons and jets above the configured thresholds (``trigger.objects``)
with pT, eta and phi as *hardware counts* at trigger granularity (``trigger.granularity``: pT in
``pt_gev`` steps, eta in ``eta`` steps, phi in ``phi`` steps), and MET in pT counts; absent objects
are zeros. The network input of a feature is its count times ``2**-input_shift_log2[kind]`` (a
power of two, so the hardware input is the count itself with a binary point: no multiplier).

Weights: ``genWeight * weight_per_genWeight`` of the sample's skim cutflow
(:func:`pipeline.skim.skim_sample` normalises to the luminosity over all events; the trigger
reuses that normalisation rather than recomputing it). The test split is
:func:`pipeline.seeds.is_holdout` of the event number (``trigger.test_fraction``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline import io, nanoaod
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError, MissingColumnError
from pipeline.seeds import is_holdout

log = logging.getLogger(__name__)

OBJECT_COLLECTIONS = {"muon": "Muon", "jet": "Jet"}
OBJECT_FIELDS = ("pt", "eta", "phi")
MET_BRANCH = "MET_pt"
assert MET_BRANCH in nanoaod.MET


def feature_names(tcfg: Mapping) -> list[str]:
    """Network input columns, in order: mu1_pt, mu1_eta, mu1_phi, ..., jet1_pt, ..., met_pt."""
    names = []
    for obj in OBJECT_COLLECTIONS:
        for i in range(int(tcfg["objects"][obj]["n"])):
            names += [f"{obj}{i + 1}_{f}" for f in OBJECT_FIELDS]
    return [*names, "met_pt"]


def feature_kind(name: str) -> str:
    """'pt', 'eta' or 'phi' of a feature column (MET is a pT)."""
    return name.rsplit("_", 1)[1]


def input_scales(tcfg: Mapping, names: list[str]) -> np.ndarray:
    """Network input = hardware count * scale, scale = 2**-input_shift_log2[kind] per feature."""
    shifts = tcfg["input_shift_log2"]
    return np.array([2.0 ** -int(shifts[feature_kind(n)]) for n in names], dtype=np.float64)


def trigger_branches() -> list[str]:
    """Every branch the trigger inputs read."""
    out = ["event", "genWeight", MET_BRANCH]
    for coll in OBJECT_COLLECTIONS.values():
        out += nanoaod.branches(coll, OBJECT_FIELDS)
    return out


def _counts(values: np.ndarray, lsb: float) -> np.ndarray:
    """Hardware counts: round half away from zero of value / lsb."""
    return (np.sign(values) * np.floor(np.abs(values) / lsb + 0.5)).astype(np.int32)


def event_features(arrays: Mapping[str, ak.Array], tcfg: Mapping) -> dict[str, np.ndarray]:
    """Hardware-count feature columns of one chunk (see the module docstring)."""
    gran = tcfg["granularity"]
    lsb = {"pt": float(gran["pt_gev"]), "eta": float(gran["eta"]), "phi": float(gran["phi"])}
    out: dict[str, np.ndarray] = {}
    for obj, coll in OBJECT_COLLECTIONS.items():
        ocfg = tcfg["objects"][obj]
        objs = io.collection(arrays, coll, OBJECT_FIELDS)
        objs = objs[(objs.pt > float(ocfg["pt_min"])) & (abs(objs.eta) < float(ocfg["abs_eta_max"]))]
        objs = objs[ak.argsort(objs.pt, axis=1, ascending=False)]
        n = int(ocfg["n"])
        padded = ak.pad_none(objs, n, axis=1, clip=True)
        for i in range(n):
            for f in OBJECT_FIELDS:
                v = ak.to_numpy(ak.fill_none(padded[f][:, i], 0.0)).astype(np.float64)
                out[f"{obj}{i + 1}_{f}"] = _counts(v, lsb[f])
    out["met_pt"] = _counts(ak.to_numpy(arrays[MET_BRANCH]).astype(np.float64), lsb["pt"])
    return out


def _weight_per_genweight(sample: str, cutflow_path: str) -> float:
    try:
        cutflow = json.loads(Path(cutflow_path).read_text())
    except FileNotFoundError:
        raise InputFileError(f"{cutflow_path}: skim cutflow of sample '{sample}' not found") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{cutflow_path}: not JSON ({exc})") from None
    if "weight_per_genWeight" not in cutflow:
        raise MissingColumnError(f"{cutflow_path}: no key 'weight_per_genWeight' (a skim cutflow of '{sample}' expected)")
    return float(cutflow["weight_per_genWeight"])


def build_inputs(
    sample_files: Mapping[str, list[str]],
    cutflows: Mapping[str, str],
    samples_cfg: Mapping,
    tcfg: Mapping,
    out_parquet: str,
    progress: bool = False,
) -> dict:
    """Write one row per event of every sample: the feature counts of :func:`feature_names`,
    ``sample``, ``event``, ``is_signal``, ``weight`` and ``is_test``. Returns a summary."""
    import pandas as pd
    from tqdm.auto import tqdm

    names = feature_names(tcfg)
    roles = {}
    for s in sample_files:
        role = samples_cfg[s]["role"]
        if role not in ("signal", "background"):
            raise ConfigError(f"samples.{s}.role is {role!r}; the trigger needs 'signal' or 'background'")
        roles[s] = role
    if "signal" not in roles.values() or "background" not in roles.values():
        raise ConfigError(f"trigger.samples {list(sample_files)}: need at least one signal and one background sample")
    parts = []
    branches = trigger_branches()
    for sample, files in sample_files.items():
        norm = _weight_per_genweight(sample, cutflows[sample])
        for _path, arrays in tqdm(io.iterate_events(files, branches, int(tcfg["chunk_events"]),
                                                    stage=f"trigger inputs of sample '{sample}'"),
                                  desc=f"trigger inputs {sample}", disable=not progress, mininterval=2.0):
            cols = event_features(arrays, tcfg)
            df = pd.DataFrame({n: cols[n] for n in names})
            df["sample"] = sample
            df["event"] = ak.to_numpy(arrays["event"]).astype(np.uint64)
            df["is_signal"] = roles[sample] == "signal"
            df["weight"] = ak.to_numpy(arrays["genWeight"]).astype(np.float64) * norm
            parts.append(df)
    if not parts:
        raise EmptySelectionError(f"trigger inputs: no events in samples {list(sample_files)}")
    table = pd.concat(parts, ignore_index=True)
    table["is_test"] = is_holdout(table["event"].to_numpy(), float(tcfg["test_fraction"]))
    io.write_parquet(out_parquet, table)
    summary = {
        "n_events": int(len(table)),
        "n_test": int(table["is_test"].sum()),
        "features": names,
        "per_sample": {s: int((table["sample"] == s).sum()) for s in sample_files},
    }
    log.info("trigger inputs: %d events (%d test), %d features", summary["n_events"], summary["n_test"], len(names))
    return summary


def load_inputs(path: str, tcfg: Mapping):
    """Read the inputs table and check its columns; returns the DataFrame."""
    needed = [*feature_names(tcfg), "sample", "event", "is_signal", "weight", "is_test"]
    return io.read_parquet(path, needed, what="trigger inputs")


def network_inputs(table, tcfg: Mapping) -> np.ndarray:
    """Float network inputs (count * 2**-shift) of a table, shape (n, n_features)."""
    names = feature_names(tcfg)
    return table[names].to_numpy(dtype=np.float64) * input_scales(tcfg, names)[None, :]
