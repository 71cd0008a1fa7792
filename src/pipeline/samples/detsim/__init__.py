"""The reference detector simulation: gen-level events -> NanoAOD ``Jet``, ``Muon`` and ``MET``.

It plays the experiment's full simulation in this pipeline, so that the FlashSim flows trained on
its output have a real job: a CMS-like (Run 3) parametrised detector, per object and per
particle, with every number in the ``detector`` block of the config
(``workflow/schemas/detector.schema.yaml`` and ``config/README.md`` document each key).

Model in one paragraph (see also :func:`simulate`)
---------------------------------------------------
Each event has ``n_PU ~ Poisson(<mu>)`` pileup interactions, an unobserved per-event latent that
correlates objects of the same event. **Jets**: each gen jet is reconstructed with an efficiency
turning on with pT (plateau falling in the forward region); its pT response is a double-sided
Crystal Ball whose core width is ``sqrt((N/pT)^2 + S^2/pT + C^2)`` with eta-dependent
noise/stochastic/constant terms (the noise term grows with ``n_PU``), whose median depends on
flavour (gluon < b < c < light quark) and on the neutral-hadron pT fraction of the gen jet, both
fading with pT, and whose low-side tail is heavier for b jets and heavier still for
semileptonic b/c decays (neutrinos in the cone); eta, phi and mass are smeared. ``nConstituents``
follows from the gen charged/neutral multiplicities (tracking efficiency inside the tracker,
cluster merging beyond, pileup candidates); ``qgl`` is a likelihood-like sigmoid of the smeared
ptD, ln(axis2) and the reco multiplicity; ``btagDeepFlavB`` the sigmoid of a flavour-dependent
Gaussian mixture (b-jets without a secondary vertex, light jets with a mistag tail) whose
separation degrades at low and high pT and at large |eta| (and is ``btag.default`` beyond the
tracker); ``jetId`` is the CMS bit mask (0/2/6) with the tightLepVeto computed from the jet's
muon/electron pT fraction. Pileup jets (genJetIdx = -1) come in Poisson numbers ~ n_PU with a
power-law pT spectrum, denser forward. **Muons**: each stable gen muon is reconstructed with an
efficiency turning on with momentum (with wheel cracks in eta); 1/pT is smeared with
multiple-scattering and curvature terms plus a catastrophic tail, so the charge flips when the
curvature changes sign; ``dxy``, ``dz``, ``ip3d`` come from the true decay vertex (flight of every
long-lived ancestor in the GenPart mother chain: B, D, tau, ...) plus a pT- and theta-dependent
resolution; ``pfRelIso04_all`` sums the actual particles within dR < 0.4 (tracking efficiency and
thresholds for charged ones, calorimeter resolution for neutral ones) plus pileup particles with
a delta-beta correction; medium/tight IDs depend on prompt/non-prompt/fake origin, pT and (tight)
the impact parameters. Charged pions and kaons fake muons (genPartIdx = -1) at a small rate.
**MET** is minus the vector sum of reco jets (with the reco muons inside them taken out), reco
muons and the unclustered particles (response below one, smeared with sumET and n_PU).

All steps are vectorised over the chunk with numpy (flat arrays + event index); the only random
source is the ``numpy.random.Generator`` passed in, so the same generator state gives the same
output bit for bit.

Modules (only :func:`simulate` and :data:`STAGES` are public)
-------------------------------------------------------------
- :mod:`~pipeline.samples.detsim.config`    the ``detector`` config view and |eta|-knot interpolation
- :mod:`~pipeline.samples.detsim.sampling`  random variates (Crystal Ball, power law, ...)
- :mod:`~pipeline.samples.detsim.arrays`    flat arrays, per-event sums, same-event pairs, assembly
- :mod:`~pipeline.samples.detsim.jets`      jets, b-tag, qgl, jet ID, pileup jets
- :mod:`~pipeline.samples.detsim.muons`     muons, impact parameters, isolation, IDs, fakes
- :mod:`~pipeline.samples.detsim.met`       MET

The PDG tables, the mother-chain walk and the track geometry it shares with the generator and the
FlashSim conditions are in :mod:`pipeline.physics`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline import nanoaod
from pipeline.samples.detsim.arrays import _assemble, _flatten_inputs
from pipeline.samples.detsim.config import _Cfg
from pipeline.samples.detsim.jets import _jet_lepton_content, _pileup_jets, _simulate_jets  # noqa: F401 (tests)
from pipeline.samples.detsim.met import _met
from pipeline.samples.detsim.muons import _simulate_muons
from pipeline.samples.events import GeneratedEvents

__all__ = ["STAGES", "simulate"]

log = logging.getLogger(__name__)

STAGES = ("inputs", "jets", "pileup jets", "muons", "isolation", "met", "assemble")


def simulate(gen: GeneratedEvents, det_cfg: dict, rng: np.random.Generator, progress: bool = True) -> dict:
    """Run the reference detector simulation on one chunk of generated events.

    Parameters
    ----------
    gen
        The generator-level events (:class:`~pipeline.samples.events.GeneratedEvents`).
    det_cfg
        The ``detector`` block of the config (schema: ``workflow/schemas/detector.schema.yaml``).
    rng
        The only source of randomness: the same generator state gives the same output.
    progress
        Show a tqdm bar over the simulation stages.

    Returns
    -------
    dict
        ``{"Jet": ak.Array, "Muon": ak.Array, "MET_pt": np.ndarray, "MET_phi": np.ndarray}``:
        Jet and Muon are jagged records with exactly the fields and dtypes of
        :data:`pipeline.nanoaod.JET` / :data:`pipeline.nanoaod.MUON`, pT-ordered in each event;
        ``Jet.genJetIdx`` indexes ``gen.gen_jets`` and ``Muon.genPartIdx`` indexes
        ``gen.gen_part`` (-1: pileup jet / fake muon); MET float32.
    """
    from tqdm.auto import tqdm

    det = _Cfg(det_cfg)
    n_evt = len(gen)
    bar = tqdm(total=len(STAGES), desc="detsim", unit="stage", disable=not progress, leave=False)
    clock = {"t": time.perf_counter(), "stage": STAGES[0]}

    def stage(name: str) -> None:
        """Close the running stage (logged with its duration) and start ``name``."""
        now = time.perf_counter()
        log.debug("detsim: %s took %.3f s", clock["stage"], now - clock["t"])
        clock.update(t=now, stage=name)
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        parts, jets, genpart = _flatten_inputs(gen)
        n_pu = rng.poisson(det["pileup"].f("mean_interactions"), n_evt)
        stage("jets")
        real_jets = _simulate_jets(rng, jets, parts, n_pu, det)
        stage("pileup jets")
        pu_jets = _pileup_jets(rng, n_pu, real_jets, det)
        stage("muons")
        muons = _simulate_muons(rng, genpart, parts, n_pu, det, stage)
        stage("met")
        met_pt, met_phi = _met(rng, parts, jets, real_jets, pu_jets, muons, n_pu, det)
        stage("assemble")
        out = {
            "Jet": _assemble([real_jets, pu_jets], nanoaod.JET, n_evt),
            "Muon": _assemble([muons], nanoaod.MUON, n_evt),
            "MET_pt": met_pt.astype(np.float32),
            "MET_phi": met_phi.astype(np.float32),
        }
        stage("done")
    finally:
        bar.close()
    log.info(
        "detsim: %d events -> %d jets (%d pileup), %d muons (%d fake)",
        n_evt, len(real_jets["pt"]) + len(pu_jets["pt"]), len(pu_jets["pt"]),
        len(muons["pt"]), int(muons["_fake"].sum()),
    )
    return out
