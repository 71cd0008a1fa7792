"""Calorimeter fast simulation cost, measured in one run: the GAN's ms per shower at batch 1, 100
and 10^4 on CPU (and GPU where there is one) next to the reference simulation's ms per shower at
the same incident energies (log-uniform over the configured range), and their ratio.

The GAN is the trained model of the DAG (``--model``, default results/models/calo/model.pt, either
generator: the Flow-GAN's flows or the MLP); without one, a freshly initialised generator of the
configured kind and size is timed (the cost does not depend on
the weights; the JSON says which).

    .venv/bin/python benchmarks/bench_calo.py --config config/config.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _time_gan(gen, energies, batch: int, device: str, repeats: int) -> float:
    """Best-of-``repeats`` ms per shower of generating ``len(energies)`` showers in batches."""
    import torch

    gen.to(device)
    e_all = torch.as_tensor(energies, dtype=torch.float32, device=device)
    p_all = torch.ones(len(e_all), dtype=torch.long, device=device)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for start in range(0, len(e_all), batch):
                e, p = e_all[start:start + batch], p_all[start:start + batch]
                out = gen.sample_tensor(e, p)
                if device == "cpu":
                    out.numpy()
                else:
                    out.cpu()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best / len(e_all) * 1e3


def main() -> None:
    import torch

    from pipeline.bench import write_result
    from pipeline.calo.showersim import sample_energies, simulate
    from pipeline.calo.train import ShowerGenerator, reference_geometry
    from pipeline.config import load_config
    from pipeline.seeds import rng

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--model", default="results/models/calo/model.pt")
    ap.add_argument("--reference-showers", type=int, default=2000, help="showers the reference simulates")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="results/benchmarks/calo.json")
    args = ap.parse_args()

    cfg = load_config(args.config)
    calo = cfg["calo"]
    torch.set_num_threads(args.threads)
    r = rng(cfg["seed"], "benchmark", "calo")
    n_ref = args.reference_showers
    energies = sample_energies(max(n_ref, 10_000), calo["energy_min_mev"], calo["energy_max_mev"], r)
    figures: dict[str, object] = {"torch_threads": args.threads}

    g = reference_geometry(calo, "photon")
    figures["n_voxels"] = g.n_voxels
    figures["geometry"] = calo["geometry"]
    ref_ms = {}
    for particle in ("photon", "electron"):
        simulate(energies[:50], particle, g, calo["simulation"], r)  # warm-up
        t0 = time.perf_counter()
        simulate(energies[:n_ref], particle, g, calo["simulation"], r)
        ref_ms[particle] = (time.perf_counter() - t0) / n_ref * 1e3
        figures[f"reference_ms_per_shower_{particle}"] = ref_ms[particle]
    figures["reference_ms_per_shower"] = float(np.mean(list(ref_ms.values())))
    figures["reference_showers_timed"] = n_ref

    if Path(args.model).exists():
        gen = ShowerGenerator(args.model)
        figures["gan_model"] = str(args.model)
    else:
        print(f"{args.model} not found: timing an untrained generator of the configured size", file=sys.stderr)
        torch.manual_seed(0)
        gen = ShowerGenerator.untrained(calo, g)
        figures["gan_model"] = "untrained (same architecture)"
    figures["gan_parameters"] = sum(p.numel() for p in gen.generator.parameters())
    figures["gan_generator"] = gen.kind
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for batch, n in ((1, 200), (100, 5000), (10_000, 10_000)):
            ms = _time_gan(gen, energies[:n], batch, device, repeats=3 if batch > 1 else 2)
            figures[f"gan_ms_per_shower_batch{batch}_{device}"] = ms
            figures[f"reference_over_gan_batch{batch}_{device}"] = figures["reference_ms_per_shower"] / ms
        gen.generator.to("cpu")
        gen.cond.to("cpu")
    write_result(args.out, "calo", figures)


if __name__ == "__main__":
    main()
