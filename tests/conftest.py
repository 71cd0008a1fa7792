"""Shared fixtures: the repository root, configs, and the real CMS NanoAOD file beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
NANO_DY = SHARED_DATA / "nano_dy.root"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def laptop_config() -> dict:
    from pipeline.config import load_config

    return load_config(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    from pipeline.config import load_config

    return load_config(REPO / "config" / "tiny.yaml")


@pytest.fixture(scope="session")
def nano_dy() -> Path:
    """The real CMS NanoAOD file (40 DY events) from ../shared/data; skip where it is absent."""
    if not NANO_DY.exists():
        pytest.skip(f"real CMS NanoAOD not available: {NANO_DY} is absent (needs ../shared beside the repo)")
    return NANO_DY


@pytest.fixture(scope="session")
def tiny_dag_run(tmp_path_factory):
    """config/tiny.yaml run once per session, locally on 2 cores, in a temporary working directory.

    Returns (workdir, validated config, seconds). Shared by test_workflow (checks the outputs),
    test_reliability (determinism) and test_slurm (the same DAG through SLURM must equal it).
    Tests must not write into this workdir.
    """
    import time

    from dag_runs import run_snakemake
    from pipeline.config import load_config

    workdir = tmp_path_factory.mktemp("tiny")
    t0 = time.perf_counter()
    run_snakemake(workdir, "--configfile", str(REPO / "config" / "tiny.yaml"))
    return workdir, load_config(REPO / "config" / "tiny.yaml"), time.perf_counter() - t0
