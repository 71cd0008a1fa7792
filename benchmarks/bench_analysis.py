"""Analysis throughput per core: the Coffea processor on NanoAOD and on skims, next to uproot's raw
read rate of the same branches, in one run.

On one core (coffea's IterativeExecutor, in process; 1 torch thread):

- ``uproot_nanoaod_events_per_s``: uproot reads the processor's branches (ids, genWeight, Muon,
  Jet, MET: :func:`pipeline.analysis.execute.analysis_branches`) of the NanoAOD files, nothing else
- ``processor_nanoaod_events_per_s``: ``processor.Runner`` with the VBF H->mumu processor on the
  same files (NanoEvents, object selection, event features, cuts, histograms, merge)
- ``parquet_skim_rows_per_s``: pyarrow reads the event columns of the skim
- ``processor_skim_rows_per_s``: the processor's column stage (:func:`pipeline.analysis.processor.process_columns`:
  cuts, regions, histogram filling) on the skim's rows (preselected events)

    .venv/bin/python benchmarks/bench_analysis.py --config config/config.yaml
"""

from __future__ import annotations

import argparse
import glob
import sys

import numpy as np

from pipeline import io
from pipeline.analysis import execute
from pipeline.analysis import processor as proc
from pipeline.bench import timed, write_result
from pipeline.config import load_config
from pipeline.features import EVENT_COLUMNS
from pipeline.normalisation import sample_normalisation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="folder holding samples/ and skims/")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the skim (it is small)")
    ap.add_argument("--out", default="results/benchmarks/analysis.json")
    args = ap.parse_args()

    from coffea import processor

    cfg = load_config(args.config)
    acfg = cfg["analysis"]
    samples = acfg["benchmark"]["samples"]
    files = sorted(f for s in samples for f in glob.glob(f"{args.results}/samples/{s}/chunk*.root"))
    skims = [f"{args.results}/skims/{s}.parquet" for s in samples]
    if not files:
        sys.exit(f"no NanoAOD files under {args.results}/samples/{{{','.join(samples)}}}/: run the DAG first")
    n_events = execute.check_inputs(files, cfg["skim"], "analysis benchmark")
    branches = execute.analysis_branches(cfg["skim"])

    def uproot_read():
        n = 0
        for _, arrays in io.iterate_events(files, branches, step_size=int(acfg["chunk_events"])):
            n += len(arrays["event"])
        return n

    def coffea_run():
        out, _ = execute.run_processor(files, samples[0], acfg, cfg["skim"], cfg["seed"], 1.0, progress=False,
                                       executor=processor.IterativeExecutor(status=False))
        return out

    uproot_read()  # warm-up: file cache and imports, as the processor run below gets them too
    t_read, n_read = timed(uproot_read)
    t_proc, out = timed(coffea_run)
    assert out["cutflow"]["all"]["events"] == n_events == n_read

    cols_needed = list(EVENT_COLUMNS)
    skim_cfg = cfg["skim"]
    def read_skims():
        return [io.read_parquet(p, cols_needed + ["genWeight"], what="skim") for p in skims]

    read_skims()  # warm-up (pyarrow/pandas imports, file cache)
    t_pq, tables = timed(read_skims)
    cols = {c: np.concatenate([np.asarray(t[c]) for t in tables]) for c in cols_needed}
    norm = sample_normalisation(files, samples[0], cfg["samples"][samples[0]], cfg["luminosity_fb"])["norm"]
    weights = np.concatenate([np.asarray(t["genWeight"], dtype=np.float64) for t in tables]) * norm
    n_rows = len(weights)
    proc.process_columns(cols, weights, skim_cfg, acfg)  # warm-up
    t_cols, _ = timed(lambda: [proc.process_columns(cols, weights, skim_cfg, acfg) for _ in range(args.repeat)])

    figures = {
        "samples": ",".join(samples),
        "nanoaod_files": len(files),
        "nanoaod_events": n_events,
        "branches_read": len(branches),
        "cores": 1,
        "uproot_nanoaod_events_per_s": n_read / t_read,
        "processor_nanoaod_events_per_s": n_events / t_proc,
        "processor_over_uproot_time_ratio": t_proc / t_read,
        "skim_rows": n_rows,
        "parquet_skim_rows_per_s": n_rows / t_pq,
        "processor_skim_rows_per_s": n_rows * args.repeat / t_cols,
        "selected_events": out["cutflow"][list(out["cutflow"])[-1]]["events"],
    }
    write_result(args.out, "analysis", figures)


if __name__ == "__main__":
    main()
