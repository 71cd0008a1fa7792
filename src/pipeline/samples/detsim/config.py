"""The detector config view of the reference detector simulation and the |eta|-knot interpolation
of its parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.errors import ConfigError


class _Cfg:
    """Read-only view of the detector config that names the missing key path on error."""

    def __init__(self, data: Mapping, path: str = "detector"):
        self._data = data
        self._path = path

    def __getitem__(self, key: str) -> Any:
        if not isinstance(self._data, Mapping) or key not in self._data:
            raise ConfigError(f"{self._path}.{key}: missing from the config (see config/README.md)")
        value = self._data[key]
        return _Cfg(value, f"{self._path}.{key}") if isinstance(value, Mapping) else value

    def f(self, key: str) -> float:
        return float(self[key])

    def knots(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self[x_key], dtype=float)
        y = np.asarray(self[y_key], dtype=float)
        if x.shape != y.shape or x.ndim != 1 or len(x) == 0 or np.any(np.diff(x) <= 0):
            raise ConfigError(
                f"{self._path}.{x_key}/{y_key}: knots must increase strictly and have as many values"
            )
        return x, y


def _interp(abs_eta: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.interp(abs_eta, knots[0], knots[1])
