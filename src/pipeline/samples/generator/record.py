"""The event record of a Pythia batch as flat arrays in global indices (event offset + Pythia
index), and the pointer helpers the truth classification and the clustering use."""

from __future__ import annotations

import awkward as ak
import numpy as np

ROOT_ETA_MAX = 22756.0  # ROOT's eta for pt == 0 is sign(pz) * (22756 + |pz|)


class _Record:
    """All particles of a batch of Pythia events as flat arrays, indices global (-1: none)."""

    def __init__(self, n_events: int, counts: np.ndarray, fields: dict[str, np.ndarray]):
        self.n_events = n_events
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.event = np.repeat(np.arange(n_events), counts)
        self.id = fields["id"]
        self.status = fields["status"]
        base = self.offsets[self.event]
        # Pythia index 0 is the event "system": a mother/daughter index 0 means none.
        self.mother1, self.mother2, self.daughter1, self.daughter2 = (
            np.where(fields[k] > 0, base + fields[k], -1) for k in ("mother1", "mother2", "daughter1", "daughter2")
        )
        self.px, self.py, self.pz, self.e, self.m = (fields[k] for k in ("px", "py", "pz", "e", "m"))
        self.pt = np.hypot(self.px, self.py)

    @classmethod
    def from_batch(cls, raw: ak.Array) -> _Record:
        prt = raw["prt"]
        counts = ak.to_numpy(ak.num(prt)).astype(np.int64)

        def flat(array: ak.Array, dtype) -> np.ndarray:
            return ak.to_numpy(ak.flatten(array)).astype(dtype, copy=False)

        fields = {k: flat(prt[k], np.int64) for k in ("id", "status", "mother1", "mother2", "daughter1", "daughter2")}
        fields.update({k: flat(prt["p"][k], np.float64) for k in ("px", "py", "pz", "e")})
        fields["m"] = flat(prt["m"], np.float64)
        return cls(len(raw), counts, fields)

    def __len__(self) -> int:
        return len(self.id)


def _nearest(parent: np.ndarray, predicate: np.ndarray) -> np.ndarray:
    """Index of the nearest particle satisfying ``predicate`` among each particle and its
    ancestors along ``parent`` (-1 if none), by pointer jumping."""
    n = len(parent)
    ptr = np.where(predicate, np.arange(n), parent)
    ptr = np.append(np.where(ptr < 0, n, ptr), n)  # n: the sentinel "none", its own parent
    for _ in range(64):
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    else:  # pragma: no cover - would need a cycle in the mother graph
        raise RuntimeError("cycle in the Pythia mother graph")
    ptr = ptr[:n]
    return np.where(ptr == n, -1, ptr)


def _at(values: np.ndarray, index: np.ndarray, fill) -> np.ndarray:
    """``values[index]`` with ``fill`` where ``index < 0``."""
    return np.where(index >= 0, values[np.maximum(index, 0)], fill)


def _is_pointed_at(pointer: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` particles some entry of ``pointer`` (-1: none) points at."""
    out = np.zeros(n, dtype=bool)
    out[pointer[pointer >= 0]] = True
    return out


def _rank_in_event(event: np.ndarray, n_events: int) -> np.ndarray:
    """Position of each entry among the entries of its event (``event`` sorted)."""
    counts = np.bincount(event, minlength=n_events)
    starts = np.cumsum(counts) - counts
    return np.arange(len(event)) - starts[event]


def _eta(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    return np.where(pt > 0, eta, np.sign(pz) * (ROOT_ETA_MAX + np.abs(pz)))
