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
- GenJets: anti-kt (``genjets.r``) of all final-state particles but neutrinos (and the
  neutralino/gravitino), muons included as in CMS; pT > ``genjets.pt_min_gev``,
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import awkward as ak
import fastjet
import numpy as np
import pythia8mc
from tqdm import tqdm

from pipeline import nanoaod
from pipeline.samples.events import GeneratedEvents

MB_TO_PB = 1.0e9
PYTHIA_MAX_SEED = 900_000_000
BATCH_EVENTS = 100  # events per Pythia nextBatch call (progress granularity, memory)
GHOST_SCALE = 1.0e-18  # CMS ghost rescaling
ROOT_ETA_MAX = 22756.0  # ROOT's eta for pt == 0 is sign(pz) * (22756 + |pz|)

# Resonances of which GenPart keeps the first and the last copy (top, Z/gamma*, W, H).
RESONANCE_PDG_IDS = (6, 23, 24, 25)
NEUTRINO_PDG_IDS = (12, 14, 16)
# Excluded from gen jets and summed into GenMET: neutrinos and the lightest neutralino / gravitino.
INVISIBLE_PDG_IDS = (*NEUTRINO_PDG_IDS, 1000022, 1000039)
PARTON_PDG_IDS = (1, 2, 3, 4, 5, 21)

_BITS = nanoaod.STATUS_FLAG_BITS
_GENJET_EXTRA = {
    "nConstituents": np.int32,
    "nCharged": np.int32,
    "chargedPtFraction": np.float32,
    "photonPtFraction": np.float32,
    "ptD": np.float32,
    "axis2": np.float32,
}
GENJET_FIELDS = {**nanoaod.GENJET, **_GENJET_EXTRA}
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
# The event record of a batch, flattened to global indices


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


# --------------------------------------------------------------------------------------------
# Particle classification from pdgId


def _digits(absid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (absid // 1000) % 10, (absid // 100) % 10, (absid // 10) % 10


def _is_hadron(absid: np.ndarray) -> np.ndarray:
    _, _, q3 = _digits(absid)
    standard = absid < 1_000_000
    exotic_meson = (absid // 1_000_000 == 9) & (absid < 9_900_000)  # f0(500) = 9000221, ...
    return (absid > 100) & (q3 > 0) & (standard | exotic_meson) & (absid != 990)


def _heavy_flavour(pdg: np.ndarray) -> np.ndarray:
    """5 for b quarks and b-flavoured hadrons/diquarks, 4 for c (without b), 0 otherwise."""
    absid = np.abs(pdg)
    q1, q2, q3 = _digits(absid)
    diquark = (absid > 1000) & (absid < 10000) & (q3 == 0)
    composite = _is_hadron(absid) | diquark
    has = {f: (absid == f) | (composite & ((q1 == f) | (q2 == f) | (q3 == f))) for f in (5, 4)}
    return np.where(has[5], 5, np.where(has[4], 4, 0)).astype(np.int8)


# --------------------------------------------------------------------------------------------
# GenPart, particles and the inputs of the clustering


@dataclass
class _Truth:
    """Per-particle classification of a :class:`_Record` (arrays over all its particles)."""

    absid: np.ndarray
    hadron: np.ndarray
    hflav: np.ndarray  # 5, 4, 0: heavy flavour of quarks, diquarks and hadrons
    decayed: np.ndarray  # decayed by Pythia's particle decays (daughters with status 91-99)
    hard: np.ndarray  # Pythia status 21-29
    mother: np.ndarray  # effective mother (global index, -1 none)
    direct_mother: np.ndarray  # mother of the first copy
    first_copy: np.ndarray
    last_copy: np.ndarray
    flags: dict[str, np.ndarray]  # statusFlags bits by name
    cms_status: np.ndarray


def _classify(rec: _Record) -> _Truth:
    absid = np.abs(rec.id)
    abs_status = np.abs(rec.status)
    hadron = _is_hadron(absid)
    lepton = (absid >= 11) & (absid <= 16)
    hflav = _heavy_flavour(rec.id)
    daughter_status = np.abs(_at(rec.status, rec.daughter1, 0))
    decayed = (rec.status < 0) & (daughter_status >= 91) & (daughter_status <= 99)
    hard = (abs_status >= 21) & (abs_status <= 29)
    mother = _effective_mother(rec, hadron, hflav)

    # Copies: same pdgId as the mother; hard-process particles start a new chain.
    prev_copy = np.where((mother >= 0) & (_at(rec.id, mother, 0) == rec.id) & ~hard, mother, -1)
    first_copy = prev_copy < 0
    root = _nearest(prev_copy, first_copy)
    last_copy = ~_is_pointed_at(prev_copy, len(rec))
    fsr_next = _is_pointed_at(np.where(abs_status == 51, prev_copy, -1), len(rec))
    last_before_fsr = _earliest_in_chain(fsr_next | last_copy, root)

    from_hard = hard[root]
    direct_mother = mother[root]
    decayer = decayed & (hadron | (absid == 13) | (absid == 15))
    prompt = _at(_nearest(mother, decayer), mother, -1) < 0
    tau = decayed & (absid == 15)
    tau_anc = _at(_nearest(mother, tau), mother, -1)
    tau_product = tau_anc >= 0
    direct_tau = _at(tau, direct_mother, False)
    decayed_hl = decayed & (hadron | lepton)
    flags = {
        "isPrompt": prompt,
        "isDecayedLeptonHadron": decayed_hl,
        "isTauDecayProduct": tau_product,
        "isPromptTauDecayProduct": tau_product & _at(prompt, tau_anc, False),
        "isDirectTauDecayProduct": direct_tau,
        "isDirectPromptTauDecayProduct": direct_tau & _at(prompt, direct_mother, False),
        "isDirectHadronDecayProduct": _at(decayed & hadron, direct_mother, False),
        "isHardProcess": hard,
        "fromHardProcess": from_hard,
        "isHardProcessTauDecayProduct": tau_product & _at(from_hard, tau_anc, False),
        "isDirectHardProcessTauDecayProduct": direct_tau & _at(from_hard, direct_mother, False),
        "fromHardProcessBeforeFSR": from_hard & last_before_fsr,
        "isFirstCopy": first_copy,
        "isLastCopy": last_copy,
        "isLastCopyBeforeFSR": last_before_fsr,
    }
    cms_status = np.where(rec.status > 0, 1, np.where(rec.status == -12, 4, np.where(decayed_hl, 2, abs_status)))
    return _Truth(absid, hadron, hflav, decayed, hard, mother, direct_mother, first_copy, last_copy, flags, cms_status)


def _effective_mother(rec: _Record, hadron: np.ndarray, hflav: np.ndarray) -> np.ndarray:
    """First mother, but the string end with the heavy quark for heavy hadrons from a string
    (Pythia lists the whole string, mother1..mother2, as their mothers)."""
    abs_status = np.abs(rec.status)
    from_string = hadron & (hflav > 0) & (abs_status >= 81) & (abs_status <= 89)
    flav1 = _heavy_flavour(_at(rec.id, rec.mother1, 0))
    flav2 = _heavy_flavour(_at(rec.id, rec.mother2, 0))
    use2 = from_string & (flav1 != hflav) & (flav2 == hflav) & (rec.mother2 >= 0)
    return np.where(use2, rec.mother2, rec.mother1)


def _is_pointed_at(pointer: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` particles some entry of ``pointer`` (-1: none) points at."""
    out = np.zeros(n, dtype=bool)
    out[pointer[pointer >= 0]] = True
    return out


def _earliest_in_chain(candidate: np.ndarray, root: np.ndarray) -> np.ndarray:
    """The candidate with the lowest index among the candidates sharing a copy-chain root."""
    idx = np.arange(len(root))
    earliest = np.full(len(root), np.iinfo(np.int64).max)
    np.minimum.at(earliest, root[candidate], idx[candidate])
    return candidate & (earliest[root] == idx)


def _genpart_mask(rec: _Record, t: _Truth, lepton_pt_min: float) -> np.ndarray:
    """Which particles GenPart keeps (see the module docstring)."""
    final = rec.status > 0
    above = rec.pt > lepton_pt_min
    charged_lepton = final & ((t.absid == 11) | (t.absid == 13)) & above
    prompt_like = t.flags["isPrompt"] | t.flags["isPromptTauDecayProduct"]
    neutrino = final & np.isin(t.absid, NEUTRINO_PDG_IDS) & above & prompt_like
    keep = (
        t.hard
        | (np.isin(t.absid, RESONANCE_PDG_IDS) & (t.first_copy | t.last_copy))
        | charged_lepton
        | neutrino
        | (t.decayed & (t.absid == 15) & t.last_copy & above)
        | (t.decayed & t.hadron & (t.hflav > 0))
    )
    # The decayed hadron (or tau) a stored lepton comes from directly.
    lepton_mother = t.direct_mother[charged_lepton | neutrino]
    lepton_mother = lepton_mother[lepton_mother >= 0]
    keep[lepton_mother[t.decayed[lepton_mother]]] = True
    return keep


def _genpart(rec: _Record, t: _Truth, keep: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """GenPart fields of the kept particles and every particle's position in GenPart (-1)."""
    g = np.flatnonzero(keep)
    position = np.full(len(rec), -1, dtype=np.int64)
    position[g] = _rank_in_event(rec.event[g], rec.n_events)
    stored_mother = _at(_nearest(t.mother, keep), t.mother, -1)
    status_flags = np.zeros(len(g), dtype=np.int32)
    for name, value in t.flags.items():
        status_flags |= value[g].astype(np.int32) << _BITS[name]
    fields = {
        "pt": rec.pt[g],
        "eta": _eta(rec.px[g], rec.py[g], rec.pz[g]),
        "phi": np.arctan2(rec.py[g], rec.px[g]),
        "mass": rec.m[g],
        "pdgId": rec.id[g],
        "status": t.cms_status[g],
        "statusFlags": status_flags,
        "genPartIdxMother": _at(position, stored_mother[g], -1),
    }
    return {k: v.astype(nanoaod.GENPART[k]) for k, v in fields.items()}, position


def _ghost_candidates(rec: _Record, t: _Truth) -> dict[str, np.ndarray]:
    """Last B and C hadrons (no daughter of the same flavour), partons without parton daughters."""
    heavy_hadron = t.hadron & (t.hflav > 0)
    nonzero_pt = rec.pt > 0
    out = {}
    for name, f in (("b_hadrons", 5), ("c_hadrons", 4)):
        same_flavour_daughter = _is_pointed_at(np.where(heavy_hadron & (t.hflav == f), rec.mother1, -1), len(rec))
        out[name] = np.flatnonzero(heavy_hadron & (t.hflav == f) & ~same_flavour_daughter & nonzero_pt)
    parton = np.isin(t.absid, PARTON_PDG_IDS)
    parton_daughter = _is_pointed_at(np.where(parton, rec.mother1, -1), len(rec))
    parton_daughter |= _is_pointed_at(np.where(parton, rec.mother2, -1), len(rec))
    out["partons"] = np.flatnonzero(parton & ~parton_daughter & nonzero_pt)
    return out


def _process_record(
    rec: _Record,
    charge_of: Callable[[np.ndarray], np.ndarray],
    lepton_pt_min: float,
) -> dict:
    """GenPart, final-state particles, GenMET and the clustering inputs of one batch."""
    t = _classify(rec)
    keep = _genpart_mask(rec, t, lepton_pt_min)
    gen_part, position = _genpart(rec, t, keep)

    fin = np.flatnonzero(rec.status > 0)
    invisible = np.isin(t.absid[fin], INVISIBLE_PDG_IDS)
    charge = charge_of(rec.id[fin])
    particles = {
        "px": rec.px[fin],
        "py": rec.py[fin],
        "pz": rec.pz[fin],
        "E": rec.e[fin],
        "pdgId": rec.id[fin].astype(np.int32),
        "charge": charge,
        "genPartIdx": position[fin].astype(np.int32),
    }
    nu = fin[invisible]
    met_px = np.bincount(rec.event[nu], weights=rec.px[nu], minlength=rec.n_events)
    met_py = np.bincount(rec.event[nu], weights=rec.py[nu], minlength=rec.n_events)
    clustering = {
        "visible": fin[~invisible],
        "visible_charge": charge[~invisible],
        "final_index": fin,
        **_ghost_candidates(rec, t),
    }
    return {
        "particles": particles,
        "particle_counts": np.bincount(rec.event[fin], minlength=rec.n_events),
        "gen_part": gen_part,
        "gen_part_counts": np.bincount(rec.event[keep], minlength=rec.n_events),
        "met": {"pt": np.hypot(met_px, met_py), "phi": np.arctan2(met_py, met_px)},
        "_clustering": clustering,
    }


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


# --------------------------------------------------------------------------------------------
# Gen jets


def _cluster(rec: _Record, inputs: dict[str, np.ndarray], jetdef, jets_cfg: Mapping) -> tuple[dict, np.ndarray]:
    """anti-kt gen jets with ghost flavour; returns (jet fields + counts, genJetIdx of particles)."""
    pt_min = float(jets_cfg["pt_min_gev"])
    eta_max = float(jets_cfg["abs_eta_max"])
    groups = [inputs["visible"], inputs["b_hadrons"], inputs["c_hadrons"], inputs["partons"]]
    src = np.concatenate(groups)
    kind = np.concatenate([np.full(len(x), k, dtype=np.int8) for k, x in enumerate(groups)])
    charge = np.concatenate([inputs["visible_charge"], np.zeros(len(src) - len(groups[0]), np.float32)])
    order = np.argsort(rec.event[src], kind="stable")  # per event: visible first, then ghosts
    src, kind, charge = src[order], kind[order], charge[order]
    scale = np.where(kind == 0, 1.0, GHOST_SCALE)
    in_counts = np.bincount(rec.event[src], minlength=rec.n_events)
    in_offsets = np.cumsum(in_counts) - in_counts

    momenta = ak.zip(
        {"px": rec.px[src] * scale, "py": rec.py[src] * scale, "pz": rec.pz[src] * scale, "E": rec.e[src] * scale}
    )
    sequence = fastjet.ClusterSequence(ak.unflatten(momenta, in_counts), jetdef)
    jets = sequence.inclusive_jets(min_pt=pt_min)
    constituents = sequence.constituent_index(min_pt=pt_min)

    n_jets = ak.to_numpy(ak.num(jets)).astype(np.int64)
    flat_jets = ak.flatten(jets)
    jpx, jpy, jpz, je = (ak.to_numpy(flat_jets[k]).astype(np.float64) for k in ("px", "py", "pz", "E"))
    jet_event = np.repeat(np.arange(rec.n_events), n_jets)
    jpt = np.hypot(jpx, jpy)
    jeta = _eta(jpx, jpy, jpz)
    jphi = np.arctan2(jpy, jpx)
    jmass = np.sqrt(np.maximum(je**2 - jpx**2 - jpy**2 - jpz**2, 0.0))

    # Selection and pT ordering: slot = position in the flattened output.
    selected = np.flatnonzero((jpt > pt_min) & (np.abs(jeta) < eta_max))
    selected = selected[np.lexsort((-jpt[selected], jet_event[selected]))]
    slot = np.full(len(jpt), -1, dtype=np.int64)
    slot[selected] = np.arange(len(selected))
    out_event = jet_event[selected]
    out_counts = np.bincount(out_event, minlength=rec.n_events)
    out_index = _rank_in_event(out_event, rec.n_events)
    n_out = len(selected)

    per_jet = ak.num(constituents, axis=2)
    n_const = ak.to_numpy(ak.flatten(per_jet)).astype(np.int64)
    if len(n_const) != len(jpt):  # inclusive_jets and constituent_index list the same jets
        raise RuntimeError("FastJet jets and constituent lists disagree")
    local = ak.to_numpy(ak.flatten(constituents, axis=None)).astype(np.int64)
    c_jet = np.repeat(np.arange(len(jpt)), n_const)
    c_input = in_offsets[jet_event[c_jet]] + local
    c_slot = slot[c_jet]
    ok = c_slot >= 0
    c_input, c_slot = c_input[ok], c_slot[ok]
    c_kind, c_src = kind[c_input], src[c_input]

    # Particles' genJetIdx.
    final_index = inputs["final_index"]
    final_position = np.full(len(rec), -1, dtype=np.int64)
    final_position[final_index] = np.arange(len(final_index))
    particle_jet = np.full(len(final_index), -1, dtype=np.int32)
    real = c_kind == 0
    particle_jet[final_position[c_src[real]]] = out_index[c_slot[real]]

    summaries = _constituent_summaries(
        rec, c_src[real], charge[c_input[real]], c_slot[real], jeta[selected], jphi[selected], n_out
    )
    hadron_flavour = np.zeros(n_out, dtype=np.int32)
    hadron_flavour[np.isin(np.arange(n_out), c_slot[c_kind == 2])] = 4
    hadron_flavour[np.isin(np.arange(n_out), c_slot[c_kind == 1])] = 5
    parton_flavour = _parton_flavour(rec, c_src[c_kind == 3], c_slot[c_kind == 3], n_out)

    fields = {
        "pt": jpt[selected],
        "eta": jeta[selected],
        "phi": jphi[selected],
        "mass": jmass[selected],
        "partonFlavour": parton_flavour,
        "hadronFlavour": hadron_flavour,
        **summaries,
    }
    fields = {k: v.astype(GENJET_FIELDS[k]) for k, v in fields.items()}
    return {"fields": fields, "counts": out_counts}, particle_jet


def _constituent_summaries(
    rec: _Record,
    src: np.ndarray,
    charge: np.ndarray,
    slot: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    n_jets: int,
) -> dict[str, np.ndarray]:
    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(slot, weights=weights, minlength=n_jets)

    pt = rec.pt[src]
    w = pt**2
    deta = _eta(rec.px[src], rec.py[src], rec.pz[src]) - jet_eta[slot]
    dphi = np.mod(np.arctan2(rec.py[src], rec.px[src]) - jet_phi[slot] + np.pi, 2 * np.pi) - np.pi
    sum_pt, sum_w = total(pt), total(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_pt = np.where(sum_pt > 0, sum_pt, 1.0)
        safe_w = np.where(sum_w > 0, sum_w, 1.0)
        mean_eta, mean_phi = total(deta * w) / safe_w, total(dphi * w) / safe_w
        a = total(deta**2 * w) / safe_w - mean_eta**2
        b = total(dphi**2 * w) / safe_w - mean_phi**2
        c = -(total(deta * dphi * w) / safe_w - mean_eta * mean_phi)
    delta = np.sqrt(np.abs((a - b) ** 2 + 4 * c**2))
    minor = a + b - delta
    return {
        "nConstituents": total().astype(np.int64),
        "nCharged": total((charge != 0).astype(np.float64)).astype(np.int64),
        "chargedPtFraction": total(pt * (charge != 0)) / safe_pt,
        "photonPtFraction": total(pt * (rec.id[src] == 22)) / safe_pt,
        "ptD": np.where(sum_pt > 0, np.sqrt(sum_w) / safe_pt, 0.0),
        "axis2": np.where(minor > 0, np.sqrt(0.5 * np.maximum(minor, 0.0)), 0.0),
    }


def _parton_flavour(rec: _Record, src: np.ndarray, slot: np.ndarray, n_jets: int) -> np.ndarray:
    """CMS: pdgId of the hardest b parton ghost, else the hardest c, else the hardest parton."""
    flavour = np.zeros(n_jets, dtype=np.int32)
    absid = np.abs(rec.id[src])
    for sel in (np.ones(len(src), dtype=bool), absid == 4, absid == 5):  # later ones take priority
        best = _hardest(slot[sel], rec.pt[src[sel]], n_jets)
        has = best >= 0
        flavour[has] = rec.id[src[sel][best[has]]]
    return flavour


def _hardest(slot: np.ndarray, pt: np.ndarray, n_slots: int) -> np.ndarray:
    """Index (into ``slot``) of the highest-pT entry of each slot, -1 for slots without any."""
    best = np.full(n_slots, -1, dtype=np.int64)
    if len(slot) == 0:
        return best
    order = np.lexsort((-pt, slot))
    s = slot[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    best[s[first]] = order[first]
    return best


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
