"""Tests of pipeline.skim and pipeline.flashsim.tables: the skim and the FlashSim training tables.

Synthetic NanoAOD files (written with io.write_nanoaod, contract types) are checked against an
independent per-event computation in plain Python; the real CMS file in ../shared/data checks
that real NanoAOD works (skipped, with the reason, where that folder is absent).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest

from pipeline import features, io, nanoaod, skim
from pipeline.flashsim import conditions, tables
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError, MissingBranchError

REAL_NANO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nano_dy.root"

SKIM = {
    "chunk_events": 64,  # several chunks per file
    "muons": {"pt_min_gev": 20.0, "abs_eta_max": 2.4, "rel_iso_max": 0.25, "id": "mediumId"},
    "jets": {"pt_min_gev": 25.0, "abs_eta_max": 4.7, "jet_id_min": 2, "min_dr_muon": 0.4, "btag_wp": 0.3},
    "opposite_charge": True,
    "mmumu_min_gev": 60.0,
    "mmumu_max_gev": 160.0,
}
TRAINING = {
    "samples": ["synth"],
    "jets": {"gen_pt_min_gev": 15.0, "gen_abs_eta_max": 4.7},
    "muons": {"gen_pt_min_gev": 5.0, "gen_abs_eta_max": 2.4},
}
XSEC, LUMI = 2.5, 300.0
SIGNAL = {"role": "signal", "xsec_pb": XSEC}


def _training_table(obj: str, sample_files: dict, out: str, cfg: dict, **kw) -> dict:
    """:func:`pipeline.flashsim.tables.training_table` with the blocks of ``cfg`` it takes."""
    return tables.training_table(obj, sample_files, out, cfg["training_tables"][obj], cfg["skim"]["chunk_events"], **kw)


def _real_file() -> Path:
    if not REAL_NANO.exists():
        pytest.skip(f"{REAL_NANO} not found (real CMS NanoAOD test file, expected in ../shared/data)")
    return REAL_NANO


# --------------------------------------------------------------------------------------------
# synthetic NanoAOD
# --------------------------------------------------------------------------------------------
def _collection(name: str, per_event: list[list[dict]], drop: tuple[str, ...] = ()) -> ak.Array:
    """Jagged record of the contract fields of ``name`` (missing fields: 0, indices: -1)."""
    spec = nanoaod.COLLECTIONS[name]
    counts = np.array([len(ev) for ev in per_event], dtype=np.int64)
    fields = {}
    for f, dtype in spec.items():
        if f in drop:
            continue
        default = -1 if f.endswith("Idx") or f == "genPartIdxMother" else 0
        flat = np.array([o.get(f, default) for ev in per_event for o in ev], dtype=dtype)
        fields[f] = ak.unflatten(flat, counts)
    return ak.zip(fields)


def write_events(path, events: list[dict], runs: dict | None = None, drop_muon: tuple[str, ...] = ()) -> Path:
    """events: per event a dict with lists 'GenPart', 'GenJet', 'Jet', 'Muon' (dicts of fields)."""
    n = len(events)
    data = {
        "run": np.ones(n, dtype=np.uint32),
        "luminosityBlock": np.ones(n, dtype=np.uint32),
        "event": np.array([e.get("event", i) for i, e in enumerate(events)], dtype=np.uint64),
        "genWeight": np.array([e.get("genWeight", 1.0) for e in events], dtype=np.float32),
        "GenMET_pt": np.array([e.get("GenMET_pt", 5.0) for e in events], dtype=np.float32),
        "GenMET_phi": np.zeros(n, dtype=np.float32),
        "MET_pt": np.array([e.get("MET_pt", 7.0) for e in events], dtype=np.float32),
        "MET_phi": np.array([e.get("MET_phi", 0.5) for e in events], dtype=np.float32),
    }
    for name in nanoaod.COLLECTIONS:
        drop = drop_muon if name == "Muon" else ()
        data[name] = _collection(name, [e.get(name, []) for e in events], drop)
    io.write_nanoaod(path, data, collections=list(nanoaod.COLLECTIONS), runs=runs)
    return Path(path)


def random_events(n: int, seed: int, first_event: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    f32 = lambda x: float(np.float32(x))  # noqa: E731 - values as the file stores them
    events = []
    for i in range(n):
        muons = []
        for _ in range(rng.integers(0, 4)):
            muons.append(
                {
                    "pt": f32(rng.uniform(10, 90)),
                    "eta": f32(rng.uniform(-2.6, 2.6)),
                    "phi": f32(rng.uniform(-math.pi, math.pi)),
                    "mass": f32(0.10566),
                    "charge": int(rng.choice([-1, 1])),
                    "pfRelIso04_all": f32(rng.exponential(0.12)),
                    "mediumId": bool(rng.random() < 0.9),
                    "tightId": bool(rng.random() < 0.8),
                }
            )
        jets = []
        for _ in range(rng.integers(0, 5)):
            jets.append(
                {
                    "pt": f32(rng.uniform(15, 150)),
                    "eta": f32(rng.uniform(-5, 5)),
                    "phi": f32(rng.uniform(-math.pi, math.pi)),
                    "mass": f32(rng.uniform(0, 15)),
                    "jetId": int(rng.choice([0, 2, 6], p=[0.1, 0.2, 0.7])),
                    "btagDeepFlavB": f32(rng.random()),
                    "qgl": f32(rng.random()),
                }
            )
        if muons and rng.random() < 0.3:  # a jet on top of a muon, to exercise the cleaning
            m = muons[0]
            jets.append({**jets[0], "pt": f32(m["pt"] + 10), "eta": m["eta"], "phi": f32(m["phi"] + 0.1)} if jets else
                        {"pt": f32(m["pt"] + 10), "eta": m["eta"], "phi": f32(m["phi"] + 0.1), "mass": 3.0,
                         "jetId": 6, "btagDeepFlavB": 0.1, "qgl": 0.5})
        events.append(
            {
                "event": first_event + i,
                "genWeight": float(rng.choice([1.0, -1.0, 2.0], p=[0.7, 0.1, 0.2])),
                "MET_pt": f32(rng.exponential(20)),
                "MET_phi": f32(rng.uniform(-math.pi, math.pi)),
                "Muon": muons,
                "Jet": jets,
            }
        )
    return events


def _p4(o):
    pt, eta, phi, m = o["pt"], o["eta"], o["phi"], o["mass"]
    return np.array([pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta),
                     math.sqrt((pt * math.cosh(eta)) ** 2 + m**2)])


def _mass(p):
    return math.sqrt(max(p[3] ** 2 - p[0] ** 2 - p[1] ** 2 - p[2] ** 2, 0.0))


def _y(p):
    return 0.5 * math.log((p[3] + p[2]) / (p[3] - p[2]))


def expected_rows(events: list[dict], cfg: dict) -> dict[int, dict]:
    """An independent, per-event implementation of the preselection and of a few columns."""
    mc, jc = cfg["muons"], cfg["jets"]
    out = {}
    for ev in events:
        mus = [m for m in ev["Muon"] if m["pt"] > mc["pt_min_gev"] and abs(m["eta"]) < mc["abs_eta_max"]
               and m["pfRelIso04_all"] < mc["rel_iso_max"] and m[mc["id"]]]
        mus.sort(key=lambda m: -m["pt"])
        if len(mus) < 2 or (cfg["opposite_charge"] and mus[0]["charge"] * mus[1]["charge"] >= 0):
            continue
        pmm = _p4(mus[0]) + _p4(mus[1])
        m_mumu = _mass(pmm)
        if not cfg["mmumu_min_gev"] < m_mumu < cfg["mmumu_max_gev"]:
            continue

        def dr(a, b):
            dphi = (a["phi"] - b["phi"] + math.pi) % (2 * math.pi) - math.pi
            return math.hypot(a["eta"] - b["eta"], dphi)

        jets = [j for j in ev["Jet"] if j["pt"] > jc["pt_min_gev"] and abs(j["eta"]) < jc["abs_eta_max"]
                and j["jetId"] >= jc["jet_id_min"] and all(dr(j, m) > jc["min_dr_muon"] for m in mus)]
        jets.sort(key=lambda j: -j["pt"])
        row = {"m_mumu": m_mumu, "pt_mumu": math.hypot(pmm[0], pmm[1]), "n_jets": len(jets),
               "ht": sum(j["pt"] for j in jets), "met_pt": ev["MET_pt"], "genWeight": ev["genWeight"],
               "n_bjets": sum(1 for j in jets if abs(j["eta"]) < 2.5 and j["btagDeepFlavB"] > jc["btag_wp"])}
        if len(jets) >= 2:
            p1, p2 = _p4(jets[0]), _p4(jets[1])
            y1, y2 = _y(p1), _y(p2)
            row["m_jj"] = _mass(p1 + p2)
            row["delta_eta_jj"] = abs(jets[0]["eta"] - jets[1]["eta"])
            row["zeppenfeld"] = (_y(pmm) - (y1 + y2) / 2) / abs(y1 - y2)
            tot = pmm + p1 + p2
            row["r_pt"] = math.hypot(tot[0], tot[1]) / (row["pt_mumu"] + jets[0]["pt"] + jets[1]["pt"])
        else:
            row.update(m_jj=math.nan, delta_eta_jj=math.nan, zeppenfeld=math.nan, r_pt=math.nan)
        out[ev["event"]] = row
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two synthetic files of one sample (no Runs tree), and their events."""
    d = tmp_path_factory.mktemp("synth")
    ev_a, ev_b = random_events(250, seed=1), random_events(150, seed=2, first_event=1000)
    files = [str(write_events(d / "a.root", ev_a)), str(write_events(d / "b.root", ev_b))]
    return files, ev_a + ev_b


def _outputs(tmp_path):
    return str(tmp_path / "out" / "synth.parquet"), str(tmp_path / "out" / "synth.cutflow.json")


def _no_outputs(*paths):
    for p in paths:
        assert not Path(p).exists(), f"{p} left behind"
    for p in paths:  # nor temporary files of atomic_output
        parent = Path(p).parent
        if parent.exists():
            assert not [x for x in parent.iterdir() if x.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# skim on synthetic files
# --------------------------------------------------------------------------------------------
def test_skim_columns_equal_hand_computation(synth, tmp_path):
    files, events = synth
    pq, cf = _outputs(tmp_path)
    result = skim.skim_sample(files, pq, cf, "synth", SIGNAL, SKIM, LUMI, progress=False)
    df = pd.read_parquet(pq)
    exp = expected_rows(events, SKIM)
    assert 20 < len(exp) < len(events)  # the test exercises the selection
    assert list(df.columns) == skim.skim_columns()
    assert sorted(df["event"].tolist()) == sorted(exp)
    assert (df["sample"] == "synth").all() and df["is_signal"].all()
    got = df.set_index("event")
    for ev, row in exp.items():
        for k, v in row.items():
            np.testing.assert_allclose(got.loc[ev, k], v, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=f"{k} {ev}")
    assert np.isfinite(got["m_jj"]).sum() > 5 and np.isnan(got["m_jj"]).sum() > 0
    assert set(features.EVENT_COLUMNS) <= set(df.columns)
    assert df["n_jets"].dtype == np.int32 and df["event"].dtype == np.uint64

    # weights: genWeight * xsec * lumi / sum(genWeight of all events)
    gw_all = sum(e["genWeight"] for e in events)
    gw_sel = sum(exp[e]["genWeight"] for e in exp)
    assert df["weight"].sum() == pytest.approx(XSEC * 1000 * LUMI * gw_sel / gw_all, rel=1e-9)
    assert result["sum_genWeight"] == pytest.approx(gw_all)
    assert result["sum_genWeight_source"] == "genWeight of all events read"


def test_unit_weights_sum_to_xsec_lumi_times_selected_fraction(tmp_path):
    events = random_events(200, seed=7)
    for e in events:
        e["genWeight"] = 1.0
    f = str(write_events(tmp_path / "u.root", events))
    pq, cf = _outputs(tmp_path)
    skim.skim_sample([f], pq, cf, "synth", SIGNAL, SKIM, LUMI, progress=False)
    df = pd.read_parquet(pq)
    n_sel = len(expected_rows(events, SKIM))
    assert len(df) == n_sel
    assert df["weight"].sum() == pytest.approx(XSEC * 1000 * LUMI * n_sel / len(events), rel=1e-9)


def test_cutflow_monotonic_and_consistent(synth, tmp_path):
    files, events = synth
    pq, cf = _outputs(tmp_path)
    result = skim.skim_sample(files, pq, cf, "synth", {"role": "background", "xsec_pb": XSEC}, SKIM, LUMI,
                              progress=False)
    flow = json.loads(Path(cf).read_text())
    assert flow == json.loads(json.dumps(result))
    names = [c["name"] for c in flow["cuts"]]
    assert names == ["all", "two_muons", "opposite_charge", "mmumu_window"]
    counts = [c["events"] for c in flow["cuts"]]
    assert counts[0] == len(events) == flow["n_events_read"]
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    df = pd.read_parquet(pq)
    assert counts[-1] == len(df) == flow["n_selected"]
    assert flow["cuts"][0]["yield"] == pytest.approx(XSEC * 1000 * LUMI)
    assert flow["selected_yield"] == pytest.approx(df["weight"].sum())
    assert flow["xsec_pb"] == XSEC and flow["luminosity_fb"] == LUMI and not flow["is_signal"]
    assert not df["is_signal"].any()


def test_chunking_and_file_split_do_not_change_the_result(synth, tmp_path):
    files, events = synth
    one = str(write_events(tmp_path / "all.root", events))
    a = skim.skim_sample(files, *_outputs(tmp_path), "synth", SIGNAL, SKIM, LUMI, progress=False)
    df_a = pd.read_parquet(_outputs(tmp_path)[0])
    big = {**SKIM, "chunk_events": 100_000}
    b = skim.skim_sample([one], str(tmp_path / "b.parquet"), str(tmp_path / "b.json"), "synth", SIGNAL, big,
                         LUMI, progress=False)
    df_b = pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(df_a, df_b)
    assert a["cuts"] == b["cuts"]


def test_runs_tree_gives_sum_of_weights_and_xsec(tmp_path):
    """A file that is itself a skim: Runs.genEventSumw (before cuts) normalises, xsec from Runs."""
    ev_a, ev_b = random_events(120, seed=3), random_events(80, seed=4, first_event=500)
    runs_a = {"run": 1, "genEventCount": 1000, "genEventSumw": 900.0, "genEventSumw2": 900.0, "xsec_pb": 3.0,
              "xsec_err_pb": 0.1}
    runs_b = {**runs_a, "genEventSumw": 300.0, "xsec_pb": 5.0}
    files = [str(write_events(tmp_path / "a.root", ev_a, runs=runs_a)),
             str(write_events(tmp_path / "b.root", ev_b, runs=runs_b))]
    pq, cf = _outputs(tmp_path)
    flow = skim.skim_sample(files, pq, cf, "synth", {"role": "background"}, SKIM, LUMI, progress=False)
    xsec = (3.0 * 900 + 5.0 * 300) / 1200
    assert flow["xsec_pb"] == pytest.approx(xsec)
    assert flow["sum_genWeight"] == pytest.approx(1200.0)
    assert flow["sum_genWeight_source"] == "Runs.genEventSumw"
    exp = expected_rows(ev_a + ev_b, SKIM)
    df = pd.read_parquet(pq)
    gw_sel = sum(r["genWeight"] for r in exp.values())
    assert df["weight"].sum() == pytest.approx(xsec * 1000 * LUMI * gw_sel / 1200.0, rel=1e-9)
    # the configured cross-section wins over the Runs tree
    flow = skim.skim_sample(files, pq, cf, "synth", {"role": "background", "xsec_pb": 7.0}, SKIM, LUMI,
                            progress=False)
    assert flow["xsec_pb"] == 7.0 and flow["xsec_source"].startswith("config")


def test_no_cross_section_is_a_config_error(synth, tmp_path):
    files, _ = synth
    pq, cf = _outputs(tmp_path)
    with pytest.raises(ConfigError, match=r"samples\.synth\.xsec_pb"):
        skim.skim_sample(files, pq, cf, "synth", {"role": "signal"}, SKIM, LUMI, progress=False)
    _no_outputs(pq, cf)


def test_empty_selection(synth, tmp_path):
    files, _ = synth
    pq, cf = _outputs(tmp_path)
    Path(pq).parent.mkdir(parents=True)
    Path(pq).write_text("stale output of an earlier run")
    cfg = {**SKIM, "mmumu_min_gev": 1000.0, "mmumu_max_gev": 1001.0}
    with pytest.raises(EmptySelectionError, match=r"synth.*cutflow: all 400 -> two_muons \d+ .*mmumu_window 0"):
        skim.skim_sample(files, pq, cf, "synth", SIGNAL, cfg, LUMI, progress=False)
    _no_outputs(pq, cf)


def test_file_without_events_is_an_empty_selection(tmp_path):
    f = str(write_events(tmp_path / "empty.root", []))
    pq, cf = _outputs(tmp_path)
    with pytest.raises(EmptySelectionError, match="synth"):
        skim.skim_sample([f], pq, cf, "synth", SIGNAL, SKIM, LUMI, progress=False)
    _no_outputs(pq, cf)


def test_missing_branch_names_file_and_branch(synth, tmp_path):
    files, events = synth
    bad = str(write_events(tmp_path / "noiso.root", events[:50], drop_muon=("pfRelIso04_all",)))
    pq, cf = _outputs(tmp_path)
    with pytest.raises(MissingBranchError, match=r"noiso\.root.*Muon_pfRelIso04_all") as info:
        skim.skim_sample([files[0], bad], pq, cf, "synth", SIGNAL, SKIM, LUMI, progress=False)
    assert info.value.missing == ["Muon_pfRelIso04_all"]
    _no_outputs(pq, cf)


def test_skim_reads_only_its_branches(synth):
    branches = skim.skim_branches(SKIM)
    assert "Muon_mediumId" in branches and "Muon_tightId" not in branches
    assert "Jet_genJetIdx" not in branches and not any(b.startswith("Gen") for b in branches)
    assert set(branches) <= set(nanoaod.all_branches())


def _bad_inputs(tmp_path, good: str) -> dict[str, str]:
    text = tmp_path / "notroot.root"
    text.write_text("this is not a ROOT file\n")
    data = Path(good).read_bytes()
    trunc = tmp_path / "truncated.root"
    trunc.write_bytes(data[: len(data) // 2])
    return {"not ROOT": str(text), "nonexistent": str(tmp_path / "nope.root"), "truncated": str(trunc)}


@pytest.mark.parametrize("kind", ["not ROOT", "nonexistent", "truncated"])
def test_bad_input_file(synth, tmp_path, kind):
    files, _ = synth
    bad = _bad_inputs(tmp_path, files[0])[kind]
    pq, cf = _outputs(tmp_path)
    with pytest.raises(InputFileError, match=Path(bad).name):
        skim.skim_sample([files[0], bad], pq, cf, "synth", SIGNAL, SKIM, LUMI, progress=False)
    _no_outputs(pq, cf)
    out = tmp_path / "training" / "jets.parquet"
    with pytest.raises(InputFileError, match=Path(bad).name):
        _training_table("jets", {"synth": [files[0], bad]}, str(out), {"skim": SKIM, "training_tables": TRAINING},
                            progress=False)
    _no_outputs(out, tables.fakes_path(out), tables.events_path(out))


# --------------------------------------------------------------------------------------------
# training tables on a hand-made file
# --------------------------------------------------------------------------------------------
PROMPT = 1 << nanoaod.STATUS_FLAG_BITS["isPrompt"]
HADRON = 1 << nanoaod.STATUS_FLAG_BITS["isDirectHadronDecayProduct"]
TAU = (1 << nanoaod.STATUS_FLAG_BITS["isPromptTauDecayProduct"]) | (1 << nanoaod.STATUS_FLAG_BITS["isTauDecayProduct"])


def _gj(pt, eta, phi, flav=0):
    return {"pt": pt, "eta": eta, "phi": phi, "mass": 5.0, "partonFlavour": flav, "hadronFlavour": 0}


def _jet(pt, eta, phi, idx):
    return {"pt": pt, "eta": eta, "phi": phi, "mass": 6.0, "btagDeepFlavB": 0.2, "qgl": 0.4,
            "nConstituents": 20, "jetId": 6, "hadronFlavour": 0, "genJetIdx": idx}


def _gp(pdg, status, pt, eta, phi, flags=0):
    return {"pdgId": pdg, "status": status, "pt": pt, "eta": eta, "phi": phi, "mass": 0.1, "statusFlags": flags}


def _mu(pt, eta, phi, q, idx):
    return {"pt": pt, "eta": eta, "phi": phi, "mass": 0.1057, "charge": q, "pfRelIso04_all": 0.05,
            "mediumId": True, "tightId": True, "dxy": 0.001, "dz": 0.002, "ip3d": 0.003, "genPartIdx": idx}


HAND_EVENTS = [
    {  # 0: gen jet 0 matched twice (leading reco wins), gen jet 1 lost, one fake; Z -> mu mu, both found
        "event": 10,
        "GenJet": [_gj(50.0, 0.0, 0.0, 21), _gj(30.0, 2.0, 1.0, 1), _gj(40.0, 0.0, 3.0)],
        "Jet": [_jet(48.0, 0.05, 0.0, 0), _jet(25.0, -3.0, -2.0, -1), _jet(20.0, 0.1, 0.1, 0), _jet(41.0, 0.0, 3.0, 2)],
        "GenPart": [_gp(23, 62, 20.0, 0.5, 0.0), _gp(13, 1, 40.0, 0.0, 3.0, PROMPT), _gp(-13, 1, 30.0, 1.0, -1.0, PROMPT)],
        "Muon": [_mu(39.0, 0.0, 3.0, -1, 1), _mu(29.0, 1.0, -1.0, 1, 2)],
        "GenMET_pt": 11.0,
    },
    {  # 1: gen jet below the acceptance pT, its reco jet is neither a row nor a fake; muon from a B, lost
        "event": 11,
        "GenJet": [_gj(12.0, 0.0, 0.0)],
        "Jet": [_jet(11.0, 0.0, 0.0, 0)],
        "GenPart": [_gp(521, 2, 20.0, 0.5, 0.5), _gp(13, 1, 8.0, 0.5, 0.6, HADRON)],
        "Muon": [],
    },
    {  # 2: gen jet outside |eta| acceptance; a reco jet pointing beyond the stored gen jets is a fake;
        #    a tau muon; a muon below the pT acceptance
        "event": 12,
        "GenJet": [_gj(40.0, 4.9, 0.0)],
        "Jet": [_jet(35.0, 1.0, 1.0, 3)],
        "GenPart": [_gp(-13, 1, 12.0, -1.0, 0.0, TAU), _gp(13, 1, 3.0, 0.0, 0.0, PROMPT)],
        "Muon": [_mu(11.0, -1.0, 0.0, 1, 0)],
    },
]


@pytest.fixture()
def hand_file(tmp_path):
    return str(write_events(tmp_path / "hand.root", HAND_EVENTS))


def test_jet_training_table_by_hand(hand_file, tmp_path):
    out = tmp_path / "training" / "jets.parquet"
    cfg = {"skim": SKIM, "training_tables": TRAINING}
    summary = _training_table("jets", {"synth": [hand_file]}, str(out), cfg, progress=False)
    df = pd.read_parquet(out)
    assert list(df.columns) == list(tables.JET_TABLE_COLUMNS)
    assert df["gen_pt"].tolist() == [50.0, 30.0, 40.0]
    assert df["is_reconstructed"].tolist() == [True, False, True]
    assert df["reco_pt"].tolist()[0] == 48.0 and np.isnan(df["reco_pt"][1]) and df["reco_pt"][2] == 41.0
    assert df["reco_nConstituents"].tolist() == [20, -1, 20]
    assert df["gen_partonFlavour"].tolist() == [21, 1, 0]
    assert df["ctx_n_genjets"].tolist() == [3, 3, 3]
    assert df["ctx_nearest_genjet_dr"][0] == pytest.approx(math.hypot(2.0, 1.0))
    assert df["ctx_nearest_genjet_pt"][0] == 30.0
    assert df["ctx_nearest_genmuon_dr"][0] == pytest.approx(math.hypot(1.0, 1.0))  # mu+ at (1, -1)
    assert df["ctx_nearest_genmuon_dr"][2] == pytest.approx(0.0, abs=1e-6)  # the mu- at (0, 3)
    assert (df["ctx_genmet_pt"] == 11.0).all() and (df["event"] == 10).all() and (df["sample"] == "synth").all()
    assert summary["n_rows"] == 3 and summary["n_reconstructed"] == 2 and summary["duplicate_matches"] == 1

    fakes = pd.read_parquet(tables.fakes_path(out))
    assert tables.fakes_path(out).name == "jets_fakes.parquet"
    assert list(fakes.columns) == list(tables.FAKE_JET_TABLE_COLUMNS)
    assert fakes["reco_pt"].tolist() == [25.0, 35.0]
    assert fakes["event"].tolist() == [10, 12]
    assert fakes["ctx_n_fakes"].tolist() == [1, 1]
    assert fakes["ctx_nearest_genjet_dr"][1] == pytest.approx(math.hypot(3.9, 1.0), rel=1e-6)
    assert summary["fakes"]["fake_multiplicity"] == {"0": 1, "1": 2}


def test_muon_training_table_by_hand(hand_file, tmp_path):
    out = tmp_path / "training" / "muons.parquet"
    cfg = {"skim": SKIM, "training_tables": TRAINING}
    summary = _training_table("muons", {"synth": [hand_file]}, str(out), cfg, progress=False)
    df = pd.read_parquet(out)
    assert list(df.columns) == list(tables.MUON_TABLE_COLUMNS)
    assert df["gen_pt"].tolist() == [40.0, 30.0, 8.0, 12.0]
    assert df["gen_charge"].tolist() == [-1, 1, -1, 1]
    assert df["gen_isPrompt"].tolist() == [True, True, False, False]
    assert df["gen_fromHadron"].tolist() == [False, False, True, False]
    assert df["gen_fromPromptTau"].tolist() == [False, False, False, True]
    assert df["gen_flight_cm"].tolist() == [0.0, 0.0, 0.0, 0.0]  # no mothers stored in this file
    assert df["is_reconstructed"].tolist() == [True, True, False, True]
    assert df["reco_pt"].tolist()[:2] == [39.0, 29.0] and np.isnan(df["reco_pt"][2])
    assert df["reco_charge"].tolist() == [-1, 1, -1, 1]
    assert df["reco_mediumId"].tolist() == [True, True, False, True]
    assert df["ctx_nearest_genjet_pt"][0] == 40.0  # the gen jet at (0, 3)
    assert df["ctx_genjet_sumpt_dr04"][0] == 40.0 and df["ctx_genjet_sumpt_dr04"][1] == 0.0
    assert df["ctx_nearest_genmuon_dr"][0] == pytest.approx(df["ctx_nearest_genmuon_dr"][1])
    assert df["ctx_nearest_genmuon_dr"][2] == conditions.NO_NEIGHBOUR_DR
    assert df["event"].tolist() == [10, 10, 11, 12] and (df["file_index"] == 0).all()
    assert summary["matched_fraction"] == pytest.approx(0.75)
    # every reco muon points to a final-state gen muon: an empty fake table, with its schema
    fakes_file = tables.fakes_path(out)
    assert fakes_file.name == "muons_fakes.parquet"
    fakes = pd.read_parquet(fakes_file)
    assert len(fakes) == 0 and list(fakes.columns) == list(tables.FAKE_MUON_TABLE_COLUMNS)
    assert _schema(fakes_file) == FAKE_MUON_SCHEMA
    assert summary["fakes"]["n_rows"] == 0 and summary["fakes"]["fake_multiplicity"] == {"0": 3}


def _schema(path) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


FAKE_MUON_SCHEMA = [
    ("ctx_n_genjets", "int32"), ("ctx_nearest_genjet_dr", "float"), ("ctx_nearest_genjet_pt", "float"),
    ("ctx_genmet_pt", "float"), ("ctx_n_fakes", "int32"),
    *[(f"reco_{f}", "bool" if f.endswith("Id") else "int32" if f == "charge" else "float")
      for f in nanoaod.MUON if f != "genPartIdx"],
    ("sample", "string"), ("event", "uint64"), ("file_index", "int32"),
]

FAKE_MUON_EVENTS = [
    {  # 20: one true muon; fakes: two reco muons on a pion (no duplicate match), one on a decayed
        #     (status 2) muon, one with -1 and one beyond GenPart; a reco muon on a gen muon below the
        #     acceptance is neither a row nor a fake
        "event": 20,
        "GenJet": [_gj(40.0, 0.0, 0.0)],
        "GenPart": [_gp(211, 1, 20.0, 1.0, 0.0), _gp(13, 1, 30.0, 0.5, 1.0, PROMPT),
                    _gp(13, 2, 25.0, -0.5, 2.0), _gp(-13, 1, 3.0, 0.0, -1.0, HADRON)],
        "Muon": [_mu(29.0, 0.5, 1.0, -1, 1), {**_mu(18.0, 1.0, 0.0, 1, 0), "mediumId": False},
                 _mu(17.0, 1.0, 0.1, -1, 0), _mu(22.0, -0.5, 2.0, -1, 2), _mu(15.0, 0.0, 0.5, 1, -1),
                 _mu(12.0, 2.0, 0.0, 1, 7), _mu(4.0, 0.0, -1.0, 1, 3)],
        "GenMET_pt": 9.0,
    },
    {  # 21: one true muon, found; no fake
        "event": 21,
        "GenPart": [_gp(-13, 1, 20.0, 0.0, 0.0, PROMPT)],
        "Muon": [_mu(21.0, 0.0, 0.0, 1, 0)],
    },
    {  # 22: nothing at generator level; the reco muon points beyond GenPart
        "event": 22,
        "Muon": [_mu(9.0, 0.3, 0.3, -1, 0)],
    },
]


def test_muon_fakes_by_hand(tmp_path):
    f = str(write_events(tmp_path / "fakes.root", FAKE_MUON_EVENTS))
    out = tmp_path / "training" / "muons.parquet"
    cfg = {"skim": SKIM, "training_tables": TRAINING}
    summary = _training_table("muons", {"synth": [f, f]}, str(out), cfg, progress=False)
    df = pd.read_parquet(out)
    assert df["gen_pt"].tolist() == [30.0, 20.0] * 2 and df["is_reconstructed"].all()
    assert summary["duplicate_matches"] == 0  # the two reco muons on the pion are fakes, not duplicates

    fakes = pd.read_parquet(tables.fakes_path(out))
    assert list(fakes.columns) == list(tables.FAKE_MUON_TABLE_COLUMNS)
    assert "reco_genPartIdx" not in fakes.columns
    assert _schema(tables.fakes_path(out)) == FAKE_MUON_SCHEMA
    assert fakes["reco_pt"].tolist() == [18.0, 17.0, 22.0, 15.0, 12.0, 9.0] * 2
    assert fakes["event"].tolist() == [20] * 5 + [22] + [20] * 5 + [22]
    assert fakes["file_index"].tolist() == [0] * 6 + [1] * 6 and (fakes["sample"] == "synth").all()
    assert fakes["reco_charge"].tolist()[:6] == [1, -1, -1, 1, 1, -1]
    assert fakes["reco_mediumId"].tolist()[:6] == [False, True, True, True, True, True]
    assert fakes["ctx_n_fakes"].tolist()[:6] == [5] * 5 + [1]
    assert fakes["ctx_n_genjets"].tolist()[:6] == [1] * 5 + [0]
    assert fakes["ctx_genmet_pt"].tolist()[:6] == [9.0] * 5 + [5.0]
    np.testing.assert_allclose(fakes["ctx_nearest_genjet_dr"][:6],
                               [1.0, math.hypot(1.0, 0.1), math.hypot(0.5, 2.0), 0.5, 2.0, conditions.NO_NEIGHBOUR_DR],
                               rtol=1e-6)
    assert fakes["ctx_nearest_genjet_pt"].tolist()[:6] == [40.0] * 5 + [0.0]
    assert summary["fakes"]["n_rows"] == 12 and summary["per_sample"]["synth"]["n_fakes"] == 12
    assert summary["fakes"]["fake_multiplicity"] == {"0": 2, "1": 2, "2": 0, "3": 0, "4": 0, "5": 2}
    assert summary["fakes"]["path"] == str(tables.fakes_path(out))
    assert summary["fakes"]["columns"] == list(tables.FAKE_MUON_TABLE_COLUMNS)


def test_event_table_holds_the_genjet_and_fake_multiplicities(tmp_path):
    """One row per event read (also those without a fake, which no other table has), in reading
    order; its n_fakes are the rows of the fake table of the event."""
    f = str(write_events(tmp_path / "fakes.root", FAKE_MUON_EVENTS))
    out = tmp_path / "training" / "muons.parquet"
    cfg = {"skim": SKIM, "training_tables": TRAINING}
    summary = _training_table("muons", {"synth": [f, f]}, str(out), cfg, progress=False)
    n = len(FAKE_MUON_EVENTS)
    assert tables.events_path(out).name == "muons_events.parquet"
    ev = pd.read_parquet(tables.events_path(out))
    assert list(ev.columns) == list(tables.EVENT_TABLE_COLUMNS) == ["sample", "file_index", "event", "n_genjets",
                                                                    "n_fakes"]
    assert ev["event"].tolist() == [e["event"] for e in FAKE_MUON_EVENTS] * 2
    assert ev["file_index"].tolist() == [0] * n + [1] * n and (ev["sample"] == "synth").all()
    assert ev["n_genjets"].tolist() == [len(e.get("GenJet", [])) for e in FAKE_MUON_EVENTS] * 2
    fakes = pd.read_parquet(tables.fakes_path(out))
    per_event = fakes.groupby(["sample", "file_index", "event"]).size()
    got = ev.set_index(["sample", "file_index", "event"])["n_fakes"]
    assert got[got > 0].to_dict() == per_event.to_dict() and got.sum() == len(fakes)
    assert {str(i): int(c) for i, c in enumerate(np.bincount(ev["n_fakes"]))} == summary["fakes"]["fake_multiplicity"]
    assert summary["events"] == {"path": str(tables.events_path(out)), "n_rows": 2 * n,
                                 "columns": list(tables.EVENT_TABLE_COLUMNS)}


def test_fake_tables_document_their_columns():
    for obj, table, idx in (("jets", tables.FAKE_JET_TABLE_COLUMNS, "genJetIdx"),
                            ("muons", tables.FAKE_MUON_TABLE_COLUMNS, "genPartIdx")):
        coll, spec, _ = tables._RECO[obj]
        reco = [c[5:] for c in table if c.startswith("reco_")]
        assert reco == [f for f in spec if f != idx]
        ctx = ["ctx_n_genjets", "ctx_nearest_genjet_dr", "ctx_nearest_genjet_pt", "ctx_genmet_pt", "ctx_n_fakes"]
        assert list(table) == [*ctx, *(f"reco_{f}" for f in reco), "sample", "event", "file_index"]
        assert all(isinstance(u, str) and d for u, d in table.values())
        assert obj[:-1] in table["ctx_n_fakes"][1]


def test_training_table_file_index_and_empty(hand_file, tmp_path):
    out = tmp_path / "m.parquet"
    cfg = {"skim": SKIM, "training_tables": TRAINING}
    s = _training_table("muons", {"a": [hand_file], "b": [hand_file, hand_file]}, str(out), cfg, progress=False)
    df = pd.read_parquet(out)
    assert s["n_rows"] == 12 and s["per_sample"]["b"]["n_rows"] == 8
    assert df.groupby(["sample", "file_index"]).size().to_dict() == {("a", 0): 4, ("b", 0): 4, ("b", 1): 4}
    tight = copy.deepcopy(cfg)
    tight["training_tables"]["jets"]["gen_pt_min_gev"] = 1000.0
    with pytest.raises(EmptySelectionError, match="jets"):
        _training_table("jets", {"a": [hand_file]}, str(tmp_path / "j.parquet"), tight, progress=False)
    _no_outputs(tmp_path / "j.parquet", tmp_path / "j_fakes.parquet", tmp_path / "j_events.parquet")
    # muons: stale outputs of an earlier run (both files) are removed too
    tight["training_tables"]["muons"]["gen_pt_min_gev"] = 1000.0
    for p in (out, tables.fakes_path(out)):
        p.write_text("stale output of an earlier run")
    with pytest.raises(EmptySelectionError, match="muons"):
        _training_table("muons", {"a": [hand_file]}, str(out), tight, progress=False)
    _no_outputs(out, tmp_path / "m_fakes.parquet")


def test_training_table_missing_branch(hand_file, tmp_path):
    bad = str(write_events(tmp_path / "noiso.root", HAND_EVENTS, drop_muon=("pfRelIso04_all",)))
    out = tmp_path / "m.parquet"
    with pytest.raises(MissingBranchError, match="Muon_pfRelIso04_all"):
        _training_table("muons", {"a": [hand_file, bad]}, str(out),
                            {"skim": SKIM, "training_tables": TRAINING}, progress=False)
    _no_outputs(out, tables.fakes_path(out), tables.events_path(out))


# --------------------------------------------------------------------------------------------
# real CMS NanoAOD
# --------------------------------------------------------------------------------------------
def test_training_tables_on_real_nanoaod(tmp_path):
    real = str(_real_file())
    import uproot

    cfg = {"skim": SKIM, "training_tables": TRAINING}
    with uproot.open(real) as f:
        a = f["Events"].arrays(["GenJet_pt", "GenJet_eta", "GenPart_pdgId", "GenPart_status", "GenPart_pt",
                                "GenPart_eta", "Jet_genJetIdx"])
    n_gj = int(ak.sum((a.GenJet_pt > 15) & (abs(a.GenJet_eta) < 4.7)))
    n_gmu = int(ak.sum((abs(a.GenPart_pdgId) == 13) & (a.GenPart_status == 1) & (a.GenPart_pt > 5)
                       & (abs(a.GenPart_eta) < 2.4)))
    jets = _training_table("jets", {"cms_dy": [real]}, str(tmp_path / "jets.parquet"), cfg, progress=False)
    muons = _training_table("muons", {"cms_dy": [real]}, str(tmp_path / "muons.parquet"), cfg, progress=False)
    assert jets["n_rows"] == n_gj > 0 and muons["n_rows"] == n_gmu > 0
    assert 0.5 < jets["matched_fraction"] <= 1.0
    assert 0.5 < muons["matched_fraction"] <= 1.0
    for name in ("jets", "muons"):
        df = pd.read_parquet(tmp_path / f"{name}.parquet")
        m = df["is_reconstructed"]
        assert np.isfinite(df.loc[m, "reco_pt"]).all() and df.loc[~m, "reco_pt"].isna().all()
        # matched reco objects lie close to their gen object
        assert np.median(np.abs(df.loc[m, "reco_eta"] - df.loc[m, "gen_eta"])) < 0.1
        assert np.median(df.loc[m, "reco_pt"] / df.loc[m, "gen_pt"]) == pytest.approx(1.0, abs=0.2)
    fakes = pd.read_parquet(tmp_path / "jets_fakes.parquet")
    n_fake = int(ak.sum((a.Jet_genJetIdx < 0) | (a.Jet_genJetIdx >= ak.num(a.GenJet_pt))))
    assert len(fakes) == n_fake == jets["fakes"]["n_rows"]

    # muon fakes, per event in plain Python: genPartIdx not pointing to a final-state gen muon
    with uproot.open(real) as f:
        m = f["Events"].arrays(["event", "Muon_pt", "Muon_genPartIdx", "GenPart_pdgId", "GenPart_status"])
    exp_pt, exp_event = [], []
    for ev in m.to_list():
        for pt, idx in zip(ev["Muon_pt"], ev["Muon_genPartIdx"]):
            if not (0 <= idx < len(ev["GenPart_pdgId"]) and abs(ev["GenPart_pdgId"][idx]) == 13
                    and ev["GenPart_status"][idx] == 1):
                exp_pt.append(pt)
                exp_event.append(ev["event"])
    mu_fakes = pd.read_parquet(tmp_path / "muons_fakes.parquet")
    assert list(mu_fakes.columns) == list(tables.FAKE_MUON_TABLE_COLUMNS)
    assert mu_fakes["reco_pt"].tolist() == pytest.approx(exp_pt) and mu_fakes["event"].tolist() == exp_event
    assert len(mu_fakes) == muons["fakes"]["n_rows"] > 0
    for s in (jets, muons):
        mult = {int(k): v for k, v in s["fakes"]["fake_multiplicity"].items()}
        assert sum(mult.values()) == len(m) and sum(k * v for k, v in mult.items()) == s["fakes"]["n_rows"]


def test_skim_on_real_nanoaod(tmp_path):
    real = str(_real_file())
    import uproot

    loose = copy.deepcopy(SKIM)
    loose["muons"].update(pt_min_gev=10.0, rel_iso_max=0.5)
    loose.update(mmumu_min_gev=12.0, mmumu_max_gev=500.0)
    with uproot.open(real) as f:
        t = f["Events"]
        arrays = t.arrays(skim.skim_branches(loose), how=dict)
    mu = io.collection(arrays, "Muon", features.muon_fields(loose))
    evs = []
    for i in range(len(arrays["event"])):
        ms = [{k: float(mu[k][i][j]) for k in ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all")}
              | {"mediumId": bool(mu["mediumId"][i][j])} for j in range(len(mu[i]))]
        evs.append({"event": int(arrays["event"][i]), "Muon": ms, "Jet": [], "MET_pt": 0.0,
                    "genWeight": float(arrays["genWeight"][i])})
    expected = expected_rows(evs, loose)
    pq, cf = str(tmp_path / "dy.parquet"), str(tmp_path / "dy.json")
    sample_cfg = {"role": "background", "xsec_pb": 6077.22}
    if not expected:
        with pytest.raises(EmptySelectionError):
            skim.skim_sample([real], pq, cf, "cms_dy", sample_cfg, loose, LUMI, progress=False)
        _no_outputs(pq, cf)
        return
    flow = skim.skim_sample([real], pq, cf, "cms_dy", sample_cfg, loose, LUMI, progress=False)
    df = pd.read_parquet(pq)
    assert sorted(df["event"].tolist()) == sorted(expected)
    got = df.set_index("event")
    for ev, row in expected.items():
        assert got.loc[ev, "m_mumu"] == pytest.approx(row["m_mumu"], rel=1e-6)
    assert flow["n_events_read"] == len(evs)
    # the real file is a slice of a larger sample: its Runs tree (genEventSumw_, pre-v9 spelling)
    # holds the parent's sum of weights, which is what normalisation must use
    runs_sumw = io.read_runs(real)["genEventSumw"]
    assert flow["sum_genWeight"] == pytest.approx(runs_sumw, rel=1e-9)
    assert runs_sumw > np.asarray(arrays["genWeight"], dtype=np.float64).sum()


def test_ancestor_flight_sums_the_weakly_decaying_chain():
    """B+ -> D0 -> mu: pT/m c tau of both; a copy (B+ -> B+) flies once; a Z mother adds
    nothing; a D0 stored without mass (CMS NanoAOD) gets the PDG mass; the mean vertex is the sum
    of the flights along each ancestor's direction."""
    from pipeline.physics.pdg import CTAU_CM, PDG_MASS_GEV

    # event 0: [B+ copy, B+, D0, mu from D0, Z, mu from Z]; event 1: [D0 massless, mu]
    counts = np.array([6, 2])
    pdg = np.array([521, 521, 421, 13, 23, -13, 421, 13])
    pt = np.array([20.0, 20.0, 12.0, 5.0, 30.0, 40.0, 6.0, 3.0])
    eta = np.array([0.5, 0.5, 0.3, 0.2, 0.0, 1.0, -1.0, -1.1])
    phi = np.array([0.1, 0.1, 0.4, 0.5, 2.0, -1.0, 2.0, 2.1])
    mass = np.array([5.279, 5.279, 1.865, 0.106, 91.2, 0.106, 0.0, 0.106])
    mother = np.array([-1, 0, 1, 2, -1, 4, -1, 0])
    flight, vertex = conditions.ancestor_flight(counts, pdg, pt, eta, phi, mass, mother, np.array([3, 5, 7]))
    lam_b, lam_d = 20.0 / 5.279 * CTAU_CM[521], 12.0 / 1.865 * CTAU_CM[421]
    assert flight[0] == pytest.approx(lam_b + lam_d)
    assert flight[1] == 0.0
    assert flight[2] == pytest.approx(6.0 / PDG_MASS_GEV[421] * CTAU_CM[421])
    assert vertex[0] == pytest.approx([lam_b * np.cos(0.1) + lam_d * np.cos(0.4),
                                       lam_b * np.sin(0.1) + lam_d * np.sin(0.4),
                                       lam_b * np.sinh(0.5) + lam_d * np.sinh(0.3)])
    assert vertex[1].tolist() == [0.0, 0.0, 0.0]


def test_track_impact_parameter_geometry():
    """dxy, dz of a straight track from a displaced vertex, NanoAOD's signs."""
    from pipeline.physics.tracks import track_impact_parameters

    # a vertex along x seen by tracks at phi = +-pi/2 and 0: dxy = -x sin(phi), dz = -x cos(phi) sinh(eta)
    vertex = np.array([[0.1, 0.0, 0.0]] * 3)
    dxy, dz = track_impact_parameters(vertex, np.array([0.0, 0.0, 1.0]), np.array([np.pi / 2, -np.pi / 2, 0.0]))
    assert dxy == pytest.approx([-0.1, 0.1, 0.0], abs=1e-12)
    assert dz == pytest.approx([0.0, 0.0, -0.1 * np.sinh(1.0)], abs=1e-12)
