"""FlashSim cost per event next to Pythia8 and the reference detector simulation, in one run.

Pythia8 generates ``--events`` events per process (``pythia8_s_per_event``: Pythia's event
generation alone, ``generate``'s ``extra['timing_s']['pythia']``, as in bench_samples.py); the
reference detector simulation runs on them (``detsim_s_per_event``). Then the gen-level content of
those events, tiled to batch sizes 10^2 .. 10^5, goes through FlashSim
(:func:`pipeline.flashsim.generate.flash_events`, k = 1: conditions, efficiency, flows, fakes,
decoding, cross-references, MET; no file I/O) on the CPU (``flash_s_per_event_batch<B>``), with
the trained models of ``--models``.

    .venv/bin/python benchmarks/bench_flashsim.py --config config/config.yaml \
        --models results/models/flashsim --events 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from pipeline import io, nanoaod
from pipeline.bench import timed, write_result
from pipeline.config import load_config
from pipeline.flashsim.conditions import needed_branches
from pipeline.flashsim.generate import flash_events, load_models
from pipeline.samples.detsim import simulate
from pipeline.samples.generator import generate
from pipeline.samples.produce import nanoaod_events, runs_record
from pipeline.seeds import int_seed, rng


def _tile(arrays: dict, n: int) -> dict:
    """``n`` events made of repeats of ``arrays`` (a dict of branch arrays)."""
    m = len(arrays["event"])
    idx = np.arange(n) % m
    return {k: v[idx] for k, v in arrays.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--models", default="results/models/flashsim", help="folder with jets.pt and muons.pt")
    ap.add_argument("--events", type=int, default=500, help="Pythia8 events per process")
    ap.add_argument("--batches", default="100,1000,10000,100000")
    ap.add_argument("--min-events", type=int, default=20000, help="flash events timed per batch size at least")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: flashsim.threads)")
    ap.add_argument("--out", default="results/benchmarks/flashsim.json")
    args = ap.parse_args()

    cfg = load_config(args.config)
    threads = args.threads or int(cfg["flashsim"].get("threads", 1))
    torch.set_num_threads(threads)
    figures: dict[str, float | str] = {"events_per_process": args.events, "flash_device": "cpu",
                                       "flash_torch_threads": threads}
    tmp = Path(tempfile.mkdtemp(prefix="bench_flashsim_"))
    totals = {"pythia8": 0.0, "detsim": 0.0, "n": 0}
    gen_parts = []
    for proc_name, proc in cfg["generation"]["processes"].items():
        seed = int_seed(cfg["seed"], "benchmark_flashsim", proc_name)
        _, gen = timed(lambda: generate(proc["settings"], args.events, seed, cfg["generation"], progress=False))
        t_sim, reco = timed(lambda: simulate(gen, cfg["detector"], rng(cfg["seed"], "benchmark_flashsim", proc_name),
                                             progress=False))
        n = len(gen)
        figures[f"pythia8_s_per_event_{proc_name}"] = gen.extra["timing_s"]["pythia"] / n
        figures[f"detsim_s_per_event_{proc_name}"] = t_sim / n
        totals["pythia8"] += gen.extra["timing_s"]["pythia"]
        totals["detsim"] += t_sim
        totals["n"] += n
        path = tmp / f"{proc_name}.root"
        io.write_nanoaod(path, nanoaod_events(gen, reco, run=1, first_event=0), list(nanoaod.COLLECTIONS),
                         runs_record(gen, 1))
        for _, arr in io.iterate_events([path], needed_branches()):
            gen_parts.append(arr)
        print(f"{proc_name}: pythia8 {figures[f'pythia8_s_per_event_{proc_name}'] * 1e3:.2f} ms/ev, "
              f"detsim {t_sim / n * 1e3:.2f} ms/ev", file=sys.stderr)
    figures["pythia8_s_per_event"] = totals["pythia8"] / totals["n"]
    figures["detsim_s_per_event"] = totals["detsim"] / totals["n"]

    arrays = {k: ak.concatenate([p[k] for p in gen_parts]) for k in gen_parts[0]}
    arrays = {k: (ak.to_numpy(v) if v.ndim == 1 else v) for k, v in arrays.items()}
    models = load_models([str(Path(args.models) / f"{o}.pt") for o in ("jets", "muons")])
    g = np.random.default_rng(1)
    tg = torch.Generator().manual_seed(1)
    redraws = int(cfg["flashsim"]["acceptance_redraws"])
    flash_events(_tile(arrays, 100), models, 1, g, tg, redraws)  # warm-up (lazy initialisation)
    for b in (int(x) for x in args.batches.split(",")):
        batch = _tile(arrays, b)
        reps = max(1, -(-args.min_events // b))
        t = 0.0
        for _ in range(reps):
            dt, out = timed(lambda: flash_events(batch, models, 1, g, tg, redraws))
            t += dt
        per_event = t / (reps * b)
        figures[f"flash_s_per_event_batch{b}"] = per_event
        figures[f"pythia8_over_flash_batch{b}"] = figures["pythia8_s_per_event"] / per_event
        figures[f"detsim_over_flash_batch{b}"] = figures["detsim_s_per_event"] / per_event
        print(f"batch {b}: flash {per_event * 1e3:.4f} ms/ev ({reps} x), "
              f"pythia8/flash {figures[f'pythia8_over_flash_batch{b}']:.1f}", file=sys.stderr)
    write_result(args.out, "flashsim", figures)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
