"""``flash_generate``: NanoAOD in (generator level), NanoAOD out (flash reco collections).

For every input file one output file: the input's Gen* contract branches (event ids, genWeight,
GenMET, GenPart, GenJet, cast to the contract dtypes), and flash ``Jet``, ``Muon`` and ``MET``.
Per batch of gen events:

1. conditions of every gen jet / gen muon in the training acceptance
   (:mod:`pipeline.flashsim.conditions`, identical to the training tables);
2. each event is repeated ``k`` times (``flashsim.oversampling_k``): the copies share ``run``,
   ``luminosityBlock`` and ``event`` and carry ``genWeight / k``, so sums of weights are unchanged;
3. per gen object, reconstructed with the efficiency net's probability; if so, its reco
   variables are sampled from the flow and it points back to it (``Jet_genJetIdx`` = GenJet
   index, ``Muon_genPartIdx`` = GenPart index). The efficiency net already gives the probability
   to be reconstructed *inside the reco acceptance* (``detector.<obj>.pt_min_gev``, and |eta| for
   muons), and the flow learnt p(reco | gen) of objects inside it; so an object the flow places
   outside (its smearing of the threshold edge) is redrawn, up to ``flashsim.acceptance_redraws``
   times (truncated sampling), instead of being dropped a second time. Objects still outside
   after that are dropped;
4. fakes: their number from P(n | nGenJet), their properties from the fake flow given the event
   context; index -1;
5. collections sorted by decreasing pT, cross-references added with
   :func:`pipeline.nanoaod.add_cross_references` (as samples/produce.py does);
6. MET (consistent with gen MET and the flash objects):
   ``MET = GenMET - sum over matched objects of (p_T,reco - p_T,gen) - sum over fakes of p_T``,
   vectors in the transverse plane. The unclustered energy response, its resolution and the
   double counting of muons inside jets are not modelled (a documented approximation).

Randomness: a numpy generator and a torch generator per (sample, file, batch) from the master
seed, so the output does not depend on the batch boundaries of other files and the same seed gives
the same file. Runs tree: the input's ``Runs`` contract fields (sums of weights, cross-section)
are copied, since the weights per gen event are unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from pipeline import io, nanoaod
from pipeline.errors import InputFileError
from pipeline.flashsim import preprocessing as pp
from pipeline.flashsim.conditions import CONDITION_BUILDERS, needed_branches
from pipeline.flashsim.model import FlashSimModel
from pipeline.seeds import int_seed, rng

log = logging.getLogger(__name__)

_RECO = {"jets": ("Jet", "genJetIdx"), "muons": ("Muon", "genPartIdx")}


def _counts_to_jagged(values: Mapping[str, np.ndarray], ev: np.ndarray, n_events: int) -> ak.Array:
    """Jagged record array (events x objects) from flat arrays and their event index; objects
    sorted by decreasing pT within an event."""
    order = np.lexsort((-values["pt"].astype(np.float64), ev))
    counts = np.bincount(ev, minlength=n_events)
    return ak.unflatten(ak.zip({k: v[order] for k, v in values.items()}, depth_limit=1), counts)


def _in_acceptance(obj: str, values: Mapping[str, np.ndarray], meta: Mapping) -> np.ndarray:
    """Objects inside the reco acceptance of the reference simulation (what was trained on)."""
    ok = values["pt"] >= meta["reco_pt_min_gev"]
    if obj == "muons":
        ok &= np.abs(values["eta"]) < meta["acceptance"]["gen_abs_eta_max"]
    return ok


def _truncated(obj: str, meta: Mapping, draw, n: int, redraws: int) -> dict[str, np.ndarray]:
    """Decoded objects from ``draw(rows) -> values``, rows outside the acceptance redrawn up to
    ``redraws`` times (same generator stream, so the same seed gives the same objects)."""
    values = draw(np.arange(n))
    ok = _in_acceptance(obj, values, meta)
    for _ in range(int(redraws)):
        bad = np.flatnonzero(~ok)
        if not len(bad):
            break
        again = draw(bad)
        for f in values:
            values[f][bad] = again[f]
        ok[bad] = _in_acceptance(obj, again, meta)
    return values


def _flash_objects(obj: str, model: FlashSimModel, arrays: Mapping, k: int, g: np.random.Generator,
                   tg: torch.Generator, redraws: int = 0) -> tuple[ak.Array, np.ndarray, np.ndarray]:
    """Flash collection of ``obj`` for the k-times repeated events; and (px, py) of the MET
    correction per repeated event."""
    n = len(arrays["event"])
    n_rep = n * k
    coll, idx_field = _RECO[obj]
    meta = model.meta
    cond = CONDITION_BUILDERS[obj](arrays, meta["acceptance"])
    # repeat every gen object k times, event-major: copy j of event i is event i * k + j
    n_obj = len(cond["ev"])
    rep = np.repeat(np.arange(n_obj), k)
    ev_rep = cond["ev"][rep] * k + np.tile(np.arange(k), n_obj)
    c = pp.encode_conditions(obj, cond)[rep]
    eff = model.efficiency(c)
    keep = g.uniform(size=len(eff)) < eff
    c_kept = c[keep]
    gen = {key: cond[key][rep][keep] for key in ("gen_pt", "gen_eta", "gen_phi", "gen_mass", "gen_hadronFlavour",
                                                 "gen_charge", "gen_expected_dxy_cm", "gen_expected_dz_cm")
           if key in cond}

    def draw(rows):
        return pp.decode_targets(obj, model.sample(c_kept[rows], tg), {key: v[rows] for key, v in gen.items()},
                                 meta["btag_abs_eta_max"])

    values = _truncated(obj, meta, draw, len(c_kept), redraws)
    values[idx_field] = cond["idx"][rep][keep].astype(np.int32)
    ev_m = ev_rep[keep]
    # MET correction from matched objects: reco - gen
    dpx = values["pt"] * np.cos(values["phi"]) - gen["gen_pt"] * np.cos(gen["gen_phi"])
    dpy = values["pt"] * np.sin(values["phi"]) - gen["gen_pt"] * np.sin(gen["gen_phi"])

    # fakes
    n_genjets = np.asarray(arrays["nGenJet"], dtype=np.int64)
    n_fakes = model.multiplicity.sample(np.repeat(n_genjets, k), g)
    ev_f = np.repeat(np.arange(n_rep), n_fakes)
    if len(ev_f):
        fc = pp.encode_fake_conditions({
            "ctx_n_genjets": np.repeat(n_genjets, k)[ev_f],
            "ctx_genmet_pt": np.repeat(np.asarray(arrays["GenMET_pt"], dtype=np.float32), k)[ev_f],
            "ctx_n_fakes": n_fakes[ev_f]})
        if not model.has_fakes:  # no fake was seen in training
            ev_f = ev_f[:0]
        fvals = _truncated(obj, meta, lambda rows: pp.decode_fake_targets(obj, model.sample_fakes(fc[rows], tg),
                                                                          meta["btag_abs_eta_max"]),
                           len(ev_f), redraws)
    else:
        fvals = pp.decode_fake_targets(obj, np.zeros((0, len(pp.FAKE_TARGETS[obj])), dtype=np.float32))
    fvals[idx_field] = np.full(len(ev_f), -1, dtype=np.int32)
    fpx = -fvals["pt"] * np.cos(fvals["phi"])
    fpy = -fvals["pt"] * np.sin(fvals["phi"])

    allv = {f: np.concatenate([values[f], fvals[f]]) for f in values}
    all_ev = np.concatenate([ev_m, ev_f])
    sel = _in_acceptance(obj, allv, meta)
    allv = {f: v[sel] for f, v in allv.items()}
    spec = nanoaod.JET if obj == "jets" else nanoaod.MUON
    allv = {f: allv[f].astype(spec[f]) for f in spec}
    jagged = _counts_to_jagged(allv, all_ev[sel], n_rep)
    met_px = np.bincount(ev_m, weights=-dpx, minlength=n_rep) + np.bincount(ev_f, weights=fpx, minlength=n_rep)
    met_py = np.bincount(ev_m, weights=-dpy, minlength=n_rep) + np.bincount(ev_f, weights=fpy, minlength=n_rep)
    return jagged, met_px, met_py


def flash_events(arrays: Mapping, models: Mapping[str, FlashSimModel], k: int, g: np.random.Generator,
                 tg: torch.Generator, redraws: int = 0) -> dict:
    """The NanoAOD branches (see :func:`pipeline.io.write_nanoaod`) of the flash events of one
    batch of gen events ``arrays`` (branches of :func:`pipeline.flashsim.conditions.needed_branches`);
    ``redraws``: ``flashsim.acceptance_redraws``."""
    n = len(arrays["event"])
    rep = np.repeat(np.arange(n), k)
    out: dict[str, object] = {}
    for name, dt in {**nanoaod.EVENT_ID, **nanoaod.GENMET}.items():
        out[name] = np.asarray(arrays[name]).astype(dt)[rep]
    out["genWeight"] = (np.asarray(arrays["genWeight"], dtype=np.float64) / k).astype(np.float32)[rep]
    for cname, spec in nanoaod.GEN_COLLECTIONS.items():
        col = ak.zip({f: ak.values_astype(arrays[f"{cname}_{f}"], np.dtype(dt)) for f, dt in spec.items()})
        out[cname] = col[rep]
    collections, mpx, mpy = {}, 0.0, 0.0
    for obj in ("jets", "muons"):
        collections[obj], px, py = _flash_objects(obj, models[obj], arrays, k, g, tg, redraws)
        mpx, mpy = mpx + px, mpy + py
    jets, muons = nanoaod.add_cross_references(collections["jets"], collections["muons"])
    gphi = out["GenMET_phi"].astype(np.float64)
    gpt = out["GenMET_pt"].astype(np.float64)
    mx, my = gpt * np.cos(gphi) + mpx, gpt * np.sin(gphi) + mpy
    out["MET_pt"] = np.hypot(mx, my).astype(np.float32)
    out["MET_phi"] = np.arctan2(my, mx).astype(np.float32)
    out["Jet"], out["Muon"] = jets, muons
    return out


def _runs_of(path: str) -> dict | None:
    import uproot

    with uproot.open(path) as f:
        if "Runs" not in f.keys(cycle=False):
            return None
        runs = f["Runs"]
        names = set(runs.keys())
        out = {}
        for key, dt in nanoaod.RUNS.items():
            for name in (key, f"{key}_"):
                if name in names:
                    out[key] = runs[name].array(library="np").astype(dt)
                    break
        return out or None


def load_models(paths: Iterable[str | os.PathLike]) -> dict[str, FlashSimModel]:
    """The checkpoints ``paths`` keyed by the object each one stores (``jets``, ``muons``), not by
    their file names; one clear error if two hold the same object or one of them is missing."""
    models: dict[str, FlashSimModel] = {}
    where: dict[str, str] = {}
    for p in paths:
        model = FlashSimModel.load(p)
        if model.obj in models:
            raise InputFileError(f"{p}: a second FlashSim model of {model.obj} (the first is {where[model.obj]})")
        models[model.obj], where[model.obj] = model, str(p)
    missing = [obj for obj in _RECO if obj not in models]
    if missing:
        raise InputFileError(f"no FlashSim model of {', '.join(missing)} among {', '.join(map(str, where.values())) or 'no files'}")
    return models


def flash_generate(
    sample: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    model_paths: Iterable[str | os.PathLike],
    fcfg: Mapping,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Flash-simulate every file of ``inputs`` into the file of the same position in ``outputs``.

    ``model_paths``: the checkpoints of train_flow, one per object (:func:`load_models`); ``fcfg``:
    the ``flashsim`` config block; ``seed``: the master seed. Every input is checked for the Gen*
    branches before any work (one :class:`~pipeline.errors.MissingBranchError` naming the missing
    ones). Returns counts and timing.
    """
    from tqdm import tqdm

    if len(inputs) != len(outputs):
        raise ValueError(f"flash_generate {sample}: {len(inputs)} inputs but {len(outputs)} outputs")
    k = int(fcfg["oversampling_k"])
    batch = int(fcfg["batch_events"])
    torch.set_num_threads(fcfg["threads"])
    stage = f"flash_generate of sample '{sample}'"
    branches = needed_branches()
    entries = io.check_inputs(inputs, branches, stage)  # all inputs first
    models = load_models(model_paths)
    stats = {"n_gen_events": 0.0, "n_flash_events": 0.0, "n_jets": 0.0, "n_muons": 0.0, "time_flash_s": 0.0}
    t0 = time.perf_counter()
    with tqdm(total=sum(entries.values()), desc=f"flash {sample}", unit="evt", disable=not progress,
              mininterval=2.0) as bar:
        for fi, (path, out_path) in enumerate(zip(inputs, outputs)):
            parts = []
            for bi, (_, arrays) in enumerate(io.iterate_events([path], branches, step_size=batch, stage=stage)):
                g = rng(seed, "flash_generate", sample, fi, bi)
                tg = torch.Generator().manual_seed(int_seed(seed, "flash_generate", sample, fi, bi, "torch"))
                t1 = time.perf_counter()
                parts.append(flash_events(arrays, models, k, g, tg, fcfg["acceptance_redraws"]))
                stats["time_flash_s"] += time.perf_counter() - t1
                bar.update(len(arrays["event"]))
            events = {key: (ak.concatenate([p[key] for p in parts]) if isinstance(parts[0][key], ak.Array)
                            else np.concatenate([p[key] for p in parts])) for key in parts[0]} if parts else None
            if events is None:  # an empty file: empty output with the same branches
                events = _empty_events()
            io.write_nanoaod(out_path, events, ["GenPart", "GenJet", "Jet", "Muon"], runs=_runs_of(path))
            stats["n_gen_events"] += entries[path]
            stats["n_flash_events"] += len(events["event"])
            stats["n_jets"] += float(ak.sum(ak.num(events["Jet"], axis=1)))
            stats["n_muons"] += float(ak.sum(ak.num(events["Muon"], axis=1)))
            log.info("%s -> %s: %d gen events, %d flash events", path, out_path, entries[path], len(events["event"]))
    stats["wall_s"] = time.perf_counter() - t0
    stats["flash_s_per_gen_event"] = stats["time_flash_s"] / max(stats["n_gen_events"], 1.0)
    return stats


def _empty_events() -> dict:
    out: dict[str, object] = {name: np.zeros(0, dtype=dt) for name, dt in {**nanoaod.GEN_FLAT, **nanoaod.RECO_FLAT}.items()}
    for cname, spec in nanoaod.COLLECTIONS.items():
        extra = nanoaod.CROSS_REFERENCES.get(cname, {})
        out[cname] = ak.unflatten(ak.zip({f: np.zeros(0, dtype=dt) for f, dt in {**spec, **extra}.items()}), np.zeros(0, dtype=np.int64))
    return out


def output_paths(out_dir: str | os.PathLike, n_files: int) -> list[str]:
    return [str(Path(out_dir) / f"chunk{i}.root") for i in range(n_files)]
