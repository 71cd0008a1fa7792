"""The generator-level content of a batch of events, as handed to the detector simulation.

The generator (:mod:`pipeline.samples.generator`) fills it; the reference detector simulation
(:mod:`pipeline.samples.detsim`) reads it; :mod:`pipeline.samples.produce` writes the NanoAOD
parts of it (``gen_part``, ``gen_jets`` restricted to the contract fields, GenMET, weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import awkward as ak
import numpy as np


@dataclass
class GeneratedEvents:
    """Generator-level events of one chunk. All jagged arrays have one entry per event.

    Attributes
    ----------
    particles
        Stable final-state particles (neutrinos included), jagged records with fields
        ``px, py, pz, E`` (float64, GeV), ``pdgId`` (int32), ``charge`` (float32, units of e),
        ``genPartIdx`` (int32: index of the same particle in ``gen_part``, -1 if not stored there)
        and ``genJetIdx`` (int32: index of the gen jet it was clustered into, -1 if none).
    gen_part
        The pruned generator record of NanoAOD (``GenPart``): hard-process particles, resonances,
        every stable lepton above a threshold and its ancestry; fields and types of
        :data:`pipeline.nanoaod.GENPART` (``genPartIdxMother`` indexes ``gen_part`` itself).
    gen_jets
        anti-kt gen jets of visible final-state particles (neutrinos excluded), pT-ordered, with the
        fields of :data:`pipeline.nanoaod.GENJET` plus constituent summaries used by the detector
        simulation: ``nConstituents``, ``nCharged`` (int32), ``chargedPtFraction``,
        ``photonPtFraction``, ``ptD`` and ``axis2`` (float32; ``ptD`` and ``axis2`` as in the CMS
        quark-gluon likelihood).
    gen_met_pt, gen_met_phi
        Transverse momentum of the vector sum of neutrinos (float32, per event).
    gen_weight
        Event weight (float32, 1 for unweighted generation).
    xsec_pb, xsec_err_pb
        Cross-section of the generated process (Pythia8's sigmaGen, including forced decays) [pb].
    """

    particles: ak.Array
    gen_part: ak.Array
    gen_jets: ak.Array
    gen_met_pt: np.ndarray
    gen_met_phi: np.ndarray
    gen_weight: np.ndarray
    xsec_pb: float
    xsec_err_pb: float
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gen_weight)
