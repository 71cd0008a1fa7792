"""The glue between a Snakemake ``script:`` and the library: the only module that knows Snakemake.

Only ``workflow/scripts/*.py`` import it (an import-linter contract in ``pyproject.toml`` forbids
every library module from doing so). A script is named after its rule, unpacks the ``snakemake``
object and calls library entry points that take file paths and their own config block::

    from pipeline.glue import run
    from pipeline.skim import skim_sample


    def main(smk):
        skim_sample(list(smk.input), smk.output.skim, ...)


    run(snakemake, main)

:func:`run` sends Python logging, stdout and stderr (progress bars included) to the rule's
``log:`` file, and turns a :class:`~pipeline.errors.PipelineError` into one clear line and a
non-zero exit instead of a traceback. :func:`tracked` opens the rule's MLflow run with the
provenance tags of the job (:func:`provenance`) and the one run-name style of the project,
``{rule}/{wildcard values}`` (:func:`run_name`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")


def setup_logging(level: int = logging.INFO) -> None:
    """Python logging with timestamps to ``sys.stderr`` (which :func:`run` points at the rule's
    ``log:`` file)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    for noisy in ("alembic", "urllib3", "matplotlib", "numba", "fsspec", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _redirect_fds(stream):
    """Point file descriptors 1 and 2 at ``stream`` so that C/C++ libraries (Pythia8, FastJet)
    print into the rule's log too, not onto the terminal."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        yield
    finally:
        try:
            stream.flush()
        except ValueError:
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def run(snakemake: Any, body: Callable[[Any], object]) -> None:
    """Run ``body(snakemake)`` with logging to the rule's log file; exit 1 on a PipelineError."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stream = open(log_path, "w", buffering=1) if log_path else None  # noqa: SIM115
    rule = getattr(snakemake, "rule", "?")
    with contextlib.ExitStack() as stack:
        if stream is not None:
            stack.callback(stream.close)
            stack.enter_context(_redirect_fds(stream))
            stack.enter_context(contextlib.redirect_stdout(stream))
            stack.enter_context(contextlib.redirect_stderr(stream))
        setup_logging()
        t0 = time.perf_counter()
        log.info("rule %s, wildcards %s", rule, dict(snakemake.wildcards.items()))
        try:
            body(snakemake)
        except PipelineError as exc:
            log.error("%s", exc)
            failure = f"ERROR in rule {rule}: {exc}"
        else:
            failure = None
            log.info("rule %s done in %.1f s", rule, time.perf_counter() - t0)
    if failure is not None:
        # One clear line on the terminal too (file descriptors restored), where Snakemake shows
        # the failing job.
        sys.__stderr__.write(failure + "\n")
        sys.__stderr__.flush()
        sys.exit(1)


def run_name(snakemake: Any) -> str:
    """The MLflow run name of a job: ``{rule}`` or ``{rule}/{value}/{value}`` (wildcard values in
    the order the rule declares them), e.g. ``train_flow/jets``, ``generate_sample/dy_mumu/0``."""
    values = [str(v) for v in dict(snakemake.wildcards.items()).values()]
    return "/".join([str(getattr(snakemake, "rule", "?")), *values])


def provenance(snakemake: Any, seed: int | None = None, params: dict | None = None) -> dict:
    """Keyword arguments of :func:`pipeline.tracking.tracked_run` taken from a Snakemake job:
    the full config, the rule, its wildcards, its named (or numbered) inputs and the seed."""
    inputs: dict[str, object] = {}
    named = dict(snakemake.input.items())
    if named:
        inputs.update({k: (list(v) if not isinstance(v, str) else v) for k, v in named.items()})
    else:
        inputs.update({f"input{i}": f for i, f in enumerate(snakemake.input)})
    return {
        "config": dict(snakemake.config),
        "rule": getattr(snakemake, "rule", "?"),
        "wildcards": dict(snakemake.wildcards.items()),
        "inputs": inputs,
        "seed": seed if seed is not None else snakemake.config.get("seed"),
        "params": params,
    }


@contextlib.contextmanager
def tracked(snakemake: Any, experiment: str, params: dict | None = None, seed: int | None = None):
    """The job's MLflow run in the capability's ``experiment``: named :func:`run_name`, tagged
    with :func:`provenance`; yields the :class:`pipeline.tracking.TrackedRun`."""
    from pipeline.tracking import tracked_run

    with tracked_run(snakemake.config["mlflow"], experiment, run_name(snakemake),
                     **provenance(snakemake, seed=seed, params=params)) as tr:
        yield tr
