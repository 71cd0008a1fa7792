"""Generator-level conditions of FlashSim, computed from the Gen* branches of a NanoAOD chunk.

They must be exactly the ``gen_*`` / ``ctx_*`` columns of the training tables
(:mod:`pipeline.skim`), so they are built by the same functions
(:func:`pipeline.skim.jet_conditions`, :func:`pipeline.skim.muon_conditions`) with the same
acceptance (``training_tables.<obj>``); a test checks the equality row by row on a produced sample.

The held-out split of the validation is a function of the event number alone
(:func:`is_holdout`), so a training table, a full-sim sample and a flash sample agree on it.
"""

from __future__ import annotations

import numpy as np

from pipeline import nanoaod
from pipeline import skim as _skim
from pipeline.seeds import event_uniform

def is_holdout(event: np.ndarray, fraction: float) -> np.ndarray:
    """True for the events of the validation split: a hash of the event number (splitmix64,
    :func:`pipeline.seeds.event_uniform`) below ``fraction``. The same event number is in the same
    split in every file and table."""
    return event_uniform(event) < float(fraction)


def needed_branches() -> list[str]:
    """Every input branch flash_generate reads: event ids, weight, GenMET and the GenJet/GenPart
    contract (all of which the flash sample carries over)."""
    return nanoaod.gen_branches()


# The conditions are the gen_/ctx_ columns of the training tables, built by the same functions.
jet_conditions = _skim.jet_conditions
muon_conditions = _skim.muon_conditions


CONDITION_BUILDERS = {"jets": jet_conditions, "muons": muon_conditions}
