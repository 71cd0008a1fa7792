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
