"""Unit tests of pipeline.features on small hand-made events (closed-form expectations)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from pipeline import features
from pipeline.errors import ConfigError

REAL_NANO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nano_dy.root"

SKIM = {
    "chunk_events": 1000,
    "muons": {"pt_min_gev": 20.0, "abs_eta_max": 2.4, "rel_iso_max": 0.25, "id": "mediumId"},
    "jets": {"pt_min_gev": 25.0, "abs_eta_max": 4.7, "jet_id_min": 2, "min_dr_muon": 0.4, "btag_wp": 0.3},
    "opposite_charge": True,
    "mmumu_min_gev": 70.0,
    "mmumu_max_gev": 200.0,
}


def _muons(events):
    """events: list (per event) of (pt, eta, phi, charge, iso, mediumId) tuples."""
    keys = ("pt", "eta", "phi", "charge", "pfRelIso04_all", "mediumId")
    cols = {k: [[m[i] for m in ev] for ev in events] for i, k in enumerate(keys)}
    cols["mass"] = [[0.0 for _ in ev] for ev in events]
    cols["tightId"] = cols["mediumId"]
    arr = {k: ak.values_astype(ak.Array(v), np.bool_ if k.endswith("Id") else np.float64) for k, v in cols.items()
           if k != "charge"}
    arr["charge"] = ak.values_astype(ak.Array(cols["charge"]), np.int32)
    return ak.zip(arr)


def _jets(events):
    """events: list of (pt, eta, phi, mass, jetId, btag) tuples."""
    keys = ("pt", "eta", "phi", "mass", "jetId", "btagDeepFlavB")
    cols = {k: ak.Array([[j[i] for j in ev] for ev in events]) for i, k in enumerate(keys)}
    cols = {k: ak.values_astype(v, np.int32 if k == "jetId" else np.float64) for k, v in cols.items()}
    cols["qgl"] = ak.values_astype(ak.zeros_like(cols["pt"]) + 0.5, np.float64)
    return ak.zip(cols)


def _compute(muons, jets, cfg=SKIM):
    n = len(muons)
    return features.compute_event_features(muons, jets, np.full(n, 12.0), np.full(n, 0.5), cfg)


def test_columns_are_documented_with_units():
    cols = features.event_columns()
    assert cols == list(features.EVENT_COLUMNS)
    for name, (unit, desc) in features.EVENT_COLUMNS.items():
        assert isinstance(unit, str) and desc
    assert features.axis_label("m_jj") == "m_jj [GeV]"
    assert features.axis_label("zeppenfeld") == "zeppenfeld"
    out = _compute(_muons([[]]), _jets([[]]))
    assert list(out) == cols
    assert all(len(v) == 1 for v in out.values())


def test_delta_phi_and_rapidity():
    assert features.delta_phi(3.0, -3.0) == pytest.approx(6.0 - 2 * math.pi)
    assert features.delta_phi(-3.0, 3.0) == pytest.approx(2 * math.pi - 6.0)
    # massless: rapidity == pseudorapidity; massive: |y| < |eta|
    assert features.rapidity(30.0, 1.3, 0.0) == pytest.approx(1.3)
    assert abs(features.rapidity(30.0, 1.3, 20.0)) < 1.3


def test_dimuon_dijet_closed_form():
    # back-to-back massless muons at eta=+-0.3 give m^2 = 2 pt1 pt2 (cosh(deta) - cos(dphi))
    mu = _muons([[(45.0, 0.3, 0.0, 1, 0.05, True), (40.0, -0.3, math.pi, -1, 0.1, True)]])
    jets = _jets([[(60.0, 2.5, 1.0, 0.0, 6, 0.1), (80.0, -2.0, -1.0, 0.0, 6, 0.9)]])
    out = _compute(mu, jets)
    m_mumu = math.sqrt(2 * 45 * 40 * (math.cosh(0.6) - math.cos(math.pi)))
    assert out["m_mumu"][0] == pytest.approx(m_mumu, rel=1e-9)
    assert out["pt_mumu"][0] == pytest.approx(5.0, rel=1e-9)
    assert out["mu1_pt"][0] == 45.0 and out["mu2_charge"][0] == -1
    # jets are ordered by pT: j1 = the 80 GeV one
    assert out["j1_pt"][0] == 80.0 and out["j2_eta"][0] == 2.5
    assert out["m_jj"][0] == pytest.approx(math.sqrt(2 * 60 * 80 * (math.cosh(4.5) - math.cos(2.0))), rel=1e-9)
    assert out["delta_eta_jj"][0] == pytest.approx(4.5)
    assert out["delta_phi_jj"][0] == pytest.approx(2.0)
    # massless jets: y = eta
    y_mumu = out["y_mumu"][0]
    assert out["zeppenfeld"][0] == pytest.approx((y_mumu - (2.5 - 2.0) / 2) / 4.5, rel=1e-9)
    px = 45 - 40 + 60 * math.cos(1.0) + 80 * math.cos(-1.0)
    py = 0 + 60 * math.sin(1.0) + 80 * math.sin(-1.0)
    assert out["r_pt"][0] == pytest.approx(math.hypot(px, py) / (5.0 + 60 + 80), rel=1e-9)
    assert out["n_jets"][0] == 2 and out["n_bjets"][0] == 1  # 0.9 > wp at |eta| 2.0
    assert out["ht"][0] == pytest.approx(140.0)
    assert out["met_pt"][0] == 12.0


def test_missing_objects_give_nan_and_zero_charge():
    mu = _muons([[(45.0, 0.3, 0.0, 1, 0.05, True)], []])
    jets = _jets([[(60.0, 2.5, 1.0, 5.0, 6, 0.1)], []])
    out = _compute(mu, jets)
    assert out["n_muons"].tolist() == [1, 0]
    assert out["mu2_charge"].tolist() == [0, 0] and out["mu1_charge"].tolist() == [1, 0]
    assert np.isnan(out["m_mumu"]).all()
    assert out["j1_pt"][0] == 60.0 and np.isnan(out["j1_pt"][1])
    for k in ("j2_pt", "m_jj", "delta_eta_jj", "delta_phi_jj", "zeppenfeld", "r_pt"):
        assert np.isnan(out[k]).all(), k
    assert out["ht"].tolist() == [60.0, 0.0]
    assert out["n_jets"].dtype == np.int32


def test_object_selection_and_cleaning():
    mu = _muons(
        [
            [
                (30.0, 0.0, 0.0, 1, 0.1, True),  # selected
                (30.0, 1.0, 2.0, -1, 0.5, True),  # fails isolation
                (30.0, -1.0, -2.0, -1, 0.1, False),  # fails ID
                (15.0, 0.5, 1.0, -1, 0.1, True),  # fails pT
                (30.0, 2.45, 1.0, -1, 0.1, True),  # fails |eta|
            ]
        ]
    )
    jets = _jets(
        [
            [
                (50.0, 0.1, 0.1, 0.0, 6, 0.0),  # dR 0.14 to the selected muon: removed
                (50.0, 1.0, 2.1, 0.0, 6, 0.0),  # near the non-isolated muon only: kept
                (50.0, 3.0, 0.0, 0.0, 0, 0.0),  # jetId 0: removed
                (20.0, 3.0, 0.0, 0.0, 6, 0.0),  # pT: removed
                (50.0, 4.8, 0.0, 0.0, 6, 0.0),  # |eta|: removed
                (40.0, 3.0, 0.0, 0.0, 6, 0.99),  # kept, b-tag outside tracker: not a b jet
            ]
        ]
    )
    assert ak.to_list(features.muon_mask(mu, SKIM)) == [[True, False, False, False, False]]
    sel_mu, sel_jet = features.select_objects(mu, jets, SKIM)
    assert ak.to_list(sel_jet["pt"]) == [[50.0, 40.0]]
    assert ak.to_list(sel_jet["eta"]) == [[1.0, 3.0]]
    out = features.event_features(sel_mu, sel_jet, [0.0], [0.0], SKIM)
    assert out["n_bjets"][0] == 0 and out["n_muons"][0] == 1
    tight = copy.deepcopy(SKIM)
    tight["muons"]["id"] = "tightId"
    assert features.muon_fields(tight)[-1] == "tightId"


def test_preselection_is_cumulative():
    mu = _muons(
        [
            [(45.0, 0.3, 0.0, 1, 0.05, True), (40.0, -0.3, math.pi, -1, 0.1, True)],  # passes, m ~ 85
            [(45.0, 0.3, 0.0, 1, 0.05, True), (40.0, -0.3, math.pi, 1, 0.1, True)],  # same sign
            [(45.0, 0.3, 0.0, 1, 0.05, True), (25.0, 0.2, 0.1, -1, 0.1, True)],  # low mass
            [(45.0, 0.3, 0.0, 1, 0.05, True)],  # one muon
        ]
    )
    jets = _jets([[], [], [], []])
    cols = _compute(mu, jets)
    cuts = features.preselection(cols, SKIM)
    assert [c[0] for c in cuts] == ["two_muons", "opposite_charge", "mmumu_window"]
    assert [c[2].tolist() for c in cuts] == [
        [True, True, True, False],
        [True, False, True, False],
        [True, False, False, False],
    ]
    no_os = {**SKIM, "opposite_charge": False}
    cuts = features.preselection(cols, no_os)
    assert [c[0] for c in cuts] == ["two_muons", "mmumu_window"]
    assert cuts[-1][2].tolist() == [True, True, False, False]


def test_config_errors_name_the_key():
    bad = copy.deepcopy(SKIM)
    del bad["jets"]["btag_wp"]
    with pytest.raises(ConfigError, match=r"skim\.jets\.btag_wp"):
        _compute(_muons([[]]), _jets([[]]), bad)
    bad = copy.deepcopy(SKIM)
    bad["muons"]["id"] = "looseId"
    with pytest.raises(ConfigError, match=r"skim\.muons\.id"):
        features.muon_fields(bad)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # coffea: cross-references of other collections
def test_same_results_on_coffea_nanoevents():
    """The functions must work on coffea NanoEvents collections as on plain ak.zip records."""
    if not REAL_NANO.exists():
        pytest.skip(f"{REAL_NANO} not found (real CMS NanoAOD test file, expected in ../shared/data)")
    nanoevents = pytest.importorskip("coffea.nanoevents")
    import uproot

    from pipeline import io, nanoaod

    loose = copy.deepcopy(SKIM)
    loose["muons"].update(pt_min_gev=3.0, rel_iso_max=1.0)
    loose["jets"]["pt_min_gev"] = 15.0
    events = nanoevents.NanoEventsFactory.from_root(
        {str(REAL_NANO): "Events"}, schemaclass=nanoevents.NanoAODSchema, mode="eager"
    ).events()
    got = features.compute_event_features(events.Muon, events.Jet, events.MET.pt, events.MET.phi, loose)
    with uproot.open(REAL_NANO) as f:
        chunk = f["Events"].arrays(
            nanoaod.branches("Muon", features.muon_fields(loose))
            + nanoaod.branches("Jet", features.jet_fields(loose))
            + list(nanoaod.MET),
            how=dict,
        )
    mu = io.collection(chunk, "Muon", features.muon_fields(loose))
    jet = io.collection(chunk, "Jet", features.jet_fields(loose))
    ref = features.compute_event_features(mu, jet, chunk["MET_pt"], chunk["MET_phi"], loose)
    assert (ref["n_muons"] >= 2).sum() > 0 and (ref["n_jets"] >= 2).sum() > 0
    for k in features.EVENT_COLUMNS:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, equal_nan=True, err_msg=k)
