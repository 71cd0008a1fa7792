"""Provenance: what identifies a run of the pipeline, independent of where it is recorded.

:func:`provenance_tags` builds the tags that :func:`pipeline.tracking.tracked_run` sets on every
MLflow run (MLflow cannot see the git commit of a Snakemake script, so we set them):

``git_commit`` / ``git_dirty``
    ``git rev-parse HEAD`` and whether ``git status --porcelain`` reports anything (tracked
    changes or untracked, non-ignored files), in the repository that contains the code (else
    ``workdir``'s); ``"unknown"`` outside a git repository (or in one without commits).
``config_sha256``
    SHA-256 of the whole configuration serialised as canonical JSON (sorted keys, no
    whitespace, :func:`canonical_json`); the store logs the same JSON as the artifact
    ``config.json`` so it can be re-checked.
``snakemake_rule``, ``wildcard.<name>``, ``input_sha256.<name>`` (``input_sha256.<name>.<i>``
    for a list of files), ``seed``, ``pipeline_version``, ``host``.

This module does not import MLflow (nor :mod:`pipeline.config`): the configuration module uses
:func:`config_sha256` from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputFileError
from pipeline.io import sha256_file

#: The repository this package is imported from (``src/pipeline/`` -> the repository root).
CODE_ROOT = Path(__file__).resolve().parents[2]


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace; numpy scalars, paths, sets made plain."""

    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):  # numpy scalars and arrays
            return o.tolist()
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=str)
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        if isinstance(o, Mapping):
            return dict(o)
        return str(o)

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of the configuration as canonical JSON (independent of key order)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def input_sha256(path: str | os.PathLike, name: str) -> str:
    """SHA-256 of an input file; for a directory, of its sorted (relative path, file hash) list.

    ``name`` (the input's name in the rule) only serves the error message of a missing input.
    """
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    raise InputFileError(f"{path}: input '{name}' of the tracked run does not exist")


def git_state(workdir: str | os.PathLike = ".") -> tuple[str, str]:
    """``(commit, dirty)`` of the git repository containing ``workdir``; ``"unknown"`` if none."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(workdir), *args], capture_output=True, text=True,
                                 timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout if res.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if commit is None:
        return "unknown", "unknown"
    status = git("status", "--porcelain")
    dirty = "unknown" if status is None else ("true" if status.strip() else "false")
    return commit.strip(), dirty


def clean_key(key: str) -> str:
    """A key MLflow accepts: alphanumerics, ``_ - . / : space``; no leading slash or ``..``."""
    key = re.sub(r"[^\w.\-/ :]", "_", str(key)).strip("/") or "_"
    return key.replace("..", "__")[:250]


def provenance_tags(*, config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any],
                    inputs: Mapping[str, str | os.PathLike | list], seed: int | None,
                    workdir: str | os.PathLike) -> dict[str, str]:
    """The provenance tags of a run (see the module docstring); keys made valid by :func:`clean_key`.

    ``inputs`` maps names to a file, a directory, or a list of them.
    """
    from pipeline import __version__

    # The commit of the code that ran: the repository this package is imported from (the DAG
    # may run in a working directory outside it), else the working directory's.
    commit, dirty = git_state(CODE_ROOT)
    if commit == "unknown":
        commit, dirty = git_state(workdir)
    tags = {
        "git_commit": commit,
        "git_dirty": dirty,
        "config_sha256": config_sha256(config),
        "snakemake_rule": str(rule),
        "seed": "None" if seed is None else str(int(seed)),
        "pipeline_version": __version__,
        "host": socket.gethostname(),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown by the MLflow UI
    for name, value in wildcards.items():
        tags[clean_key(f"wildcard.{name}")] = str(value)
    for name, value in inputs.items():
        if isinstance(value, (str, os.PathLike)):
            tags[clean_key(f"input_sha256.{name}")] = input_sha256(value, name)
        else:
            for i, path in enumerate(value):
                tags[clean_key(f"input_sha256.{name}.{i}")] = input_sha256(path, f"{name}[{i}]")
    return tags
