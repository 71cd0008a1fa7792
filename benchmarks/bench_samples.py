"""Sample production and skim cost, measured in one run.

Per process: Pythia8 event generation per event (initialisation, record processing and gen-jet
clustering reported separately), the reference detector simulation per event, NanoAOD writing per
event. Then the skim's throughput (events/s and MB/s of
compressed file) next to uproot's raw read rate of the same branches of the same files.

    .venv/bin/python benchmarks/bench_samples.py --config config/config.yaml --events 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from pipeline import nanoaod
from pipeline.bench import timed, write_result
from pipeline.config import load_config
from pipeline.io import write_nanoaod
from pipeline.samples.detsim import simulate
from pipeline.samples.generator import generate
from pipeline.samples.produce import nanoaod_events, runs_record
from pipeline.seeds import int_seed, rng
from pipeline.skim import skim_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--events", type=int, default=1000, help="events generated per process")
    ap.add_argument("--skim-copies", type=int, default=20, help="copies of the files the skim reads")
    ap.add_argument("--out", default="results/benchmarks/samples.json")
    args = ap.parse_args()

    cfg = load_config(args.config)
    figures: dict[str, float] = {"events_per_process": args.events}
    tmp = Path(tempfile.mkdtemp(prefix="bench_samples_"))
    files: list[str] = []
    totals = {"pythia8": 0.0, "generation": 0.0, "detsim": 0.0, "write": 0.0}
    for proc_name, proc in cfg["generation"]["processes"].items():
        seed = int_seed(cfg["seed"], "benchmark", proc_name)
        t_gen, gen = timed(lambda: generate(proc["settings"], args.events, seed, cfg["generation"], progress=False))
        t_sim, reco = timed(lambda: simulate(gen, cfg["detector"], rng(cfg["seed"], "benchmark", proc_name), progress=False))
        path = tmp / f"{proc_name}.root"
        ev = nanoaod_events(gen, reco, run=1, first_event=0)
        t_write, _ = timed(lambda: write_nanoaod(path, ev, list(nanoaod.COLLECTIONS), runs_record(gen, 1)))
        files.append(str(path))
        n = len(gen)
        split = gen.extra["timing_s"]
        # Pythia8's event generation alone (no initialisation, no clustering): the anchor for
        # comparisons with fast simulation. generation_* is the whole generate() call.
        figures[f"pythia8_s_per_event_{proc_name}"] = split["pythia"] / n
        figures[f"gen_record_s_per_event_{proc_name}"] = split["record"] / n
        figures[f"genjet_clustering_s_per_event_{proc_name}"] = split["clustering"] / n
        figures[f"pythia8_init_s_{proc_name}"] = t_gen - sum(split.values())
        figures[f"generation_s_per_event_{proc_name}"] = t_gen / n
        figures[f"detsim_s_per_event_{proc_name}"] = t_sim / n
        figures[f"nanoaod_write_s_per_event_{proc_name}"] = t_write / n
        totals["pythia8"] += split["pythia"]
        totals["generation"] += t_gen
        totals["detsim"] += t_sim
        totals["write"] += t_write
        print(f"{proc_name}: pythia8 {split['pythia'] / n * 1e3:.2f} ms/ev, generate() {t_gen / n * 1e3:.2f} ms/ev, detsim {t_sim / n * 1e3:.3f} ms/ev, "
              f"write {t_write / n * 1e3:.3f} ms/ev", file=sys.stderr)
    n_all = args.events * len(cfg["generation"]["processes"])
    figures["pythia8_s_per_event"] = totals["pythia8"] / n_all
    figures["generation_s_per_event"] = totals["generation"] / n_all
    figures["detsim_s_per_event"] = totals["detsim"] / n_all
    figures["nanoaod_write_s_per_event"] = totals["write"] / n_all
    figures["detsim_over_pythia8"] = totals["detsim"] / totals["pythia8"]

    # Skim throughput on enough data to dominate start-up: many copies of the DY file.
    dy = files[list(cfg["generation"]["processes"]).index("dy_mumu")]
    copies = []
    for i in range(args.skim_copies):
        dst = tmp / f"dy_copy{i}.root"
        os.link(dy, dst)
        copies.append(str(dst))
    n_events = sum(uproot.open(f)["Events"].num_entries for f in copies)
    size_mb = sum(os.path.getsize(f) for f in copies) / 1e6
    sample_cfg = {"role": "background"}
    import pandas  # noqa: F401  - imported before timing: the rate measured is throughput, not start-up
    import pyarrow.parquet  # noqa: F401

    t_skim, _ = timed(lambda: skim_sample(copies, str(tmp / "skim.parquet"), str(tmp / "cutflow.json"),
                                          "dy_mumu", sample_cfg, cfg["skim"], cfg["luminosity_fb"], progress=False))
    from pipeline.skim import skim_branches

    branches = skim_branches(cfg["skim"])
    read_mb = sum(sum(uproot.open(f)["Events"][b].compressed_bytes for b in branches) for f in copies) / 1e6

    def raw_read():
        for f in copies:
            for chunk in uproot.open(f)["Events"].iterate(branches, step_size=cfg["skim"]["chunk_events"], library="ak"):
                ak.num(chunk, axis=0)

    t_raw, _ = timed(raw_read)
    figures.update({
        "skim_events": n_events,
        "skim_events_per_s": n_events / t_skim,
        "skim_branch_mb_per_s": read_mb / t_skim,
        "skim_file_mb_per_s": size_mb / t_skim,
        "uproot_raw_read_events_per_s": n_events / t_raw,
        "uproot_raw_read_branch_mb_per_s": read_mb / t_raw,
        "skim_over_raw_read_time": t_skim / t_raw,
        "skim_branches_read": len(branches),
    })
    write_result(args.out, "samples", figures)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
