"""CaloChallenge HDF5 files: ``incident_energies`` (N, 1) and ``showers`` (N, n_voxels), MeV.

Reading checks everything a later step relies on and raises one
:class:`~pipeline.errors.InputFileError` naming the file and the problem: missing file, not HDF5
or truncated, missing dataset, wrong shapes, a showers width that does not match the geometry,
negative or non-finite energies. Writing is atomic (temporary file, then rename). Real
CaloChallenge files load unchanged (datasets are read as float32; extra datasets are ignored).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.calo.geometry import Geometry
from pipeline.errors import InputFileError
from pipeline.io import atomic_output, check_input_file

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class Showers:
    """Incident energies (N,) and showers (N, n_voxels), both in MeV, with their geometry."""

    incident_energies: np.ndarray
    showers: np.ndarray
    geometry: Geometry
    path: str = ""

    def __len__(self) -> int:
        return len(self.incident_energies)

    def subset(self, idx) -> Showers:
        return Showers(self.incident_energies[idx], self.showers[idx], self.geometry, self.path)


def write_showers(path: str | os.PathLike, incident_energies: np.ndarray, showers: np.ndarray,
                  attrs: Mapping[str, object] | None = None) -> None:
    """Write a CaloChallenge HDF5 file atomically (gzip-compressed float32 datasets)."""
    import h5py

    e = np.asarray(incident_energies, dtype=np.float32).reshape(-1, 1)
    s = np.asarray(showers, dtype=np.float32)
    if s.ndim != 2 or len(s) != len(e):
        raise ValueError(f"{path}: showers {s.shape} do not match incident energies {e.shape}")
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("incident_energies", data=e, compression="gzip", compression_opts=4)
            f.create_dataset("showers", data=s, compression="gzip", compression_opts=4,
                             chunks=(min(max(len(s), 1), 1024), s.shape[1]) if s.size else None)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v


def read_showers(path: str | os.PathLike, geometry: Geometry, max_showers: int | None = None) -> Showers:
    """Read and check a CaloChallenge HDF5 file against ``geometry``."""
    import h5py

    path = check_input_file(path, HDF5_MAGIC, "an HDF5 file", "the HDF5 signature",
                            expected="a CaloChallenge HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be opened as HDF5, truncated or corrupt? ({exc})") from None
    with f:
        for name in ("incident_energies", "showers"):
            if name not in f:
                raise InputFileError(f"{path}: no dataset '{name}' (found: {', '.join(f.keys()) or 'nothing'}); "
                                     "expected the CaloChallenge format")
        e_ds, s_ds = f["incident_energies"], f["showers"]
        if s_ds.ndim != 2:
            raise InputFileError(f"{path}: 'showers' has shape {s_ds.shape}, expected (N, n_voxels)")
        if s_ds.shape[1] != geometry.n_voxels:
            raise InputFileError(f"{path}: 'showers' has {s_ds.shape[1]} voxels per shower but the geometry has "
                                 f"{geometry.n_voxels} ({geometry.describe()})")
        if e_ds.ndim not in (1, 2) or (e_ds.ndim == 2 and e_ds.shape[1] != 1):
            raise InputFileError(f"{path}: 'incident_energies' has shape {e_ds.shape}, expected (N, 1)")
        if e_ds.shape[0] != s_ds.shape[0]:
            raise InputFileError(f"{path}: {e_ds.shape[0]} incident energies but {s_ds.shape[0]} showers")
        n = s_ds.shape[0] if max_showers is None else min(max_showers, s_ds.shape[0])
        try:
            e = np.asarray(e_ds[:n], dtype=np.float32).reshape(-1)
            s = np.asarray(s_ds[:n], dtype=np.float32)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputFileError(f"{path}: reading the datasets failed, truncated or corrupt? ({exc})") from None
    if n == 0:
        raise InputFileError(f"{path}: holds no showers")
    if not np.all(np.isfinite(e)) or not np.all(np.isfinite(s)):
        raise InputFileError(f"{path}: non-finite (NaN or inf) energies")
    if np.any(e <= 0):
        i = int(np.argmax(e <= 0))
        raise InputFileError(f"{path}: incident energy {e[i]:g} MeV of shower {i} is not positive")
    if np.any(s < 0):
        i, j = np.unravel_index(int(np.argmax(s < 0)), s.shape)
        raise InputFileError(f"{path}: negative energies in 'showers' ({int(np.sum(s < 0))} voxels, "
                             f"e.g. shower {i} voxel {j}: {s[i, j]:g} MeV)")
    return Showers(e, s, geometry, str(path))


def split_indices(n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: the last ``test_fraction`` of the file is held out.

    Files are written in random order, so the split is unbiased and stable across steps."""
    n_test = max(1, int(round(n * test_fraction)))
    return np.arange(n - n_test), np.arange(n - n_test, n)
