"""Tests of the shared physics layer (pipeline.physics): PDG tables, the mother-chain walk."""

from __future__ import annotations

import numpy as np

from pipeline.physics.ancestry import MAX_ANCESTRY_DEPTH, flat_mothers, walk_ancestors
from pipeline.physics.pdg import CTAU_CM, INVISIBLE_PDG_IDS, NEUTRINO_PDG_IDS, PDG_MASS_GEV, pdg_lookup


def test_one_invisible_set_with_the_neutrinos():
    assert set(NEUTRINO_PDG_IDS) == {12, 14, 16}
    assert set(INVISIBLE_PDG_IDS) == {12, 14, 16, 1000012, 1000022, 1000039}
    assert set(PDG_MASS_GEV) == set(CTAU_CM)  # a mass for every weakly decaying species


def test_pdg_lookup_uses_the_absolute_code_and_a_default():
    got = pdg_lookup(CTAU_CM, np.array([521, 13, 15, 0, 999999]), default=-1.0)
    assert got.tolist() == [CTAU_CM[521], -1.0, CTAU_CM[15], -1.0, -1.0]


def test_walk_ancestors_one_generation_per_step_and_flags_copies():
    # event 0: [B+ (root), B+ copy, D0, mu]; event 1: [Z, mu]
    counts = np.array([4, 2])
    mother = flat_mothers(counts, np.array([-1, 0, 1, 2, -1, 0]))
    assert mother.tolist() == [-1, 0, 1, 2, -1, 4]
    apdg = np.array([521, 521, 421, 13, 23, 13])
    steps = [(r.tolist(), a.tolist(), c.tolist()) for r, a, c in walk_ancestors(mother, apdg, np.array([3, 5]))]
    assert steps == [
        ([0, 1], [2, 4], [False, False]),  # D0, Z
        ([0], [1], [True]),  # the B+ copy (its mother is a B+)
        ([0], [0], [False]),  # the B+
    ]
    assert list(walk_ancestors(mother, apdg, np.zeros(0, dtype=np.int64))) == []


def test_walk_ancestors_stops_at_the_depth_limit():
    mother = np.array([1, 0])  # a loop: never ends by itself
    assert len(list(walk_ancestors(mother, np.array([1, 2]), np.array([0])))) == MAX_ANCESTRY_DEPTH
