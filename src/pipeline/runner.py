"""The glue between a Snakemake ``script:`` and the library.

A script in ``workflow/scripts`` is three lines::

    from pipeline.runner import run
    from pipeline.skim import skim_sample
    run(snakemake, lambda smk: skim_sample(...))

:func:`run` sends Python logging, stdout and stderr (progress bars included) to the rule's
``log:`` file, and turns a :class:`~pipeline.errors.PipelineError` into one clear line and a
non-zero exit instead of a traceback.
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


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (and stderr) with timestamps."""
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
