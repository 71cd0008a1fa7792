"""Tests of the Pythia8 + FastJet generator (real Pythia8, a few dozen events per process).

Process settings come from config/config.yaml so that the tests follow the config.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from pipeline import nanoaod
from pipeline.config import load_yaml
from pipeline.samples.events import GeneratedEvents
from pipeline.samples.generator import GENJET_FIELDS, PARTICLE_FIELDS, generate

N_EVENTS = 60
SEED = 4242
BIT = nanoaod.STATUS_FLAG_BITS


@pytest.fixture(scope="module")
def gen_cfg(repo) -> dict:
    return load_yaml(repo / "config" / "config.yaml")["generation"]


@pytest.fixture(scope="module")
def samples(gen_cfg) -> dict[str, GeneratedEvents]:
    names = ("vbf_hmumu", "dy_mumu", "ttbar_dilep")
    return {n: generate(gen_cfg["processes"][n]["settings"], N_EVENTS, SEED, gen_cfg, progress=False) for n in names}


def _flag(gen_part: ak.Array, name: str) -> ak.Array:
    return (gen_part.statusFlags >> BIT[name]) & 1 == 1


def _setting(settings: list[str], key: str) -> float:
    for line in settings:
        name, value = (s.strip() for s in line.split("=", 1))
        if name == key:
            return float(value)
    raise KeyError(key)


def _four_vector(pt, eta, phi, m):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return px, py, pz, e


def _pair_mass(a, b) -> np.ndarray:
    pa = _four_vector(*(np.asarray(a[k], dtype=np.float64) for k in ("pt", "eta", "phi", "mass")))
    pb = _four_vector(*(np.asarray(b[k], dtype=np.float64) for k in ("pt", "eta", "phi", "mass")))
    px, py, pz, e = (x + y for x, y in zip(pa, pb, strict=True))
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))


def _assert_same(a: GeneratedEvents, b: GeneratedEvents) -> None:
    for name in ("particles", "gen_part", "gen_jets"):
        x, y = getattr(a, name), getattr(b, name)
        assert ak.all(ak.num(x) == ak.num(y)), name
        for field in x.fields:
            assert np.array_equal(ak.to_numpy(ak.flatten(x[field])), ak.to_numpy(ak.flatten(y[field]))), (name, field)
    for name in ("gen_met_pt", "gen_met_phi", "gen_weight"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.xsec_pb == b.xsec_pb


def test_same_seed_is_bit_identical_and_seeds_differ(gen_cfg):
    settings = gen_cfg["processes"]["dy_mumu"]["settings"]
    a = generate(settings, 15, 11, gen_cfg, progress=False)
    b = generate(settings, 15, 11, gen_cfg, progress=False)
    c = generate(settings, 15, 12, gen_cfg, progress=False)
    _assert_same(a, b)
    assert len(a) == len(c) == 15
    assert not np.array_equal(a.gen_met_pt, c.gen_met_pt)
    assert not ak.all(ak.num(a.particles) == ak.num(c.particles))


def test_batching_does_not_change_events(gen_cfg, monkeypatch):
    from pipeline.samples import generator

    settings = gen_cfg["processes"]["vbf_hmumu"]["settings"]
    a = generate(settings, 12, 5, gen_cfg, progress=False)
    monkeypatch.setattr(generator, "BATCH_EVENTS", 5)
    b = generate(settings, 12, 5, gen_cfg, progress=False)
    _assert_same(a, b)


def test_invalid_seed_rejected(gen_cfg):
    with pytest.raises(ValueError, match="seed"):
        generate(gen_cfg["processes"]["dy_mumu"]["settings"], 1, 0, gen_cfg, progress=False)


@pytest.mark.parametrize("process", ["vbf_hmumu", "dy_mumu", "ttbar_dilep"])
def test_fields_and_dtypes_follow_the_contract(samples, process):
    ev = samples[process]
    assert len(ev) == N_EVENTS
    for array, spec in ((ev.gen_part, nanoaod.GENPART), (ev.gen_jets, GENJET_FIELDS), (ev.particles, PARTICLE_FIELDS)):
        assert array.fields == list(spec)
        for field, dtype in spec.items():
            assert ak.to_numpy(ak.flatten(array[field])).dtype == np.dtype(dtype), field
    assert list(GENJET_FIELDS)[: len(nanoaod.GENJET)] == list(nanoaod.GENJET)
    for name in ("gen_met_pt", "gen_met_phi", "gen_weight"):
        values = getattr(ev, name)
        assert values.dtype == np.float32 and values.shape == (N_EVENTS,)
    assert np.all(ev.gen_weight == 1.0)


@pytest.mark.parametrize("process", ["vbf_hmumu", "dy_mumu", "ttbar_dilep"])
def test_genpart_indices_are_consistent(samples, process):
    ev = samples[process]
    gp, parts = ev.gen_part, ev.particles
    n = ak.num(gp)
    mother = gp.genPartIdxMother
    assert ak.all((mother >= -1) & (mother < n)) and ak.all(mother != ak.local_index(gp))
    # Stored final-state particles point back at a GenPart entry with the same pdgId and pT.
    stored = parts[parts.genPartIdx >= 0]
    target = gp[stored.genPartIdx]
    assert ak.all(target.pdgId == stored.pdgId)
    assert ak.all(target.status == 1)
    assert np.allclose(ak.flatten(target.pt), ak.flatten(np.hypot(stored.px, stored.py)), rtol=1e-6)
    # Every final-state muon above the GenPart threshold is stored.
    pt = np.hypot(parts.px, parts.py)
    muons = parts[(abs(parts.pdgId) == 13) & (pt > 1.0)]
    assert ak.all(muons.genPartIdx >= 0)


def test_vbf_higgs_decays_to_stored_muon_pair(samples, gen_cfg):
    gp = samples["vbf_hmumu"].gen_part
    m_h = _setting(gen_cfg["processes"]["vbf_hmumu"]["settings"], "25:m0")
    for event in range(N_EVENTS):
        g = gp[event]
        higgs = np.flatnonzero((ak.to_numpy(g.pdgId) == 25) & ak.to_numpy(_flag(g, "isLastCopy")))
        assert len(higgs) == 1, event
        first = np.flatnonzero((ak.to_numpy(g.pdgId) == 25) & ak.to_numpy(_flag(g, "isFirstCopy")))
        assert len(first) == 1 and g.status[first[0]] == 22 and _flag(g, "isHardProcess")[first[0]]
        assert g.genPartIdxMother[higgs[0]] == first[0]
        daughters = g[g.genPartIdxMother == higgs[0]]
        assert sorted(ak.to_list(daughters.pdgId)) == [-13, 13], event
        assert ak.all(_flag(daughters, "isHardProcess")) and ak.all(_flag(daughters, "isPrompt"))
        mass = _pair_mass(daughters[0:1], daughters[1:2])[0]
        assert mass == pytest.approx(g.mass[higgs[0]], rel=2e-3)
        assert abs(g.mass[higgs[0]] - m_h) < 1.0  # the width of a 125 GeV SM Higgs is 4 MeV
        # The final-state muons descend from the hard-process ones (possibly after FSR).
        final = g[(abs(g.pdgId) == 13) & (g.status == 1) & _flag(g, "fromHardProcess")]
        assert len(final) == 2


def test_dy_hard_muons_in_mass_window(samples, gen_cfg):
    settings = gen_cfg["processes"]["dy_mumu"]["settings"]
    m_min, m_max = _setting(settings, "23:mMin"), _setting(settings, "23:mMax")
    gp = samples["dy_mumu"].gen_part
    hard_mu = gp[(abs(gp.pdgId) == 13) & _flag(gp, "isHardProcess")]
    assert ak.all(ak.num(hard_mu) == 2)
    assert ak.all(ak.sum(hard_mu.pdgId, axis=1) == 0)
    mass = _pair_mass(hard_mu[:, 0], hard_mu[:, 1])
    assert np.all(mass > m_min - 0.05) and np.all(mass < m_max + 0.05)


def test_ttbar_has_b_jets_and_nonprompt_muons(samples):
    ev = samples["ttbar_dilep"]
    jets, gp = ev.gen_jets, ev.gen_part
    b_jets = jets.hadronFlavour == 5
    assert ak.mean(ak.any(b_jets, axis=1)) > 0.8
    # b-hadron jets carry b parton flavour in the large majority of cases.
    assert ak.mean(abs(jets.partonFlavour[b_jets]) == 5) > 0.7
    assert set(np.unique(ak.flatten(jets.hadronFlavour))) <= {0, 4, 5}
    # Muons from b/c hadron decays are in GenPart, non-prompt, with a heavy hadron as mother.
    mu = gp[(abs(gp.pdgId) == 13) & (gp.status == 1) & ~_flag(gp, "isPrompt")]
    assert ak.sum(ak.num(mu)) >= 3
    mothers = abs(ak.flatten(gp[mu.genPartIdxMother].pdgId))
    digits = np.stack([(mothers // 10**k) % 10 for k in (1, 2, 3)])
    assert np.mean(np.any((digits == 4) | (digits == 5), axis=0)) > 0.75  # else mostly taus from D_s
    # Two prompt muons from the W decays in every event.
    prompt = gp[(abs(gp.pdgId) == 13) & (gp.status == 1) & _flag(gp, "isPrompt") & _flag(gp, "fromHardProcess")]
    assert ak.all(ak.num(prompt) == 2)


@pytest.mark.parametrize("process", ["vbf_hmumu", "dy_mumu", "ttbar_dilep"])
def test_genjets_ordered_above_threshold_and_match_constituents(samples, gen_cfg, process):
    cfg = gen_cfg["genjets"]
    ev = samples[process]
    jets, parts = ev.gen_jets, ev.particles
    assert ak.all(jets.pt > cfg["pt_min_gev"]) and ak.all(abs(jets.eta) < cfg["abs_eta_max"])
    assert ak.all(jets.pt[:, 1:] <= jets.pt[:, :-1])
    assert ak.all((parts.genJetIdx >= -1) & (parts.genJetIdx < ak.num(jets)))
    neutrino = np.isin(abs(ak.to_numpy(ak.flatten(parts.pdgId))), [12, 14, 16])
    assert np.all(ak.to_numpy(ak.flatten(parts.genJetIdx))[neutrino] == -1)
    for event in range(N_EVENTS):
        p, j = parts[event], jets[event]
        idx = ak.to_numpy(p.genJetIdx)
        counts = np.bincount(idx[idx >= 0], minlength=len(j))
        assert np.array_equal(counts, ak.to_numpy(j.nConstituents))
        px = np.bincount(idx[idx >= 0], weights=ak.to_numpy(p.px)[idx >= 0], minlength=len(j))
        py = np.bincount(idx[idx >= 0], weights=ak.to_numpy(p.py)[idx >= 0], minlength=len(j))
        np.testing.assert_allclose(np.hypot(px, py), ak.to_numpy(j.pt), rtol=1e-6)
    # Constituent summaries are in their ranges.
    for field in ("chargedPtFraction", "photonPtFraction", "ptD"):
        values = ak.flatten(jets[field])
        assert ak.all((values >= 0) & (values <= 1 + 1e-6)), field
    assert ak.all(jets.nCharged <= jets.nConstituents) and ak.all(jets.axis2 >= 0)


@pytest.mark.parametrize("process", ["vbf_hmumu", "dy_mumu", "ttbar_dilep"])
def test_genmet_is_the_neutrino_sum(samples, process):
    ev = samples[process]
    parts = ev.particles
    absid = abs(parts.pdgId)
    nu = parts[(absid == 12) | (absid == 14) | (absid == 16)]
    met = np.hypot(ak.to_numpy(ak.sum(nu.px, axis=1)), ak.to_numpy(ak.sum(nu.py, axis=1)))
    np.testing.assert_allclose(ev.gen_met_pt, met, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("process", "low", "high"),
    [("vbf_hmumu", 1e-4, 1e-2), ("dy_mumu", 0.5, 200.0), ("ttbar_dilep", 1.0, 100.0)],
)
def test_cross_section_is_sane(samples, process, low, high):
    ev = samples[process]
    assert low < ev.xsec_pb < high
    assert 0 < ev.xsec_err_pb < ev.xsec_pb
