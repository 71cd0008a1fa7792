"""Pythia8 event generation with FastJet gen jets: the generator level of the built-in samples.

:func:`generate` runs Pythia8 (``pythia8mc``) for one process of ``generation.processes`` and
returns a :class:`~pipeline.samples.events.GeneratedEvents` chunk: the stable final-state
particles, a CMS-NanoAOD-style pruned ``GenPart``, anti-kt ``GenJet`` with ghost-associated
flavour and constituent summaries, ``GenMET`` and the process cross-section.

Speed: events come from ``Pythia.nextBatch``, which hands over the whole event record of a batch
as one awkward array, so there is no Python work per particle. Everything after that (ancestry,
copies, status flags, pruning, clustering, flavour) is vectorised over all particles of a batch,
in global indices (event offset + Pythia index). "Nearest ancestor with property X" is pointer
jumping: ``p[i] = i`` where X holds, the mother elsewhere, then ``p = p[p]`` until it stops
changing (log2 of the chain depth iterations).

Conventions (as in CMS NanoAOD where CMS has one):

- ``GenPart_status``: 1 final state; 2 decayed hadron or lepton (daughters with Pythia status
  91-99); 4 beam; otherwise ``|Pythia status|`` (21-29 hard process, 44 ISR recoil copy, 62 last
  copy before hadronisation/decay, 71 string-end parton...). This is Pythia's ``statusHepMC``.
- Copies: a particle's previous copy is its first mother if that has the same pdgId (Pythia
  ``iTopCopyId``-like, so FSR emitters count as copies, as in CMS). A hard-process particle
  (Pythia status 21-29) starts a new chain: the incoming hard partons are not copies of the ISR
  partons before them.
- Mothers: the first mother, except for heavy-flavour hadrons made in hadronisation, whose
  mother is the string end carrying their heavy quark (Pythia lists the whole string as mothers).
  ``genPartIdxMother`` is the nearest ancestor stored in ``GenPart`` (-1 if none).
- ``statusFlags``: the bits of :data:`pipeline.nanoaod.STATUS_FLAG_BITS`. isPrompt: no decayed
  hadron, tau or muon among the ancestors. isHardProcess: Pythia status 21-29. fromHardProcess:
  the first copy is a hard-process particle. Direct decay products: the mother of the first copy
  is a decayed hadron (tau). isLastCopyBeforeFSR: the earliest copy of a chain whose next copy
  comes from an FSR branching (Pythia status 51), or the last copy if it never radiates.
- GenPart keeps: hard-process particles (incoming partons, resonances, outgoing partons and
  resonance-decay products); first and last copies of W, Z/gamma*, H, top
  (:data:`RESONANCE_PDG_IDS`); final-state electrons and muons above
  ``genpart.lepton_pt_min_gev`` (including non-prompt ones from b/c hadron decays); prompt and
  prompt-tau-decay neutrinos and last-copy taus above the same threshold; every decayed B and C
  hadron; and the decayed hadron a stored lepton comes from directly.
- Kinematics of ``pt == 0`` particles (incoming partons): ``eta = sign(pz) (22756 + |pz|)``,
  ROOT's convention, which real CMS NanoAOD shows.
- GenJets: anti-kt (``genjets.r``) of all final-state particles but the invisible ones
  (:data:`pipeline.physics.pdg.INVISIBLE_PDG_IDS`: neutrinos, sneutrino, neutralino, gravitino),
  muons included as in CMS; pT > ``genjets.pt_min_gev``,
  |eta| < ``genjets.abs_eta_max``, pT-ordered. With ``hadronisation: false`` they are parton
  jets and hadronFlavour is always 0.
- GenJet flavour by ghost association (CMS ``JetFlavourClustering``): ghosts (momentum times
  1e-18) of the last B and C hadrons (no B, resp. C, hadron among their daughters) and of the
  partons after the shower (quarks 1-5 and gluons without parton daughters) are clustered with
  the visible particles. hadronFlavour = 5 if a B ghost is in the jet, else 4 if a C ghost, else
  0; partonFlavour = pdgId of the hardest b parton ghost, else hardest c, else hardest parton,
  0 if none (no hadron-flavour priority, the CMS default).
- Constituent summaries (real constituents only): ``chargedPtFraction`` and
  ``photonPtFraction`` are fractions of the scalar pT sum of the constituents; ``ptD`` and
  ``axis2`` as in the CMS quark-gluon likelihood (pT^2 weights, eta-phi w.r.t. the jet axis).

Modules (only :func:`generate`, :data:`GENJET_FIELDS` and :data:`PARTICLE_FIELDS` are public):
this one drives Pythia and assembles the chunk; :mod:`~pipeline.samples.generator.record` holds
the flat event record and its pointer helpers, :mod:`~pipeline.samples.generator.truth` the
classification, status flags and GenPart pruning, :mod:`~pipeline.samples.generator.genjets` the
clustering and jet flavour. The PDG sets (neutrinos, invisible particles) are in
:mod:`pipeline.physics.pdg`.
"""

from __future__ import annotations
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import awkward as ak
import fastjet
import numpy as np
import pythia8mc
from tqdm import tqdm

from pipeline import nanoaod
from pipeline.samples.events import GeneratedEvents
from pipeline.samples.generator.genjets import GENJET_FIELDS, _cluster
from pipeline.samples.generator.record import _Record
from pipeline.samples.generator.truth import _process_record

__all__ = ["GENJET_FIELDS", "PARTICLE_FIELDS", "generate"]

MB_TO_PB = 1.0e9
PYTHIA_MAX_SEED = 900_000_000
BATCH_EVENTS = 100  # events per Pythia nextBatch call (progress granularity, memory)

PARTICLE_FIELDS = {
    "px": np.float64,
    "py": np.float64,
    "pz": np.float64,
    "E": np.float64,
    "pdgId": np.int32,
    "charge": np.float32,
    "genPartIdx": np.int32,
    "genJetIdx": np.int32,
}


def generate(
    settings: list[str],
    n_events: int,
    seed: int,
    gen_cfg: dict,
    progress: bool = True,
) -> GeneratedEvents:
    """Generate ``n_events`` events of one process with Pythia8 and cluster their gen jets.

    Parameters
    ----------
    settings
        Pythia8 setting strings of the process (``generation.processes.<name>.settings``); they
        are read after the generation-wide ones and may override them.
    n_events
        Number of events (>= 0).
    seed
        Pythia8 random seed in ``[1, 900000000]`` (see :func:`pipeline.seeds.int_seed`). The same
        seed gives bit-identical outputs.
    gen_cfg
        The ``generation`` block of the config (sqrt_s_gev, mpi, hadronisation, genjets, genpart).
    progress
        Show a tqdm bar over events (on stderr, i.e. in the rule log).

    ``extra`` of the result holds the seed and the time spent in Pythia, in the record
    processing and in the clustering (``timing_s``).
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if not 1 <= int(seed) <= PYTHIA_MAX_SEED:
        raise ValueError(f"Pythia8 seed must be in [1, {PYTHIA_MAX_SEED}], got {seed}")
    pythia = _make_pythia(settings, int(seed), gen_cfg)
    charge_of = _charge_lookup(pythia)
    jets_cfg = gen_cfg["genjets"]
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, float(jets_cfg["r"]))
    lepton_pt_min = float(gen_cfg["genpart"]["lepton_pt_min_gev"])

    timing = {"pythia": 0.0, "record": 0.0, "clustering": 0.0}
    batches: list[dict[str, dict[str, np.ndarray]]] = []
    done = 0
    empty_calls = 0
    with tqdm(total=n_events, disable=not progress, unit="evt", desc="pythia8", mininterval=2.0) as bar:
        while done < n_events:
            t0 = time.perf_counter()
            raw = pythia.nextBatch(min(BATCH_EVENTS, n_events - done))
            t1 = time.perf_counter()
            n = len(raw)
            if n == 0:
                empty_calls += 1
                if empty_calls > 10:
                    raise RuntimeError("Pythia8 nextBatch keeps returning no events (generation fails)")
                continue
            record = _Record.from_batch(raw)
            del raw
            out = _process_record(record, charge_of, lepton_pt_min)
            t2 = time.perf_counter()
            jets, particle_jet = _cluster(record, out.pop("_clustering"), jetdef, jets_cfg)
            out["particles"]["genJetIdx"] = particle_jet
            out["gen_jets"] = jets
            t3 = time.perf_counter()
            timing["pythia"] += t1 - t0
            timing["record"] += t2 - t1
            timing["clustering"] += t3 - t2
            batches.append(out)
            done += n
            bar.update(n)

    info = pythia.infoPython()
    xsec_pb = float(info.sigmaGen()) * MB_TO_PB
    xsec_err_pb = float(info.sigmaErr()) * MB_TO_PB
    return _assemble(batches, xsec_pb, xsec_err_pb, extra={"seed": int(seed), "timing_s": timing})


# --------------------------------------------------------------------------------------------
# Pythia set-up


def _make_pythia(settings: Sequence[str], seed: int, gen_cfg: Mapping) -> pythia8mc.Pythia:
    pythia = pythia8mc.Pythia("", False)
    on_off = {True: "on", False: "off"}
    lines = [
        f"Beams:eCM = {float(gen_cfg['sqrt_s_gev'])}",
        f"PartonLevel:MPI = {on_off[bool(gen_cfg['mpi'])]}",
        f"HadronLevel:all = {on_off[bool(gen_cfg['hadronisation'])]}",
        *settings,
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Print:quiet = on",
        "Next:numberCount = 0",
    ]
    for line in lines:
        if not pythia.readString(line):
            raise ValueError(f"Pythia8 rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia8 initialisation failed for settings {list(settings)}")
    return pythia


def _charge_lookup(pythia: pythia8mc.Pythia) -> Callable[[np.ndarray], np.ndarray]:
    """A vectorised pdgId -> charge [e] map, filled lazily from Pythia's particle data."""
    cache: dict[int, float] = {}
    data = pythia.particleData

    def charge_of(pdg: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(pdg, return_inverse=True)
        values = np.empty(len(uniq), dtype=np.float32)
        for k, code in enumerate(uniq.tolist()):
            if code not in cache:
                cache[code] = float(data.charge(code))
            values[k] = cache[code]
        return values[inverse]

    return charge_of


# --------------------------------------------------------------------------------------------
# Assembly


def _jagged(fields: Mapping[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    content = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in fields.values()],
        list(fields),
        length=int(offsets[-1]),
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content))


def _concat(parts: list[dict[str, np.ndarray]], dtypes: Mapping[str, type]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts] or [np.zeros(0)]).astype(t) for k, t in dtypes.items()}


def _counts(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts or [np.zeros(0, dtype=np.int64)]).astype(np.int64)


def _assemble(batches: list[dict], xsec_pb: float, xsec_err_pb: float, extra: dict) -> GeneratedEvents:
    particles = _jagged(
        _concat([b["particles"] for b in batches], PARTICLE_FIELDS), _counts([b["particle_counts"] for b in batches])
    )
    gen_part = _jagged(
        _concat([b["gen_part"] for b in batches], nanoaod.GENPART), _counts([b["gen_part_counts"] for b in batches])
    )
    gen_jets = _jagged(
        _concat([b["gen_jets"]["fields"] for b in batches], GENJET_FIELDS),
        _counts([b["gen_jets"]["counts"] for b in batches]),
    )
    met = _concat([b["met"] for b in batches], {"pt": np.float32, "phi": np.float32})
    return GeneratedEvents(
        particles=particles,
        gen_part=gen_part,
        gen_jets=gen_jets,
        gen_met_pt=met["pt"],
        gen_met_phi=met["phi"],
        gen_weight=np.ones(len(met["pt"]), dtype=np.float32),
        xsec_pb=xsec_pb,
        xsec_err_pb=xsec_err_pb,
        extra=extra,
    )
