"""Tests of the reference detector simulation (pipeline.samples.detsim).

Most tests run on synthetic generator-level events built here (``synthetic_events``): gen jets of
known flavour with constituent particles around their axes, an underlying event, prompt muon
pairs (from a Z) and non-prompt muons from semileptonic B-hadron decays inside b jets, with the
GenPart mother chain the detector simulation walks. They measure the physics the flows must
learn: jet response and resolution versus pT and eta, b-tag separation, isolation and impact
parameters of prompt versus non-prompt muons, efficiencies, matching, fakes and reproducibility.
An integration test runs on real Pythia8 events where the generator is available.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

from pipeline import nanoaod
from pipeline.samples import detsim
from pipeline.samples.events import GeneratedEvents

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "detector.schema.yaml"
ISPROMPT = 1 << nanoaod.STATUS_FLAG_BITS["isPrompt"]
LASTCOPY = 1 << nanoaod.STATUS_FLAG_BITS["isLastCopy"]
HADRON_DECAY = 1 << nanoaod.STATUS_FLAG_BITS["isDirectHadronDecayProduct"]


# ---------------------------------------------------------------------------------------------
# synthetic generator-level events
# ---------------------------------------------------------------------------------------------
def _unflatten_sorted(evt: np.ndarray, n_events: int, cols: dict, order: np.ndarray) -> ak.Array:
    counts = np.bincount(evt, minlength=n_events)
    return ak.zip({k: ak.unflatten(v[order], counts) for k, v in cols.items()})


def _local_index(evt_sorted: np.ndarray) -> np.ndarray:
    """Index within its event of each entry of an event-sorted array."""
    counts = np.bincount(evt_sorted)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(evt_sorted)) - starts[evt_sorted]


def synthetic_events(
    n_events: int, seed: int = 1, semileptonic_fraction: float = 0.3, muon_pt_range: tuple = (15.0, 120.0)
) -> GeneratedEvents:
    """Realistic-enough generator-level events, built vectorised (no Pythia needed).

    Per event: 1 + Poisson(4) gen jets (|eta| < 5, pT log-uniform in [10, 600] GeV with E < 3 TeV; 20 % b, 10 % c,
    the rest gluon / light quark / unknown) with CMS-like ptD, axis2 and multiplicities and their
    constituent particles; in 80 % of events a prompt Z -> mu mu pair (muon pT uniform in
    ``muon_pt_range``, |eta| < 2.6); in a fraction of the b jets
    a semileptonic B0 -> mu nu X decay (GenPart B0 -> mu, the muon among the jet's constituents
    and a neutrino near the jet axis); one recoil jet (|eta| < 2.5) that balances the event, so
    that the visible transverse momentum is minus that of the neutrinos; ~60 soft
    underlying-event particles in back-to-back pairs.
    """
    rng = np.random.default_rng(seed)
    n = n_events

    # --- Z -> mu mu
    ze = np.flatnonzero(rng.random(n) < 0.8)
    nz = len(ze)
    z_pt_mu = rng.uniform(*muon_pt_range, (nz, 2))
    z_eta_mu = rng.uniform(-2.6, 2.6, (nz, 2))
    z_phi_mu = rng.uniform(-np.pi, np.pi, (nz, 2))
    zpx = (z_pt_mu * np.cos(z_phi_mu)).sum(1)
    zpy = (z_pt_mu * np.sin(z_phi_mu)).sum(1)
    zpz = (z_pt_mu * np.sinh(z_eta_mu)).sum(1)
    zpt = np.hypot(zpx, zpy)

    # --- hard jets with flavour; semileptonic b decays carry a muon and a neutrino
    nj = 1 + rng.poisson(4.0, n)
    je = np.repeat(np.arange(n), nj)
    m = len(je)
    eta = rng.uniform(-5.0, 5.0, m)
    pt = np.exp(rng.uniform(np.log(10.0), np.log(np.clip(3000.0 / np.cosh(eta), 12.0, 600.0)), m))  # E < 3 TeV
    phi = rng.uniform(-np.pi, np.pi, m)
    u = rng.random(m)
    hadron = np.where(u < 0.2, 5, np.where(u < 0.3, 4, 0))
    semilep = (hadron == 5) & (rng.random(m) < semileptonic_fraction)
    nu_pt = np.where(semilep, pt * rng.uniform(0.05, 0.2, m), 0.0)
    nu_eta = eta + 0.1 * rng.standard_normal(m)
    nu_phi = phi + 0.1 * rng.standard_normal(m)

    # --- recoil jet balancing jets + neutrinos + Z
    sx = np.bincount(je, pt * np.cos(phi) + nu_pt * np.cos(nu_phi), n)
    sy = np.bincount(je, pt * np.sin(phi) + nu_pt * np.sin(nu_phi), n)
    sx[ze] += zpx
    sy[ze] += zpy
    je = np.concatenate([je, np.arange(n)])
    pt = np.concatenate([pt, np.hypot(sx, sy)])
    eta = np.concatenate([eta, rng.uniform(-2.5, 2.5, n)])
    phi = np.concatenate([phi, np.arctan2(-sy, -sx)])
    hadron = np.concatenate([hadron, np.zeros(n, dtype=hadron.dtype)])
    semilep = np.concatenate([semilep, np.zeros(n, dtype=bool)])
    nu_pt, nu_eta, nu_phi = (np.concatenate([a, np.zeros(n)]) for a in (nu_pt, nu_eta, nu_phi))

    # --- pT-order the jets per event; features
    order = np.lexsort((-pt, je))
    je, pt, eta, phi, hadron, semilep, nu_pt, nu_eta, nu_phi = (
        a[order] for a in (je, pt, eta, phi, hadron, semilep, nu_pt, nu_eta, nu_phi))
    m = len(je)
    jet_local = _local_index(je)
    v = rng.random(m)
    parton = np.where(hadron > 0, hadron, np.where(v < 0.5, 21, np.where(v < 0.95, rng.integers(1, 4, m), 0)))
    parton = np.where(parton == 21, 21, parton * np.where(rng.random(m) < 0.5, 1, -1))  # quark or antiquark
    gluon = np.abs(parton) == 21
    lpt = np.log(np.maximum(pt, 1.0) / 30.0)
    ptd = np.clip(np.where(gluon, rng.normal(0.36, 0.10, m), rng.normal(0.52, 0.12, m)), 0.05, 1.0)
    axis2 = np.exp(np.where(gluon, rng.normal(-2.7, 0.35, m), rng.normal(-3.3, 0.4, m)) - 0.3 * lpt)
    nconst = np.maximum(2, rng.poisson(np.where(gluon, 18 + 7 * lpt, 11 + 4 * lpt).clip(3)))
    nch = rng.binomial(nconst, 0.6)
    chf = rng.beta(6, 4, m)
    phf = (1 - chf) * rng.beta(5, 3, m)
    mass = pt * rng.uniform(0.05, 0.2, m)
    sl = np.flatnonzero(semilep)
    ns = len(sl)
    mu_pt = pt[sl] * rng.uniform(0.05, 0.3, ns)
    mu_eta = eta[sl] + 0.05 * rng.standard_normal(ns)
    mu_phi = phi[sl] + 0.05 * rng.standard_normal(ns)

    # --- constituents: pT shares ~ Exp (the B-decay muon takes its share), positions around the axis
    ce = np.repeat(np.arange(m), nconst)
    share = rng.exponential(1.0, len(ce))
    share /= np.bincount(ce, share)[ce]
    hadronic_pt = pt.copy()
    hadronic_pt[sl] -= mu_pt
    c_pt = hadronic_pt[ce] * share
    spread = 0.12 / (1 + 0.4 * np.log1p(pt[ce] / 30))
    c_eta = eta[ce] + spread * rng.standard_normal(len(ce))
    c_phi = phi[ce] + spread * rng.standard_normal(len(ce))
    c_pdg = np.where(rng.random(len(ce)) < chf[ce], 211, np.where(rng.random(len(ce)) < 0.6, 22, 130))
    c_pdg = np.where(c_pdg == 211, c_pdg * np.where(rng.random(len(ce)) < 0.5, 1, -1), c_pdg)

    # --- underlying event: back-to-back pairs
    nue = rng.poisson(30, n)
    ue_e = np.repeat(np.repeat(np.arange(n), nue), 2)
    k = len(ue_e) // 2
    ue_pt = np.repeat(rng.exponential(0.6, k), 2)
    ue_eta = rng.uniform(-5, 5, 2 * k)
    ue_phi = np.repeat(rng.uniform(-np.pi, np.pi, k), 2) + np.tile([0.0, np.pi], k)
    ue_pdg = np.where(rng.random(2 * k) < 0.6, np.where(rng.random(2 * k) < 0.5, 211, -211), 22)

    # --- GenPart: per event [Z, mu-, mu+] then [B0, mu] per semileptonic b jet
    gp = {  # category (order within an event): 0 Z, 1 mu-, 2 mu+, 3 B0, 4 its muon
        "evt": np.concatenate([ze, ze, ze, je[sl], je[sl]]),
        "cat": np.concatenate([np.zeros(nz), np.ones(nz), np.full(nz, 2), np.full(ns, 3), np.full(ns, 4)]),
        "pt": np.concatenate([zpt, z_pt_mu[:, 0], z_pt_mu[:, 1], pt[sl] + nu_pt[sl], mu_pt]),
        "eta": np.concatenate([np.arcsinh(zpz / zpt), z_eta_mu[:, 0], z_eta_mu[:, 1], eta[sl], mu_eta]),
        "phi": np.concatenate([np.arctan2(zpy, zpx), z_phi_mu[:, 0], z_phi_mu[:, 1], phi[sl], mu_phi]),
        "mass": np.concatenate([np.full(nz, 91.19), np.full(2 * nz, 0.10566), np.full(ns, 5.2797),
                                np.full(ns, 0.10566)]),
        "pdgId": np.concatenate([np.full(nz, 23), np.full(nz, 13), np.full(nz, -13), np.full(ns, 511),
                                 np.where(rng.random(ns) < 0.5, 13, -13)]),
        "status": np.concatenate([np.full(nz, 62), np.ones(2 * nz), np.full(ns, 2), np.ones(ns)]),
        "statusFlags": np.concatenate([np.full(3 * nz, ISPROMPT | LASTCOPY), np.full(ns, LASTCOPY),
                                       np.full(ns, HADRON_DECAY | LASTCOPY)]),
    }
    g_order = np.lexsort((gp["cat"], gp["evt"]))
    g_local = np.empty(len(g_order), dtype=np.int64)
    g_local[g_order] = _local_index(gp["evt"][g_order])
    cat = {c: np.flatnonzero(gp["cat"] == c) for c in range(5)}
    mother = np.full(len(g_local), -1, dtype=np.int64)
    mother[cat[1]] = g_local[cat[0]]
    mother[cat[2]] = g_local[cat[0]]
    mother[cat[4]] = g_local[cat[3]]
    gp["genPartIdxMother"] = mother
    gen_part = _unflatten_sorted(gp["evt"], n, {
        f: gp[f].astype(np.dtype(dt)) for f, dt in nanoaod.GENPART.items()}, g_order)

    # --- particles: constituents, UE, prompt muons, B-decay muons (in their jet), neutrinos
    zmu = np.concatenate([cat[1], cat[2]])
    p_evt = np.concatenate([je[ce], ue_e, gp["evt"][zmu], je[sl], je[sl]])
    p_pt = np.concatenate([c_pt, ue_pt, gp["pt"][zmu], mu_pt, nu_pt[sl]])
    p_eta = np.concatenate([c_eta, ue_eta, gp["eta"][zmu], mu_eta, nu_eta[sl]])
    p_phi = np.concatenate([c_phi, ue_phi, gp["phi"][zmu], mu_phi, nu_phi[sl]])
    p_pdg = np.concatenate([c_pdg, ue_pdg, gp["pdgId"][zmu], gp["pdgId"][cat[4]], np.full(ns, 14)])
    p_gpi = np.concatenate([np.full(len(ce) + len(ue_e), -1), g_local[zmu], g_local[cat[4]], np.full(ns, -1)])
    p_gji = np.concatenate([jet_local[ce], np.full(len(ue_e) + 2 * nz, -1), jet_local[sl], np.full(ns, -1)])
    apdg = np.abs(p_pdg)
    p_mass = np.select([apdg == 13, apdg == 211, apdg == 130], [0.10566, 0.13957, 0.49761], 0.0)
    px, py, pz = p_pt * np.cos(p_phi), p_pt * np.sin(p_phi), p_pt * np.sinh(p_eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + p_mass**2)
    charge = np.select([apdg == 211, apdg == 13], [np.sign(p_pdg), -np.sign(p_pdg)], 0)
    particles = _unflatten_sorted(p_evt, n, {
        "px": px, "py": py, "pz": pz, "E": e, "pdgId": p_pdg.astype(np.int32),
        "charge": charge.astype(np.float32), "genPartIdx": p_gpi.astype(np.int32),
        "genJetIdx": p_gji.astype(np.int32)}, np.argsort(p_evt, kind="stable"))

    gen_jets = _unflatten_sorted(je, n, {
        "pt": pt.astype(np.float32), "eta": eta.astype(np.float32), "phi": phi.astype(np.float32),
        "mass": mass.astype(np.float32), "partonFlavour": parton.astype(np.int32),
        "hadronFlavour": hadron.astype(np.int32), "nConstituents": nconst.astype(np.int32),
        "nCharged": nch.astype(np.int32), "chargedPtFraction": chf.astype(np.float32),
        "photonPtFraction": phf.astype(np.float32), "ptD": ptd.astype(np.float32),
        "axis2": axis2.astype(np.float32)}, np.arange(m))

    nu = apdg == 14
    mx = np.bincount(p_evt[nu], px[nu], n)
    my = np.bincount(p_evt[nu], py[nu], n)
    return GeneratedEvents(
        particles=particles, gen_part=gen_part, gen_jets=gen_jets,
        gen_met_pt=np.hypot(mx, my).astype(np.float32), gen_met_phi=np.arctan2(my, mx).astype(np.float32),
        gen_weight=np.ones(n, dtype=np.float32), xsec_pb=1.0, xsec_err_pb=0.0,
    )


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det_cfg() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return cfg["detector"]


@pytest.fixture(scope="module")
def gen() -> GeneratedEvents:
    return synthetic_events(8000, seed=7)


@pytest.fixture(scope="module")
def reco(gen, det_cfg) -> dict:
    return detsim.simulate(gen, det_cfg, np.random.default_rng(123), progress=False)


def _np(x) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def _dr(eta1, phi1, eta2, phi2):
    return np.hypot(eta1 - eta2, (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi)


def _matched_jets(gen, reco):
    """Flat arrays of reco jets matched to a gen jet, with the gen jet's fields."""
    jet = reco["Jet"]
    jet = jet[jet.genJetIdx >= 0]
    g = gen.gen_jets[ak.values_astype(jet.genJetIdx, np.int64)]
    return {**{f"reco_{k}": _np(jet[k]) for k in jet.fields}, **{f"gen_{k}": _np(g[k]) for k in g.fields}}


def _gen_jet_nu_fraction(gen, reco) -> np.ndarray:
    """Neutrino pT fraction (dR < 0.4) of the gen jet of each matched reco jet (as _matched_jets)."""
    parts, jets, _ = detsim._flatten_inputs(gen)
    _, _, nu = detsim._jet_lepton_content(parts, jets, 0.4)
    jet = reco["Jet"][reco["Jet"].genJetIdx >= 0]
    flat = _np(jet.genJetIdx).astype(np.int64) + np.repeat(jets.offsets, ak.to_numpy(ak.num(jet)))
    return nu[flat]


def _matched_muons(gen, reco):
    mu = reco["Muon"]
    mu = mu[mu.genPartIdx >= 0]
    g = gen.gen_part[ak.values_astype(mu.genPartIdx, np.int64)]
    mother = gen.gen_part[ak.values_astype(ak.where(g.genPartIdxMother >= 0, g.genPartIdxMother, 0), np.int64)]
    out = {**{f"reco_{k}": _np(mu[k]) for k in mu.fields}, **{f"gen_{k}": _np(g[k]) for k in g.fields}}
    out["mother_pdgId"] = _np(mother.pdgId)
    return out


def _width(x: np.ndarray) -> float:
    """Half the 16-84 % interquantile range: a Gaussian sigma that ignores the tails."""
    q16, q84 = np.quantile(x, [0.16, 0.84])
    return 0.5 * (q84 - q16)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------------------------
# contract
# ---------------------------------------------------------------------------------------------
def test_output_contract(gen, reco):
    assert set(reco) == {"Jet", "Muon", "MET_pt", "MET_phi"}
    for name, spec in (("Jet", nanoaod.JET), ("Muon", nanoaod.MUON)):
        arr = reco[name]
        assert len(arr) == len(gen)
        assert list(arr.fields) == list(spec), name
        for f, dt in spec.items():
            layout = ak.to_layout(arr[f])
            assert layout.content.dtype == np.dtype(dt), (name, f, layout.content.dtype)
        # pT-ordered per event
        pt = arr.pt
        assert ak.all(pt[:, 1:] <= pt[:, :-1])
    for k in ("MET_pt", "MET_phi"):
        assert isinstance(reco[k], np.ndarray) and reco[k].dtype == np.float32 and len(reco[k]) == len(gen)
    jet, mu = reco["Jet"], reco["Muon"]
    assert ak.all(jet.pt > 15.0) and ak.all(abs(jet.eta) < 4.7)
    assert ak.all(mu.pt > 3.0) and ak.all(abs(mu.eta) < 2.4)
    assert set(np.unique(_np(jet.jetId))) <= {0, 2, 6}
    assert set(np.unique(_np(mu.charge))) <= {-1, 1}
    q = _np(jet.qgl)
    assert np.all((q >= 0) & (q <= 1))
    b = _np(jet.btagDeepFlavB)
    inside = np.abs(_np(jet.eta)) < 2.5
    assert np.all((b[inside] >= 0) & (b[inside] <= 1)) and np.all(b[~inside] == -1.0)
    assert np.all(_np(mu.mass) == np.float32(0.10566))
    assert np.all(_np(mu.ip3d) >= 0)
    # tight is a subset of medium
    assert not np.any(_np(mu.tightId) & ~_np(mu.mediumId))
    # the simulation fills the contract exactly as the NanoAOD writer needs it
    assert len(_np(jet.pt)) > 10000 and len(_np(mu.pt)) > 4000


def test_reproducible_and_seed_dependent(det_cfg):
    g = synthetic_events(300, seed=3)
    a = detsim.simulate(g, det_cfg, np.random.default_rng(5), progress=False)
    b = detsim.simulate(g, det_cfg, np.random.default_rng(5), progress=False)
    c = detsim.simulate(g, det_cfg, np.random.default_rng(6), progress=False)
    for k in ("Jet", "Muon"):
        assert ak.to_list(a[k]) == ak.to_list(b[k])
    assert np.array_equal(a["MET_pt"], b["MET_pt"])
    assert not np.array_equal(a["MET_pt"], c["MET_pt"])


def test_progress_bar_runs(det_cfg):
    detsim.simulate(synthetic_events(20, seed=4), det_cfg, np.random.default_rng(1), progress=True)


def test_empty_chunk_and_missing_fields(det_cfg):
    g = synthetic_events(5, seed=2)
    empty = GeneratedEvents(particles=g.particles[:0], gen_part=g.gen_part[:0], gen_jets=g.gen_jets[:0],
                            gen_met_pt=g.gen_met_pt[:0], gen_met_phi=g.gen_met_phi[:0],
                            gen_weight=g.gen_weight[:0], xsec_pb=1.0, xsec_err_pb=0.0)
    out = detsim.simulate(empty, det_cfg, np.random.default_rng(1), progress=False)
    assert len(out["Jet"]) == 0 and len(out["MET_pt"]) == 0
    from pipeline.errors import ConfigError, MissingColumnError

    broken = GeneratedEvents(particles=g.particles, gen_part=g.gen_part,
                             gen_jets=ak.without_field(g.gen_jets, "ptD"), gen_met_pt=g.gen_met_pt,
                             gen_met_phi=g.gen_met_phi, gen_weight=g.gen_weight, xsec_pb=1.0, xsec_err_pb=0.0)
    with pytest.raises(MissingColumnError, match="ptD"):
        detsim.simulate(broken, det_cfg, np.random.default_rng(1), progress=False)
    bad = {**det_cfg, "jets": {k: v for k, v in det_cfg["jets"].items() if k != "resolution"}}
    with pytest.raises(ConfigError, match="detector.jets.resolution"):
        detsim.simulate(g, bad, np.random.default_rng(1), progress=False)


# ---------------------------------------------------------------------------------------------
# jets
# ---------------------------------------------------------------------------------------------
def test_jet_response_and_resolution(gen, reco):
    j = _matched_jets(gen, reco)
    r = j["reco_pt"] / j["gen_pt"]
    aeta = np.abs(j["gen_eta"])
    gpt = j["gen_pt"]
    central = aeta < 1.3
    # median response ~ 1 away from the threshold
    sel = central & (gpt > 60)
    assert abs(np.median(r[sel]) - 1.0) < 0.03
    # resolution improves with pT
    w30 = _width(r[central & (gpt > 25) & (gpt < 35)])
    w300 = _width(r[central & (gpt > 250) & (gpt < 350)])
    assert 0.10 < w30 < 0.30 and 0.03 < w300 < 0.09 and w300 < 0.5 * w30
    # forward worse than central at the same pT
    w_c = _width(r[(aeta < 1.0) & (gpt > 80) & (gpt < 200)])
    w_f = _width(r[(aeta > 3.0) & (aeta < 4.5) & (gpt > 80) & (gpt < 200)])
    assert w_f > 1.3 * w_c
    # non-Gaussian: more than a Gaussian's share beyond 3 core sigma on the low side
    sel = central & (gpt > 100) & (gpt < 400)
    z = (r[sel] - np.median(r[sel])) / _width(r[sel])
    assert np.mean(z < -3) > 0.005  # Gaussian: 0.00135


def test_flavour_dependent_response(gen, reco):
    j = _matched_jets(gen, reco)
    r = j["reco_pt"] / j["gen_pt"]
    low = (j["gen_pt"] > 25) & (j["gen_pt"] < 80)
    gluon = low & (np.abs(j["gen_partonFlavour"]) == 21) & (j["gen_hadronFlavour"] == 0)
    quark = low & (np.abs(j["gen_partonFlavour"]) <= 3) & (np.abs(j["gen_partonFlavour"]) >= 1)

    def core_mean(x):  # mean within +-2 half-widths of the median: efficient and tail-robust
        return np.mean(x[np.abs(x - np.median(x)) < 2 * _width(x)])

    # config: +1 % (quarks) vs -2 % (gluons) at 30 GeV, fading as sqrt(30 / pT)
    assert min(quark.sum(), gluon.sum()) > 2000
    assert core_mean(r[quark]) - core_mean(r[gluon]) > 0.01
    # b jets: heavier low-side tail than light-quark jets
    hi = (j["gen_pt"] > 60) & (np.abs(j["gen_eta"]) < 2.5)
    b = hi & (j["gen_hadronFlavour"] == 5)
    lq = hi & (j["gen_hadronFlavour"] == 0)
    frac = lambda m: np.mean(r[m] < np.median(r[m]) - 3 * _width(r[m]))  # noqa: E731
    assert frac(b) > 1.5 * frac(lq)
    # semileptonic b decays (neutrinos in the cone): the heaviest low-side tail
    flat_nu = _gen_jet_nu_fraction(gen, reco)
    semi = b & (flat_nu > 0.03)
    assert semi.sum() > 100 and np.mean(r[semi] < 0.75) > 1.5 * np.mean(r[b & ~semi] < 0.75)


def test_jet_efficiency_turn_on_and_matching(gen, reco):
    gj = gen.gen_jets
    jet = reco["Jet"]
    matched = jet[jet.genJetIdx >= 0]
    n_gen = ak.to_numpy(ak.num(gj))
    offsets = np.concatenate([[0], np.cumsum(n_gen)[:-1]])
    flat_idx = _np(matched.genJetIdx) + np.repeat(offsets, ak.to_numpy(ak.num(matched)))
    found = np.zeros(int(n_gen.sum()), dtype=bool)
    found[flat_idx.astype(np.int64)] = True
    gpt, geta = _np(gj.pt), np.abs(_np(gj.eta))
    central = geta < 2.5
    eff = lambda lo, hi: found[central & (gpt > lo) & (gpt < hi)].mean()  # noqa: E731
    assert eff(10, 13) < 0.35 < eff(18, 22) < 0.95 < eff(60, 600)
    # each gen jet matched at most once, to a close reco jet
    assert len(np.unique(flat_idx)) == len(flat_idx)
    j = _matched_jets(gen, reco)
    dr = _dr(j["reco_eta"], j["reco_phi"], j["gen_eta"], j["gen_phi"])
    assert np.quantile(dr, 0.99) < 0.2
    assert np.all(j["reco_hadronFlavour"] == j["gen_hadronFlavour"])


def test_pileup_jets(gen, reco):
    jet = reco["Jet"]
    fake = jet[jet.genJetIdx < 0]
    n_fake = ak.num(fake)
    assert 0.3 < ak.mean(n_fake) < 3.0
    assert ak.all(fake.hadronFlavour == 0)
    eta = np.abs(_np(fake.eta))
    pt = _np(fake.pt)
    # denser forward (per unit eta) and falling in pT
    assert np.sum(eta > 3.0) / 1.7 > 1.5 * np.sum(eta < 2.5) / 2.5
    assert np.sum(pt < 25) > 3 * np.sum(pt > 40)


def test_btag(gen, reco):
    j = _matched_jets(gen, reco)
    sel = (np.abs(j["reco_eta"]) < 2.5) & (j["reco_pt"] > 30)
    b = j["reco_btagDeepFlavB"][sel & (j["gen_hadronFlavour"] == 5)]
    c = j["reco_btagDeepFlavB"][sel & (j["gen_hadronFlavour"] == 4)]
    light = j["reco_btagDeepFlavB"][sel & (j["gen_hadronFlavour"] == 0)]
    assert np.mean(b) > 0.6 and np.mean(light) < 0.1 and np.mean(light) < np.mean(c) < np.mean(b)
    assert _auc(b, light) > 0.85
    # medium-like working point: ~75-85 % b efficiency for ~1 % mistag
    assert 0.65 < np.mean(b > 0.3) < 0.92 and 0.003 < np.mean(light > 0.3) < 0.03
    # performance degrades at large |eta|
    sel_c = (np.abs(j["reco_eta"]) < 1.0) & (j["reco_pt"] > 30) & (j["reco_pt"] < 150)
    sel_f = (np.abs(j["reco_eta"]) > 2.0) & (np.abs(j["reco_eta"]) < 2.5) & (j["reco_pt"] > 30) & (j["reco_pt"] < 150)
    auc = lambda s: _auc(j["reco_btagDeepFlavB"][s & (j["gen_hadronFlavour"] == 5)],  # noqa: E731
                         j["reco_btagDeepFlavB"][s & (j["gen_hadronFlavour"] == 0)])
    assert auc(sel_f) < auc(sel_c)


def test_qgl_constituents_and_jet_id(gen, reco):
    j = _matched_jets(gen, reco)
    sel = (np.abs(j["reco_eta"]) < 2.5) & (j["reco_pt"] > 30) & (j["gen_hadronFlavour"] == 0)
    quark = sel & (np.abs(j["gen_partonFlavour"]) >= 1) & (np.abs(j["gen_partonFlavour"]) <= 3)
    gluon = sel & (np.abs(j["gen_partonFlavour"]) == 21)
    assert np.median(j["reco_qgl"][quark]) > 0.6 > 0.4 > np.median(j["reco_qgl"][gluon])
    assert _auc(j["reco_qgl"][quark], j["reco_qgl"][gluon]) > 0.75
    # reco multiplicity follows the gen one
    assert np.corrcoef(j["reco_nConstituents"], j["gen_nConstituents"])[0, 1] > 0.7
    jid = j["reco_jetId"]
    assert 0.97 < np.mean(jid >= 2) < 1.0 and np.mean(jid == 6) > 0.9


# ---------------------------------------------------------------------------------------------
# muons
# ---------------------------------------------------------------------------------------------
def test_muon_matching_resolution_and_charge(gen, reco):
    m = _matched_muons(gen, reco)
    assert np.all(np.abs(m["gen_pdgId"]) == 13)
    dr = _dr(m["reco_eta"], m["reco_phi"], m["gen_eta"], m["gen_phi"])
    assert np.quantile(dr, 0.99) < 0.01
    r = m["reco_pt"] / m["gen_pt"]
    barrel = (np.abs(m["gen_eta"]) < 0.9) & (m["gen_pt"] > 30) & (m["gen_pt"] < 80)
    endcap = (np.abs(m["gen_eta"]) > 1.6) & (m["gen_pt"] > 30) & (m["gen_pt"] < 80)
    assert 0.007 < _width(r[barrel]) < 0.02 < _width(r[endcap]) < 0.04
    assert abs(np.median(r[barrel]) - 1) < 0.003
    # charge mis-assignment is rare at these momenta (curvature flips + a 1e-4 floor)
    assert np.mean(m["reco_charge"][barrel] != -np.sign(m["gen_pdgId"][barrel])) < 0.003


def test_muon_efficiency_turn_on(gen, reco):
    gp = gen.gen_part
    is_mu = (abs(gp.pdgId) == 13) & (gp.status == 1)
    n_gp = ak.to_numpy(ak.num(gp))
    found = np.zeros(int(n_gp.sum()), dtype=bool)
    mu = reco["Muon"]
    mu = mu[mu.genPartIdx >= 0]
    offs = np.concatenate([[0], np.cumsum(n_gp)[:-1]])
    flat = _np(mu.genPartIdx).astype(np.int64) + np.repeat(offs, ak.to_numpy(ak.num(mu)))
    found[flat] = True
    sel = _np(is_mu) & (np.abs(_np(gp.eta)) < 2.3)
    eff = found[sel & (_np(gp.pt) > 20)].mean()
    assert 0.95 < eff < 1.0
    # outside the acceptance: nothing
    assert not found[_np(is_mu) & (np.abs(_np(gp.eta)) > 2.45)].any()


def test_muon_efficiency_turn_on_at_low_pt(det_cfg):
    # a central muon of a few GeV has too little momentum to reach the muon stations
    g = synthetic_events(3000, seed=11, muon_pt_range=(2.0, 12.0))
    out = detsim.simulate(g, det_cfg, np.random.default_rng(2), progress=False)
    gp = g.gen_part
    n_gp = ak.to_numpy(ak.num(gp))
    mu = out["Muon"][out["Muon"].genPartIdx >= 0]
    flat = _np(mu.genPartIdx).astype(np.int64) + np.repeat(np.concatenate([[0], np.cumsum(n_gp)[:-1]]),
                                                             ak.to_numpy(ak.num(mu)))
    found = np.zeros(int(n_gp.sum()), dtype=bool)
    found[flat] = True
    prompt = _np((gp.pdgId != 23) & (gp.status == 1) & ((gp.statusFlags & ISPROMPT) > 0))
    pt, aeta = _np(gp.pt), np.abs(_np(gp.eta))
    eff = lambda lo, hi: found[prompt & (aeta < 0.8) & (pt > lo) & (pt < hi)].mean()  # noqa: E731
    assert eff(3.05, 3.5) < 0.8 and eff(3.05, 3.5) < eff(4.0, 5.0) - 0.15 and eff(8.0, 12.0) > 0.95


def test_isolation_and_impact_parameters(gen, reco):
    m = _matched_muons(gen, reco)
    prompt = m["mother_pdgId"] == 23
    from_b = m["mother_pdgId"] == 511
    assert prompt.sum() > 1000 and from_b.sum() > 100
    iso = m["reco_pfRelIso04_all"]
    assert np.median(iso[prompt]) < 0.1 < 0.5 < np.median(iso[from_b])
    assert np.mean(iso[prompt] < 0.15) > 0.85 and np.mean(iso[from_b] < 0.15) < 0.2
    dxy = np.abs(m["reco_dxy"])
    assert np.median(dxy[from_b]) > 3 * np.median(dxy[prompt])
    # prompt resolution: tens of microns
    assert 0.0005 < np.median(dxy[prompt]) < 0.005
    assert np.median(m["reco_ip3d"][from_b]) > 3 * np.median(m["reco_ip3d"][prompt])
    # IDs: high for prompt, lower for non-prompt
    assert np.mean(m["reco_mediumId"][prompt]) > 0.95 and np.mean(m["reco_tightId"][prompt]) > 0.9
    assert np.mean(m["reco_tightId"][from_b]) < np.mean(m["reco_tightId"][prompt]) - 0.03


def test_expected_impact_parameters_predict_the_reference_ones(gen, reco):
    """The FlashSim muon conditions gen_expected_dxy/dz (skim: the gen ancestors flown by their
    mean decay length) carry the sign and the scale of the reference simulation's dxy of muons from
    B decays, which fly an exponential draw of that length."""
    from pipeline.flashsim.conditions import ancestor_flight
    from pipeline.physics.tracks import track_impact_parameters

    mu = reco["Muon"]
    mu = mu[mu.genPartIdx >= 0]
    gp = gen.gen_part
    counts = ak.to_numpy(ak.num(gp))
    start = (np.concatenate([[0], np.cumsum(counts)[:-1]])[np.repeat(np.arange(len(counts)), ak.to_numpy(ak.num(mu)))]
             + _np(mu.genPartIdx).astype(np.int64))
    flat = {f: _np(gp[f]) for f in ("pdgId", "pt", "eta", "phi", "mass", "genPartIdxMother")}
    flight, vertex = ancestor_flight(counts, flat["pdgId"].astype(np.int64), flat["pt"], flat["eta"], flat["phi"],
                                     flat["mass"], flat["genPartIdxMother"].astype(np.int64), start)
    exp_dxy, exp_dz = track_impact_parameters(vertex, flat["eta"][start], flat["phi"][start])
    dxy = _np(mu.dxy)
    displaced = flight > 0.05  # B muons with a mean flight well above the ~20 um resolution
    assert displaced.sum() > 100 and np.all(exp_dxy[flight == 0] == 0)
    big = displaced & (np.abs(exp_dxy) > 0.02)
    assert big.sum() > 30
    assert np.mean(np.sign(dxy[big]) == np.sign(exp_dxy[big])) > 0.9
    # |dxy| / |expected| ~ Exp(1) for one flying ancestor: median ln 2
    assert 0.4 < np.median(np.abs(dxy[big] / exp_dxy[big])) < 1.0


def test_fake_muons_exist(reco):
    mu = reco["Muon"]
    fake = mu[mu.genPartIdx < 0]
    n = int(ak.sum(ak.num(fake)))
    assert n > 0
    assert np.mean(_np(fake.mediumId)) < 0.6


# ---------------------------------------------------------------------------------------------
# MET
# ---------------------------------------------------------------------------------------------
def _met_dx(gen, reco):
    return reco["MET_pt"] * np.cos(reco["MET_phi"]) - gen.gen_met_pt * np.cos(gen.gen_met_phi)


def test_met_resolution(gen, reco, det_cfg):
    dx = _met_dx(gen, reco)
    ht = ak.to_numpy(ak.sum(gen.gen_jets.pt, axis=1))
    soft, hard = ht < 250, ht > 600
    # per-component resolution of ~20 GeV in quiet events with <mu> = 40, worse with more jet
    # activity; no bias
    assert 12.0 < _width(dx[soft]) < 32.0 < _width(dx[hard]) < 60.0
    assert abs(np.median(dx)) < 3.0
    # pileup degrades it
    import copy

    cfg0 = copy.deepcopy(det_cfg)
    cfg0["pileup"]["mean_interactions"] = 0.0
    reco0 = detsim.simulate(gen, cfg0, np.random.default_rng(123), progress=False)
    assert _width(_met_dx(gen, reco0)[soft]) < 0.7 * _width(dx[soft])
    # events with semileptonic neutrinos have larger gen MET, and reco MET follows
    big = gen.gen_met_pt > 60
    assert big.sum() > 20 and np.median(reco["MET_pt"][big]) > np.median(reco["MET_pt"][~big]) + 20


# ---------------------------------------------------------------------------------------------
# config and schema
# ---------------------------------------------------------------------------------------------
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def test_config_block_valid_against_schema(det_cfg):
    import jsonschema

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(det_cfg)


def _resolve(schema: dict, sub: dict) -> dict:
    """``sub`` with a local ``$ref`` merged in (the referencing keys win, as in 2020-12)."""
    if "$ref" not in sub:
        return sub
    target = schema
    for part in sub["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(schema, target), **{k: v for k, v in sub.items() if k != "$ref"}}


def _walk_schema(schema: dict, node: dict, path: str = ""):
    """Yield (key path, resolved subschema) of every property, recursively."""
    for key, sub in node.get("properties", {}).items():
        p = f"{path}.{key}" if path else key
        sub = _resolve(schema, sub)
        yield p, sub
        yield from _walk_schema(schema, sub, p)


def test_schema_is_strict_and_documented():
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    readme = (REPO / "config" / "README.md").read_text()
    objects = [("(top)", schema)] + [(p, s) for p, s in _walk_schema(schema, schema) if s.get("type") == "object"]
    for path, obj in objects:
        assert obj.get("additionalProperties") is False, path
        assert set(obj.get("required", [])) == set(obj["properties"]), path
    leaves = 0
    for path, sub in _walk_schema(schema, schema):
        assert sub.get("description"), f"{path}: no description"
        assert sub.get("type") in ("object", "number", "array"), path
        if sub["type"] != "object":
            leaves += 1
            assert f"`{path}`" in readme, f"{path} not documented in config/README.md"
        if sub["type"] == "number":
            assert {"minimum", "exclusiveMinimum"} & set(sub) and "maximum" in sub, f"{path}: no range"
    assert leaves > 150


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("jets", "pt_min_gev"), -5.0, "minimum"),
        (("jets", "tails", "bottom", "n_low"), 0.9, "minimum"),
        (("btag", "light_mistag", "fraction"), 1.5, "maximum"),
        (("muons", "efficiency", "plateau"), [0.99, 1.2], "maximum"),
        (("pileup", "mean_interactions"), "forty", "not of type"),
        (("met", "unclustered_response"), None, "not of type"),
        (("muons", "isolation", "cone_dr"), 0.0, "minimum"),
        (("jets", "typo_key"), 1.0, "Additional properties"),
    ],
)
def test_schema_rejects_invalid_values(det_cfg, path, value, message):
    import copy

    import jsonschema

    cfg = copy.deepcopy(det_cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors(cfg))
    assert errors and any(message in e.message for e in errors), [e.message for e in errors]


def test_schema_requires_every_key(det_cfg):
    import copy

    import jsonschema

    cfg = copy.deepcopy(det_cfg)
    del cfg["muons"]["impact_parameter"]["dxy_const_cm"]
    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors(cfg))
    assert any("dxy_const_cm" in e.message and "required" in e.message for e in errors)


# ---------------------------------------------------------------------------------------------
# integration with real Pythia8 events
# ---------------------------------------------------------------------------------------------
def _generator_available() -> bool:
    if importlib.util.find_spec("pythia8mc") is None:
        return False
    try:
        from pipeline.samples import generator  # noqa: F401
    except Exception:  # noqa: BLE001 - not written yet, or broken: skip, do not fail here
        return False
    return True


@pytest.fixture(scope="module")
def pythia_ttbar():
    """150 real Pythia8 ttbar (W -> mu nu) events from the pipeline's generator."""
    if not _generator_available():
        pytest.skip("pipeline.samples.generator or pythia8mc not available")
    from pipeline.config import load_config
    from pipeline.samples.generator import generate

    cfg = load_config(REPO / "config" / "tiny.yaml")
    proc = cfg["generation"]["processes"]["ttbar_dilep"]
    return generate(proc["settings"], 150, 12345, cfg["generation"], progress=False)


def test_integration_with_pythia_events(pythia_ttbar, det_cfg):
    g = pythia_ttbar
    t0 = time.perf_counter()
    out = detsim.simulate(g, det_cfg, np.random.default_rng(1), progress=False)
    assert (time.perf_counter() - t0) / len(g) < 0.05  # seconds per event, generous
    jet, mu = out["Jet"], out["Muon"]
    assert ak.mean(ak.num(jet)) > 3 and ak.mean(ak.num(mu)) > 1.2
    # matching to the right partners
    j = _matched_jets(g, out)
    assert np.quantile(_dr(j["reco_eta"], j["reco_phi"], j["gen_eta"], j["gen_phi"]), 0.95) < 0.2
    m = _matched_muons(g, out)
    assert np.all(np.abs(m["gen_pdgId"]) == 13) and np.all(m["gen_status"] == 1)
    assert np.quantile(_dr(m["reco_eta"], m["reco_phi"], m["gen_eta"], m["gen_phi"]), 0.99) < 0.01
    # b jets from top decays are tagged, light jets are not
    central = (np.abs(j["reco_eta"]) < 2.4) & (j["reco_pt"] > 30)
    b = j["reco_btagDeepFlavB"][central & (j["gen_hadronFlavour"] == 5)]
    light = j["reco_btagDeepFlavB"][central & (j["gen_hadronFlavour"] == 0)]
    assert len(b) > 100 and np.mean(b > 0.3) > 0.7 and np.mean(light > 0.3) < 0.05
    # prompt muons (W decays) are isolated and close to the vertex; muons from b/c hadrons are not
    prompt = (m["gen_statusFlags"] & ISPROMPT) > 0
    nonprompt = ~prompt & (m["reco_pt"] > 5)
    assert prompt.sum() > 150 and nonprompt.sum() > 20
    iso = m["reco_pfRelIso04_all"]
    assert np.median(iso[prompt]) < 0.1 and np.median(iso[nonprompt]) > 0.3
    assert np.median(np.abs(m["reco_dxy"][nonprompt])) > 3 * np.median(np.abs(m["reco_dxy"][prompt]))
    # prompt muons are also clustered into gen jets (GenJets include muons, as in CMS): their
    # reco jets are measured like the muon and fail tightLepVeto (jetId 2), as in NanoAOD
    parts, jets, _ = detsim._flatten_inputs(g)
    mu_frac, _, _ = detsim._jet_lepton_content(parts, jets, 0.4)
    matched = jet[jet.genJetIdx >= 0]
    flat = _np(matched.genJetIdx).astype(np.int64) + np.repeat(jets.offsets, ak.to_numpy(ak.num(matched)))
    muon_jet = (mu_frac[flat] > 0.9) & (np.abs(j["reco_eta"]) < 2.4)
    assert muon_jet.sum() > 50
    assert np.mean(j["reco_jetId"][muon_jet] == 2) > 0.8 and np.mean(j["reco_jetId"][~muon_jet] == 2) < 0.05
    r = j["reco_pt"] / j["gen_pt"]
    hadronic = (mu_frac[flat] < 0.1) & (j["gen_pt"] > 30)
    assert _width(r[muon_jet & (j["gen_pt"] > 30)]) < 0.5 * _width(r[hadronic])
