"""Run the analysis processor over one sample with coffea's ``processor.Runner``.

Executor: ``FuturesExecutor`` (``analysis.workers`` processes) on a laptop, ``DaskExecutor`` when
``analysis.dask_scheduler`` names a scheduler address (or a ``distributed.Client`` is passed, as
the tests do with a ``LocalCluster``). For large analyses on a SLURM cluster, start the scheduler
and workers with dask-jobqueue (see README.md, "Analysis on Dask") and put its address in the
config.

Output: one file per (sample, simulation type), written with ``coffea.util.save`` (lz4 cloudpickle
of the ``hist`` objects) atomically::

    {"sample", "simtype", "files", "norm", "xsec_pb", "sum_genWeight", "luminosity_fb",
     "with_score", "n_events", "hists", "cutflow", "yields"}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline import io, seeds, skim
from pipeline.normalisation import sample_normalisation
from pipeline.analysis import processor as proc
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError

log = logging.getLogger(__name__)

SIMTYPES = ("full", "flash")


def analysis_branches(skim_cfg: Mapping) -> list[str]:
    """Every Events branch the processor reads (the skim's: ids, genWeight, Muon, Jet, MET)."""
    return skim.skim_branches(skim_cfg)


def check_inputs(files: Sequence[str], skim_cfg: Mapping, stage: str) -> int:
    """Open every file and check its branches before any work; return the total number of events."""
    return sum(io.check_inputs(files, analysis_branches(skim_cfg), stage).values())


def _executor(analysis_cfg: Mapping, client, progress: bool):
    from coffea import processor

    scheduler = analysis_cfg["dask_scheduler"]
    if client is None and scheduler:
        from distributed import Client

        try:
            client = Client(str(scheduler), timeout="30s")
        except OSError as exc:
            raise ConfigError(f"analysis.dask_scheduler: cannot reach {scheduler!r} ({exc})") from None
    if client is not None:
        return processor.DaskExecutor(client=client, status=progress), "dask"
    return processor.FuturesExecutor(workers=int(analysis_cfg["workers"]), status=progress), "futures"


def bootstrap_salts(acfg: Mapping, seed: int, sample: str, with_score: bool = True) -> list[int]:
    """One salt per bootstrap replica of ``sample`` (``analysis.bootstrap.replicas`` of the
    ``analysis`` config block ``acfg``, 0: none), from the master ``seed``: the same for the full
    and the flash simulation of the sample; empty when the fit variable is the classifier score
    and the analysis runs without the classifier."""
    n = int(acfg["bootstrap"]["replicas"])
    if not with_score and acfg["fit"]["variable"] == proc.SCORE:
        n = 0
    return [seeds.salt64(seed, "analysis_bootstrap", sample, r) for r in range(n)]


def run_processor(files: Sequence[str], dataset: str, acfg: Mapping, skim_cfg: Mapping, seed: int, norm: float,
                  model_path: str | None = None, model_json: str | None = None, client=None,
                  progress: bool = True, executor=None) -> tuple[dict, str]:
    """Run :class:`~pipeline.analysis.processor.VBFHmumuProcessor` over ``files`` with the
    ``analysis`` and ``skim`` config blocks and the master ``seed`` (bootstrap replicas).

    Returns the merged accumulator and the executor kind used ("futures" or "dask"). ``executor``
    overrides the choice (any coffea executor, e.g. ``IterativeExecutor`` in a benchmark).
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    names = proc.model_features(model_json) if model_path is not None else None
    if model_path is not None and not Path(model_path).is_file():
        raise InputFileError(f"{model_path}: classifier model not found")
    salts = bootstrap_salts(acfg, seed, dataset, model_path is not None)
    instance = proc.VBFHmumuProcessor(skim_cfg, acfg, {dataset: norm}, model_path, names,
                                      threads=int(acfg["threads"]), bootstrap_salts={dataset: salts})
    kind = "custom"
    if executor is None:
        executor, kind = _executor(acfg, client, progress)
    runner = processor.Runner(executor=executor, schema=NanoAODSchema, chunksize=int(acfg["chunk_events"]),
                              savemetrics=False)
    fileset = {dataset: {"files": {str(f): "Events" for f in files}}}
    out = runner(fileset, instance, treename="Events")
    return out, kind


def run_analysis(files: Sequence[str], out_path: str, sample: str, simtype: str, sample_cfg: Mapping,
                 acfg: Mapping, skim_cfg: Mapping, luminosity_fb: float, seed: int,
                 model_path: str | None = None, model_json: str | None = None, client=None,
                 progress: bool = True) -> dict:
    """Analyse one sample (its ``samples.<sample>`` block ``sample_cfg``) of one simulation type
    with the ``analysis`` and ``skim`` config blocks, normalised to ``luminosity_fb``, and save the
    result (see module docstring); ``seed``: the master seed (bootstrap replicas).

    Raises :class:`~pipeline.errors.InputFileError` / ``MissingBranchError`` on a bad input (before
    any work), :class:`~pipeline.errors.ConfigError` on a bad config; writes nothing then.
    """
    from coffea.util import save

    if simtype not in SIMTYPES:
        raise ConfigError(f"simulation type {simtype!r}; expected one of {', '.join(SIMTYPES)}")
    files = [str(f) for f in files]
    stage = f"analysis of {simtype} sample '{sample}'"
    if not files:
        raise InputFileError(f"{stage}: no input files")
    n_events = check_inputs(files, skim_cfg, stage)
    norm = sample_normalisation(files, sample, sample_cfg, luminosity_fb)
    t0 = time.perf_counter()
    acc, kind = run_processor(files, sample, acfg, skim_cfg, seed, norm["norm"], model_path, model_json, client,
                              progress)
    wall = time.perf_counter() - t0
    if acc["cutflow"]["all"]["events"] != n_events:
        raise EmptySelectionError(f"{stage}: processed {acc['cutflow']['all']['events']} of {n_events} events")
    result = {
        "sample": sample,
        "simtype": simtype,
        "files": files,
        "luminosity_fb": float(luminosity_fb),
        **norm,
        "with_score": model_path is not None,
        "n_events": n_events,
        "executor": kind,
        "wall_s": wall,
        **acc,
    }
    with io.atomic_output(out_path) as tmp:
        save(result, str(tmp))
    log.info("%s: %d events in %.1f s (%s); yields %s", stage, n_events, wall, kind,
             {r: round(y["sumw"], 3) for r, y in acc["yields"].items()})
    return result


def load_result(path: str | Path) -> dict:
    """A result written by :func:`run_analysis` (``coffea.util.load``)."""
    from coffea.util import load

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: analysis output not found")
    try:
        out = load(str(p))
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{p}: not an analysis output written by coffea.util.save ({exc})") from None
    if not isinstance(out, dict) or "hists" not in out or "yields" not in out:
        raise InputFileError(f"{p}: analysis output lacks 'hists'/'yields'")
    return out

