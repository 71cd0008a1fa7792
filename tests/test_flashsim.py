"""Tests of pipeline.flashsim: training on a toy with known truth, generation, checkpoints, errors.

A synthetic "full simulation" (toy NanoAOD written with io.write_nanoaod) has a known jet
efficiency eff(pT) and Gaussian responses; the training tables are made from it by
pipeline.flashsim.tables.training_table, exactly as in the DAG. Models train for real (Lightning, a few
epochs of small nets) once per module.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import torch
import uproot

from pipeline import io, nanoaod
from pipeline.errors import MissingBranchError, MissingColumnError
from pipeline.flashsim import preprocessing as pp
from pipeline.flashsim import tables
from pipeline.flashsim.conditions import jet_conditions, muon_conditions, needed_branches
from pipeline.flashsim.generate import flash_generate, load_models
from pipeline.flashsim.model import FlashSimModel
from pipeline.flashsim.train import train_object
from pipeline.seeds import is_holdout

N_EVENTS = 1500
PT50, WIDTH = 25.0, 6.0  # toy jet efficiency: 0.98 * Phi-like logistic in pT


def toy_efficiency(pt):
    return 0.98 / (1.0 + np.exp(-(np.asarray(pt) - PT50) / WIDTH))


def _jagged(fields: dict, counts) -> ak.Array:
    return ak.unflatten(ak.zip(fields, depth_limit=1), np.asarray(counts, dtype=np.int64))


def toy_events(n: int, seed: int, first_event: int = 0, drop: tuple[str, ...] = ()) -> dict:
    """Toy NanoAOD branches (contract dtypes): gen jets, two gen muons, reco jets and muons."""
    g = np.random.default_rng(seed)
    n_gj = g.poisson(4, n)
    m = n_gj.sum()
    gj = {"pt": 12 + g.exponential(25, m), "eta": g.uniform(-4.5, 4.5, m), "phi": g.uniform(-np.pi, np.pi, m),
          "mass": g.uniform(1, 15, m), "partonFlavour": g.choice([0, 1, 2, 21, 4, 5], m),
          "hadronFlavour": np.zeros(m)}
    gj["hadronFlavour"] = np.where(np.abs(gj["partonFlavour"]) == 5, 5, np.where(gj["partonFlavour"] == 4, 4, 0))
    # GenPart: two final-state muons + one pion per event
    n_gp = np.full(n, 3)
    k = n_gp.sum()
    pdg = np.tile([13, -13, 211], n)
    gp = {"pt": 5 + g.exponential(30, k), "eta": g.uniform(-2.3, 2.3, k), "phi": g.uniform(-np.pi, np.pi, k),
          "mass": np.where(np.abs(pdg) == 13, 0.10566, 0.1396), "pdgId": pdg, "status": np.ones(k),
          "statusFlags": np.where(np.abs(pdg) == 13, 1 << 0, 0), "genPartIdxMother": -np.ones(k)}
    # reco jets from gen jets with toy efficiency
    rec = g.uniform(size=m) < toy_efficiency(gj["pt"])
    ev_j = np.repeat(np.arange(n), n_gj)
    loc_j = np.concatenate([np.arange(c) for c in n_gj]) if m else np.zeros(0, int)
    rj = {"pt": gj["pt"] * g.normal(1.0, 0.1, m), "eta": gj["eta"] + g.normal(0, 0.02, m),
          "phi": gj["phi"] + g.normal(0, 0.02, m), "mass": gj["mass"] * g.normal(1.0, 0.1, m).clip(0.1),
          "btagDeepFlavB": np.where(np.abs(gj["eta"]) < 2.5, g.beta(1, 5, m), -1.0), "qgl": g.beta(2, 2, m),
          "nConstituents": 1 + g.poisson(10, m), "jetId": g.choice([0, 2, 6], m, p=[0.05, 0.3, 0.65]),
          "hadronFlavour": gj["hadronFlavour"], "genJetIdx": loc_j}
    rj = {f: v[rec] for f, v in rj.items()}
    n_jet = np.bincount(ev_j[rec], minlength=n)
    # reco muons: both gen muons, always reconstructed
    mu = np.abs(pdg) == 13
    ev_p = np.repeat(np.arange(n), n_gp)
    loc_p = np.tile(np.arange(3), n)
    km = mu.sum()
    rm = {"pt": gp["pt"][mu] * g.normal(1.0, 0.02, km), "eta": gp["eta"][mu], "phi": gp["phi"][mu],
          "mass": np.full(km, 0.10566), "charge": -np.sign(pdg[mu]), "pfRelIso04_all": g.exponential(0.05, km),
          "mediumId": np.ones(km, bool), "tightId": g.uniform(size=km) < 0.9, "dxy": g.normal(0, 0.002, km),
          "dz": g.normal(0, 0.004, km), "ip3d": np.abs(g.normal(0, 0.004, km)), "genPartIdx": loc_p[mu]}
    n_mu = np.bincount(ev_p[mu], minlength=n)

    def contract(name, d, counts):
        spec = nanoaod.COLLECTIONS[name]
        return _jagged({f: np.asarray(d[f]).astype(spec[f]) for f in spec}, counts)

    events = {"run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32),
              "event": np.arange(first_event, first_event + n, dtype=np.uint64),
              "genWeight": np.ones(n, np.float32), "GenMET_pt": g.exponential(20, n).astype(np.float32),
              "GenMET_phi": g.uniform(-np.pi, np.pi, n).astype(np.float32), "MET_pt": np.zeros(n, np.float32),
              "MET_phi": np.zeros(n, np.float32), "GenJet": contract("GenJet", gj, n_gj),
              "GenPart": contract("GenPart", gp, n_gp)}
    jets, muons = nanoaod.add_cross_references(contract("Jet", rj, n_jet), contract("Muon", rm, n_mu))
    events["Jet"], events["Muon"] = jets, muons
    for name in drop:
        coll, field = name.split("_", 1)
        events[coll] = events[coll][[f for f in events[coll].fields if f != field]]
    return events


def write_toy(path: Path, n: int, seed: int, first_event: int = 0, drop: tuple[str, ...] = ()) -> str:
    io.write_nanoaod(path, toy_events(n, seed, first_event, drop), list(nanoaod.COLLECTIONS))
    return str(path)


def _cfg(base: dict) -> dict:
    cfg = copy.deepcopy(base)
    fs = cfg["flashsim"]
    for obj in ("jets", "muons"):
        fs[obj].update(flow={"transforms": 2, "bins": 6, "hidden": [32, 32]}, efficiency_hidden=[16],
                       epochs=4, batch_size=128, lr=5e-3)
    fs["fakes"].update(flow={"transforms": 1, "bins": 4, "hidden": [16]}, epochs=1, min_rows=50)
    fs["batch_events"] = 400
    fs["threads"] = 1
    cfg["skim"]["chunk_events"] = 1000
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    d = tmp_path_factory.mktemp("flashsim")
    cfg = _cfg(tiny_config)
    files = [write_toy(d / "toy0.root", N_EVENTS, seed=1), write_toy(d / "toy1.root", 400, seed=2, first_event=10**6)]
    models = {}
    for obj in ("jets", "muons"):
        table = d / f"{obj}.parquet"
        tables.training_table(obj, {"toy": files}, str(table), cfg["training_tables"][obj], cfg["skim"]["chunk_events"],
                              progress=False)
        models[obj] = str(d / f"{obj}.pt")
        train_object(obj, str(table), str(tables.fakes_path(table)), str(tables.events_path(table)), models[obj],
                     cfg["flashsim"], cfg["seed"], cfg["training_tables"][obj], cfg["detector"],
                     work_dir=str(d / "lightning"))
    return {"dir": d, "cfg": cfg, "files": files, "models": models}


# --------------------------------------------------------------------------------------------
def test_preprocessing_round_trip():
    g = np.random.default_rng(0)
    n = 500
    t = pd.DataFrame({"gen_pt": g.uniform(20, 200, n), "gen_eta": g.uniform(-4, 4, n), "gen_phi": g.uniform(-3, 3, n),
                      "gen_mass": g.uniform(0, 20, n), "gen_hadronFlavour": g.choice([0, 4, 5], n)})
    t["reco_pt"] = t.gen_pt * 1.05
    t["reco_eta"] = t.gen_eta + 0.01
    t["reco_phi"] = pp.wrap_phi(t.gen_phi + 3.1)
    t["reco_mass"] = t.gen_mass * 0.9
    t["reco_btagDeepFlavB"] = np.where(np.abs(t.reco_eta) < 2.5, g.uniform(0.001, 0.999, n), -1.0)
    t["reco_qgl"] = np.where(g.uniform(size=n) < 0.2, 1.0, g.uniform(0.001, 0.999, n)).astype(np.float32)
    t["reco_nConstituents"] = g.integers(1, 40, n)
    t["reco_jetId"] = g.choice([0, 2, 6], n)
    x = pp.encode_targets("jets", t, g)
    assert x.dtype == np.float32 and x.shape == (n, len(pp.JET_TARGETS))
    back = pp.decode_targets("jets", x, {k: t[k].to_numpy() for k in ("gen_pt", "gen_eta", "gen_phi", "gen_mass",
                                                                      "gen_hadronFlavour")})
    assert list(back) == [f for f in nanoaod.JET if f != "genJetIdx"]
    for f, v in back.items():
        assert v.dtype == np.dtype(nanoaod.JET[f]), f
    np.testing.assert_array_equal(back["nConstituents"], t.reco_nConstituents)
    np.testing.assert_array_equal(back["jetId"], t.reco_jetId)
    np.testing.assert_array_equal(back["btagDeepFlavB"] < 0, t.reco_btagDeepFlavB < 0)
    np.testing.assert_allclose(back["pt"], t.reco_pt, rtol=1e-4)
    np.testing.assert_allclose(back["phi"], t.reco_phi, atol=1e-4)
    np.testing.assert_allclose(back["qgl"], t.reco_qgl, atol=1e-5)
    np.testing.assert_array_equal(back["qgl"] == 1.0, t.reco_qgl == 1.0)  # saturated scores stay exactly 1
    # muons: iso = 0 is a category, IDs and charge flips are integers
    m = pd.DataFrame({"gen_pt": np.full(4, 30.0), "gen_eta": np.zeros(4), "gen_phi": np.zeros(4),
                      "gen_charge": [1, -1, 1, -1], "reco_pt": np.full(4, 31.0), "reco_eta": np.zeros(4),
                      "reco_phi": np.zeros(4), "reco_charge": [1, 1, 1, -1],
                      "reco_pfRelIso04_all": [0.0, 0.0, 0.2, 1.5], "reco_mediumId": [True, True, False, True],
                      "reco_tightId": [True, False, False, True], "reco_dxy": [0.001, -0.02, 0.0, 0.3],
                      "reco_dz": [-0.01, 0.0, 0.5, 1.0], "reco_ip3d": [0.01, 0.02, 0.5, 1.0],
                      "gen_expected_dxy_cm": [0.0, 0.0, -0.05, 0.2], "gen_expected_dz_cm": [0.0, 0.0, 0.3, -0.4]})
    xm = pp.encode_targets("muons", m, g)
    bm = pp.decode_targets("muons", xm, {k: m[k].to_numpy() for k in ("gen_pt", "gen_eta", "gen_phi", "gen_charge",
                                                                      "gen_expected_dxy_cm", "gen_expected_dz_cm")})
    np.testing.assert_array_equal(bm["pfRelIso04_all"][:2], 0.0)
    np.testing.assert_allclose(bm["pfRelIso04_all"][2:], [0.2, 1.5], rtol=1e-5)
    np.testing.assert_array_equal(bm["charge"], m.reco_charge)
    np.testing.assert_array_equal(bm["mediumId"], m.reco_mediumId)
    np.testing.assert_array_equal(bm["tightId"], m.reco_tightId)
    np.testing.assert_allclose(bm["dxy"], m.reco_dxy, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bm["dz"], m.reco_dz, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bm["ip3d"], m.reco_ip3d, rtol=1e-4, atol=1e-7)
    # IPs in units of 10 um + the expected displacement, signed along the expected one: a prompt
    # muon's 10 um dxy is asinh(1); a non-prompt one at its expected 0.2 cm is asinh(~1) too
    i_dxy = pp.MUON_TARGETS.index("asinh_dxy_rel")
    assert xm[0, i_dxy] == pytest.approx(np.arcsinh(1.0), rel=1e-5)
    assert xm[3, i_dxy] == pytest.approx(np.arcsinh(0.3 / 0.201), rel=1e-5)
    assert xm[2, pp.MUON_TARGETS.index("asinh_dz_rel")] == pytest.approx(np.arcsinh(0.5 / 0.301), rel=1e-5)
    with pytest.raises(MissingColumnError, match="gen_expected_dxy_cm"):
        pp.decode_targets("muons", xm, {k: m[k].to_numpy() for k in ("gen_pt", "gen_eta", "gen_phi", "gen_charge")})


def test_holdout_split_is_a_function_of_the_event_number():
    ev = np.arange(200_000, dtype=np.uint64)
    h = is_holdout(ev, 0.2)
    assert 0.19 < h.mean() < 0.21
    np.testing.assert_array_equal(h, is_holdout(ev.copy(), 0.2))
    assert not (is_holdout(ev, 0.1) & ~h).any()  # nested: a smaller fraction is a subset


def test_conditions_equal_training_table_columns(trained, tmp_path):
    cfg, f = trained["cfg"], trained["files"][0]
    arrays = next(iter(io.iterate_events([f], needed_branches())))[1]
    for obj, builder in (("jets", jet_conditions), ("muons", muon_conditions)):
        tables.training_table(obj, {"toy": [f]}, str(tmp_path / f"{obj}.parquet"), cfg["training_tables"][obj],
                              cfg["skim"]["chunk_events"], progress=False)
        table = pd.read_parquet(tmp_path / f"{obj}.parquet")
        cond = builder(arrays, cfg["training_tables"][obj])
        for col in pp.CONDITION_COLUMNS[obj]:
            np.testing.assert_array_equal(np.asarray(cond[col]), table[col].to_numpy(), err_msg=col)
        np.testing.assert_array_equal(pp.encode_conditions(obj, cond), pp.encode_conditions(obj, table))


def test_training_excludes_held_out_events_and_learns_the_efficiency(trained):
    model = FlashSimModel.load(trained["models"]["jets"])
    cfg = trained["cfg"]
    table = pd.read_parquet(trained["dir"] / "jets.parquet")
    holdout = is_holdout(table["event"].to_numpy(), cfg["flashsim"]["holdout_fraction"])
    assert 0 < holdout.sum() < len(table)
    assert model.meta["holdout_fraction"] == cfg["flashsim"]["holdout_fraction"]
    # efficiency vs pT on held-out rows (never trained on) against the toy's truth
    c = pp.encode_conditions("jets", table[holdout])
    eff = model.efficiency(c)
    pt = table.loc[holdout, "gen_pt"].to_numpy()
    for lo, hi in ((15, 25), (25, 40), (40, 1000)):
        sel = (pt > lo) & (pt < hi)
        assert abs(eff[sel].mean() - toy_efficiency(pt[sel]).mean()) < 0.06, (lo, hi)
    # the flow learned the response (toy: median 1, sigma 10 %)
    x = model.sample(c, torch.Generator().manual_seed(3))
    assert np.median(np.exp(x[:, 0])) == pytest.approx(1.0, abs=0.05)
    assert 0.05 < np.std(x[:, 0]) < 0.2


def test_checkpoint_reloads_identically_in_a_fresh_process(trained, tmp_path):
    path = trained["models"]["jets"]
    table = pd.read_parquet(trained["dir"] / "jets.parquet").head(300)
    c = pp.encode_conditions("jets", table)
    np.save(tmp_path / "c.npy", c)
    code = (
        "import numpy as np, torch\n"
        # the same CPU threads as this process: a matmul's summation order depends on them
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "from pipeline.flashsim.model import FlashSimModel\n"
        f"m = FlashSimModel.load({path!r})\n"
        f"c = np.load({str(tmp_path / 'c.npy')!r})\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, m.sample(c, torch.Generator().manual_seed(7)))\n"
        f"np.save({str(tmp_path / 'e.npy')!r}, m.efficiency(c))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    m = FlashSimModel.load(path)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), m.sample(c, torch.Generator().manual_seed(7)))
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), m.efficiency(c))
    assert not np.array_equal(m.sample(c, torch.Generator().manual_seed(7)), m.sample(c, torch.Generator().manual_seed(8)))


def _flash(trained, tmp_path, name, cfg=None, inputs=None):
    cfg = cfg or trained["cfg"]
    inputs = inputs or trained["files"]
    outs = [str(tmp_path / name / f"chunk{i}.root") for i in range(len(inputs))]
    stats = flash_generate("toy", inputs, outs, list(trained["models"].values()), cfg["flashsim"], cfg["seed"],
                           progress=False)
    return outs, stats


def test_flash_sample_follows_the_contract_and_is_reproducible(trained, tmp_path):
    cfg = trained["cfg"]
    k = cfg["flashsim"]["oversampling_k"]
    outs, stats = _flash(trained, tmp_path, "a")
    outs_b, _ = _flash(trained, tmp_path, "b")
    assert stats["n_flash_events"] == k * stats["n_gen_events"]
    with uproot.open(trained["files"][0]) as fin, uproot.open(outs[0]) as fout:
        tin, tout = fin["Events"], fout["Events"]
        assert tout.num_entries == k * tin.num_entries
        keys = set(tout.keys())
        assert set(nanoaod.all_branches()) <= keys
        for name in nanoaod.reco_branches() + nanoaod.gen_branches():
            base = name[1:] if name.startswith("n") and name[1:] in nanoaod.COLLECTIONS else None
            if base is None and "_" in name and name.split("_")[0] in nanoaod.COLLECTIONS:
                coll, field = name.split("_", 1)
                want = {**nanoaod.COLLECTIONS[coll], **nanoaod.CROSS_REFERENCES.get(coll, {})}[field]
                assert tout[name].array(library="ak").layout.content.dtype == np.dtype(want), name
        # gen content carried over, each event k times, weight / k
        ev_in = tin["event"].array(library="np")
        np.testing.assert_array_equal(tout["event"].array(library="np"), np.repeat(ev_in, k))
        np.testing.assert_allclose(tout["genWeight"].array(library="np"), np.repeat(tin["genWeight"].array(library="np") / k, k))
        assert ak.all(tout["GenJet_pt"].array() == tin["GenJet_pt"].array()[np.repeat(np.arange(len(ev_in)), k)])
        # indices point to gen jets in acceptance; unmatched = fakes
        jets = tout.arrays(["Jet_pt", "Jet_genJetIdx", "nGenJet"])
        gi = jets["Jet_genJetIdx"]
        assert ak.all(gi < jets["nGenJet"])
        assert ak.all(jets["Jet_pt"] >= cfg["detector"]["jets"]["pt_min_gev"])
        assert ak.all(jets["Jet_pt"][:, :-1] >= jets["Jet_pt"][:, 1:])  # sorted by pT
        # the k copies of an event differ (independent samples)
        pt = tout["Jet_pt"].array()
        assert not ak.all(ak.num(pt[0::k]) == ak.num(pt[1::k])) or not ak.all(pt[0::k] == pt[1::k])
    for a, b in zip(outs, outs_b):
        with uproot.open(a) as fa, uproot.open(b) as fb:
            for name in ("Jet_pt", "Jet_btagDeepFlavB", "Muon_pt", "Muon_tightId", "MET_pt"):
                assert ak.all(fa["Events"][name].array() == fb["Events"][name].array()), name
    other = copy.deepcopy(cfg)
    other["seed"] = cfg["seed"] + 1
    outs_c, _ = _flash(trained, tmp_path, "c", cfg=other)
    with uproot.open(outs[0]) as fa, uproot.open(outs_c[0]) as fc:
        assert not np.array_equal(ak.to_numpy(ak.flatten(fa["Events"]["Muon_pt"].array())),
                                  ak.to_numpy(ak.flatten(fc["Events"]["Muon_pt"].array())))


def test_truncated_sampling_redraws_objects_outside_the_acceptance():
    from pipeline.flashsim.generate import _truncated

    meta = {"reco_pt_min_gev": 15.0, "acceptance": {"gen_abs_eta_max": 2.4}}
    g = np.random.default_rng(3)
    calls = []

    def draw(rows):  # pT uniform in [0, 30): half of every draw is below the threshold
        calls.append(len(rows))
        return {"pt": g.uniform(0, 30, len(rows)), "eta": g.uniform(-2, 2, len(rows)), "row": rows.astype(float)}

    for redraws in (0, 1, 20):
        calls.clear()
        v = _truncated("jets", meta, draw, 20000, redraws)
        inside = (v["pt"] >= 15).mean()
        assert inside == pytest.approx(1 - 0.5 ** (redraws + 1), abs=0.01)
        assert len(calls) == min(redraws, 20) + 1 or inside == 1.0
        np.testing.assert_array_equal(v["row"], np.arange(20000))  # redraws replace the same rows
    # above the threshold the redrawn distribution is the truncated one: uniform in [15, 30)
    v = _truncated("jets", meta, draw, 20000, 20)
    assert np.quantile(v["pt"], 0.5) == pytest.approx(22.5, abs=0.3)
    # muons: |eta| is part of the acceptance
    mu = _truncated("muons", meta, lambda rows: {"pt": np.full(len(rows), 50.0), "eta": g.uniform(-3, 3, len(rows))},
                    5000, 20)
    assert np.abs(mu["eta"]).max() < 2.4


def test_redraws_keep_the_objects_the_threshold_would_drop_twice(trained, tmp_path):
    """With redraws the flash jet multiplicity is higher (no object lost at the threshold) and every
    object is inside the acceptance; the same seed gives the same file."""
    counts = {}
    for redraws in (0, 20):
        cfg = copy.deepcopy(trained["cfg"])
        cfg["flashsim"]["acceptance_redraws"] = redraws
        outs, stats = _flash(trained, tmp_path, f"r{redraws}", cfg=cfg, inputs=trained["files"][:1])
        with uproot.open(outs[0]) as f:
            a = f["Events"].arrays(["Jet_pt", "Muon_pt", "Muon_eta"])
        assert ak.all(a.Jet_pt >= cfg["detector"]["jets"]["pt_min_gev"])
        assert ak.all(abs(a.Muon_eta) < cfg["training_tables"]["muons"]["gen_abs_eta_max"])
        counts[redraws] = int(ak.sum(ak.num(a.Jet_pt)))
    assert counts[20] > counts[0]


def test_flash_jet_efficiency_matches_the_toy(trained, tmp_path):
    outs, _ = _flash(trained, tmp_path, "eff", inputs=trained["files"][:1])
    k = trained["cfg"]["flashsim"]["oversampling_k"]
    a = uproot.open(outs[0])["Events"].arrays(["GenJet_pt", "GenJet_eta", "Jet_genJetIdx"])
    gpt = ak.to_numpy(ak.flatten(a.GenJet_pt))
    matched = ak.to_numpy(ak.flatten(ak.zeros_like(a.GenJet_pt, dtype=bool)))
    counts = ak.to_numpy(ak.num(a.GenJet_pt))
    offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gi = a.Jet_genJetIdx
    flat = ak.to_numpy(ak.flatten((gi + offs)[gi >= 0]))
    matched[flat] = True
    sel = gpt > 30  # above the reco threshold's turn-on of the response
    assert matched[sel].mean() == pytest.approx(toy_efficiency(gpt[sel]).mean(), abs=0.05)
    assert len(a) % k == 0


def test_flash_sample_opens_with_coffea(trained, tmp_path):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    outs, _ = _flash(trained, tmp_path, "coffea", inputs=trained["files"][1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root({outs[0]: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    assert len(events) == 400 * trained["cfg"]["flashsim"]["oversampling_k"]
    matched = events.Jet[events.Jet.genJetIdx >= 0]
    assert ak.all(abs(matched.matched_gen.eta - matched.eta) < 0.5)
    assert ak.all(events.Muon.matched_gen.pdgId[events.Muon.genPartIdx >= 0] ** 2 == 169)


def test_real_cms_file_through_flash_generate(trained, tmp_path, nano_dy):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    outs, stats = _flash(trained, tmp_path, "cms", inputs=[str(nano_dy)])
    assert stats["n_gen_events"] == 40
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root({outs[0]: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    assert len(events) == 40 * trained["cfg"]["flashsim"]["oversampling_k"]
    assert ak.sum(ak.num(events.Jet)) > 0
    assert ak.all(events.GenJet.pt == events.GenJet.pt)  # readable gen content
    _ = events.MET.pt, events.Jet.btagDeepFlavB, events.Muon.pfRelIso04_all


def test_missing_gen_branch_is_one_clear_error(trained, tmp_path):
    bad = write_toy(tmp_path / "bad.root", 50, seed=5, drop=("GenJet_hadronFlavour",))
    out = tmp_path / "out" / "chunk0.root"
    with pytest.raises(MissingBranchError, match="GenJet_hadronFlavour") as exc:
        flash_generate("toy", [bad], [str(out)], list(trained["models"].values()), trained["cfg"]["flashsim"],
                       trained["cfg"]["seed"], progress=False)
    assert "bad.root" in str(exc.value) and str(exc.value).count("GenJet_hadronFlavour") == 1
    assert not out.exists()


def test_models_are_keyed_by_the_object_their_checkpoint_stores(trained, tmp_path):
    """flash_generate takes the checkpoints in any order and under any name; two of one object or
    none of another is one clear error."""
    import shutil

    from pipeline.errors import InputFileError

    renamed = {obj: tmp_path / f"model_{i}.pt" for i, obj in enumerate(("muons", "jets"))}
    for obj, path in renamed.items():
        shutil.copy(trained["models"][obj], path)
    models = load_models([renamed["jets"], renamed["muons"]])
    assert sorted(models) == ["jets", "muons"] and all(m.obj == obj for obj, m in models.items())
    with pytest.raises(InputFileError, match="second FlashSim model of jets"):
        load_models([renamed["jets"], trained["models"]["jets"]])
    with pytest.raises(InputFileError, match="no FlashSim model of muons"):
        load_models([renamed["jets"]])


def test_oversampling_repeats_rows_of_rare_conditions_and_rejects_bad_columns():
    """flashsim.<obj>.oversample repeats training rows by condition (p(x | c) unchanged), only
    for boolean condition columns, and the loaders use each validation row once."""
    import pandas as pd
    import torch

    from pipeline.errors import ConfigError
    from pipeline.flashsim.train import _loaders, _oversampling

    table = pd.DataFrame({"gen_fromHadron": [False, True, False, True], "gen_isPrompt": [True, False, True, False],
                          "gen_pt": [10.0, 20.0, 30.0, 40.0]})
    assert _oversampling("muons", table, {}) is None
    reps = _oversampling("muons", table, {"gen_fromHadron": 5})
    assert reps.tolist() == [1, 5, 1, 5]
    with pytest.raises(ConfigError, match="gen_pt.*not a boolean"):
        _oversampling("muons", table, {"gen_pt": 2})
    with pytest.raises(ConfigError, match="'reco_pt' is not a condition column"):
        _oversampling("muons", table, {"reco_pt": 2})
    # 100 rows, every 10th one rare: its rows appear 5x in the training epoch, none in validation twice
    n = 100
    rare = np.arange(n) % 10 == 0
    repeats = np.where(rare, 5, 1)
    ids = torch.arange(n)
    train, valid = _loaders((ids,), 16, 0.2, np.random.default_rng(1), repeats)
    seen = torch.cat([b[0] for b in train]).numpy()
    val_ids = torch.cat([b[0] for b in valid]).numpy()
    assert len(np.unique(val_ids)) == len(val_ids) == 20
    counts = np.bincount(seen, minlength=n)
    train_rows = np.setdiff1d(np.arange(n), val_ids)
    assert np.all(counts[val_ids] == 0)
    # drop_last may cut a few rows from the end of the shuffled epoch: compare with tolerance 1 batch
    assert abs(counts[train_rows].sum() - repeats[train_rows].sum()) < 16
    assert counts[train_rows][rare[train_rows]].mean() > 4 * counts[train_rows][~rare[train_rows]].mean()


def test_categorical_targets_are_generated_by_a_calibrated_classifier():
    """An integer target in ``categorical`` leaves the flow: a classifier on (c, continuous x) gives
    its class, with the frequencies of the truth, including their dependence on the continuous x."""
    from pipeline.flashsim.model import ObjectModule

    g = np.random.default_rng(11)
    n = 6000
    c = g.normal(size=(n, 1)).astype(np.float32)
    x0 = c[:, 0] + 0.3 * g.normal(size=n)
    p_pos, p_neg = np.array([0.02, 0.08, 0.90]), np.array([0.15, 0.25, 0.60])
    cls = np.where(x0 > 0, [g.choice(3, p=p_pos) for _ in range(n)], [g.choice(3, p=p_neg) for _ in range(n)])
    x = np.column_stack([x0, cls + g.uniform(size=n)]).astype(np.float32)
    torch.manual_seed(0)
    module = ObjectModule(2, 1, flow={"transforms": 2, "bins": 6, "hidden": [32, 32]}, efficiency_hidden=[8],
                          categorical={1: 3}, categorical_hidden=[32])
    assert module.cont_idx == [0] and module.flow.x_std.mean.numel() == 1
    module.fit_standardisation(x, c)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    for _ in range(300):
        opt.zero_grad()
        loss = module.nll(xt, ct).mean()
        loss.backward()
        opt.step()
    out = module.sample(ct, torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(out, module.sample(ct, torch.Generator().manual_seed(3)).numpy())
    frac = out[:, 1] - np.floor(out[:, 1])
    assert np.all(frac == 0.5) and set(np.floor(out[:, 1]).astype(int)) <= {0, 1, 2}
    for side, p in ((out[:, 0] > 0, p_pos), (out[:, 0] <= 0, p_neg)):
        freq = np.bincount(np.floor(out[side, 1]).astype(int), minlength=3) / side.sum()
        np.testing.assert_allclose(freq, p, atol=0.04)


def test_categorical_config_names_an_integer_target():
    from pipeline.errors import ConfigError
    from pipeline.flashsim.train import _categorical

    assert _categorical("muons", ["id_ord"]) == {pp.MUON_TARGETS.index("id_ord"): 3}
    with pytest.raises(ConfigError, match="flashsim.muons.categorical: 'log_iso' is not an integer target"):
        _categorical("muons", ["log_iso"])


def test_checkpoint_of_another_encoding_is_one_clear_error(trained, tmp_path):
    from pipeline.errors import InputFileError

    state = torch.load(trained["models"]["muons"], weights_only=False)
    state["meta"]["targets"] = [t.replace("asinh_ip3d", "log_ip3d") for t in state["meta"]["targets"]]
    old = tmp_path / "old_muons.pt"
    torch.save(state, old)
    with pytest.raises(InputFileError, match=r"old_muons.pt: FlashSim muons model was trained with targets .*retrain"):
        FlashSimModel.load(old)


def test_repeated_rows_get_fresh_dequantisation_noise():
    """With ``redraw_x`` the copies of a repeated training row carry their own x (fresh
    dequantisation), the validation rows keep the original one."""
    from pipeline.flashsim.train import _loaders

    n = 50
    base = torch.zeros(n, 1)
    g = np.random.default_rng(0)
    redraws = []

    def redraw_x(rows):
        redraws.append(len(rows))
        return torch.from_numpy(rows[:, None] + g.uniform(0.1, 0.9, size=(len(rows), 1))).float()

    train, valid = _loaders((base, torch.arange(n)), 8, 0.2, np.random.default_rng(2), np.full(n, 3), redraw_x)
    batches = list(train)  # one epoch (each iteration reshuffles)
    x = torch.cat([b[0] for b in batches]).numpy()[:, 0]
    rows = torch.cat([b[1] for b in batches]).numpy()
    assert redraws == [3 * 40]
    assert np.all(np.floor(x) == rows)  # each copy redrawn from its own row
    per_row = [np.unique(x[rows == r]) for r in np.unique(rows)]
    assert all(len(u) == (rows == r).sum() for u, r in zip(per_row, np.unique(rows)))  # copies differ
    assert torch.cat([b[0] for b in valid]).abs().sum() == 0


def test_w1_bootstrap_gives_the_statistical_scale_of_the_standardised_w1():
    from pipeline.flashsim.validate import w1_bootstrap, wasserstein_standardised

    g = np.random.default_rng(4)
    small, large = g.normal(size=1000), g.normal(size=16000)
    assert wasserstein_standardised(large, large) == 0.0
    s_small = w1_bootstrap(small, np.ones(1000), 5, np.random.default_rng(1))
    s_large = w1_bootstrap(large, np.ones(16000), 5, np.random.default_rng(1))
    assert 0 < s_large < s_small and s_small / s_large == pytest.approx(4.0, rel=0.35)  # ~ 1 / sqrt(n)
    assert w1_bootstrap(large, np.ones(16000), 0, np.random.default_rng(1)) == 0.0
    # a second, independent sample of the same distribution lies at about that scale
    other = g.normal(size=16000)
    assert wasserstein_standardised(large, other) < 4 * s_large


def test_generated_columns_stay_inside_the_training_range(trained):
    """A flow is the identity outside its splines: far draws are clipped to the training range
    of each model column (stored in the checkpoint)."""
    m = FlashSimModel.load(trained["models"]["muons"])
    r = np.asarray(m.meta["target_range"])
    assert r.shape == (len(pp.MUON_TARGETS), 2) and np.all(r[:, 0] <= r[:, 1])
    table = pd.read_parquet(trained["dir"] / "muons.parquet")
    c = np.tile(pp.encode_conditions("muons", table.iloc[:50]), (200, 1))
    x = m.sample(c, torch.Generator().manual_seed(0))
    assert np.all(x >= r[:, 0].astype(np.float32)) and np.all(x <= r[:, 1].astype(np.float32))
    m.meta["target_range"] = (r * 0).tolist()  # a degenerate range: everything is clipped onto it
    assert np.all(m.sample(c[:10], torch.Generator().manual_seed(0)) == 0)
