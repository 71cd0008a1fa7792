"""The GenPart mother-chain walk, one generation at a time, vectorised over many start entries.

Used by the reference detector simulation (true, randomly drawn decay vertices of muons) and by
the FlashSim muon conditions (expected flight of the same ancestors).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MAX_ANCESTRY_DEPTH = 64  # mother-chain walk limit (Pythia records are far shallower)


def flat_mothers(counts: np.ndarray, mother_local: np.ndarray) -> np.ndarray:
    """Flat (global) index of the mother of each entry of a flattened GenPart collection.

    ``counts`` is the number of entries per event, ``mother_local`` the flattened
    ``genPartIdxMother`` (index within the event, -1: none); the result is -1 where there is none.
    """
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    evt = np.repeat(np.arange(len(counts)), counts)
    return np.where(mother_local >= 0, offsets[evt] + mother_local, -1) if len(evt) else mother_local


def walk_ancestors(
    mother: np.ndarray, abs_pdg: np.ndarray, start: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Walk the mother chains of the flat entries ``start``, one generation per step.

    ``mother`` is the flat mother index of every entry (:func:`flat_mothers`), ``abs_pdg`` its
    |pdgId|. Each step yields ``(rows, ancestors, copy)``: the positions in ``start`` whose chain
    is still going (increasing), the flat index of their ancestor of this generation, and whether
    that ancestor is a copy of its own mother (same |pdgId|: a recoil copy or B mixing, which must
    fly once). The walk stops when every chain has ended or after :data:`MAX_ANCESTRY_DEPTH`
    generations.
    """
    n = len(start)
    cur = mother[start] if n else np.zeros(0, dtype=np.int64)
    for _ in range(MAX_ANCESTRY_DEPTH):
        rows = np.flatnonzero(cur >= 0)
        if not len(rows):
            break
        a = cur[rows]
        ma = mother[a]
        copy = (ma >= 0) & (abs_pdg[np.maximum(ma, 0)] == abs_pdg[a])
        yield rows, a, copy
        cur = np.full(n, -1, dtype=np.int64)
        cur[rows] = ma
