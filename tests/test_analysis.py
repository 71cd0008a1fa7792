"""The Coffea analysis: processor, executors, comparison, pyhf closure, bad inputs.

A small real VBF H->mumu sample is generated once (Pythia8 + the reference detector simulation,
the tiny config's first chunk); the real CMS NanoAOD file (conftest ``nano_dy``) is analysed too.
"""

from __future__ import annotations

import copy
import json

import awkward as ak
import numpy as np
import pytest

from pipeline import features, io, nanoaod, normalisation, skim
from pipeline.analysis import compare, execute, fit, processor
from pipeline.errors import ConfigError, MissingBranchError

SAMPLE = "vbf_hmumu"


@pytest.fixture(scope="module")
def cfg(tiny_config):
    c = copy.deepcopy(tiny_config)
    c["analysis"]["chunk_events"] = 80  # several chunks per file: exercises the merge
    c["analysis"]["use_classifier"] = False
    return c


def run_analysis(files, out, sample, simtype, c, *args, **kwargs):
    """:func:`execute.run_analysis` with the blocks of the whole config ``c``."""
    return execute.run_analysis(files, out, sample, simtype, c["samples"][sample], c["analysis"], c["skim"],
                                c["luminosity_fb"], c["seed"], *args, **kwargs)


@pytest.fixture(scope="module")
def vbf_file(cfg, tmp_path_factory):
    from pipeline.samples.produce import produce_chunk

    path = tmp_path_factory.mktemp("analysis") / "vbf_chunk0.root"
    produce_chunk(SAMPLE, 0, cfg["samples"][SAMPLE], cfg["generation"], cfg["detector"], cfg["seed"], str(path),
                  progress=False)
    return str(path)


@pytest.fixture(scope="module")
def futures_result(cfg, vbf_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("futures") / "full.coffea"
    return run_analysis([vbf_file], str(out), SAMPLE, "full", cfg, progress=False), str(out)


def _independent_selection(path, cfg):
    """Selected events and weights computed with uproot + pipeline.features (no coffea)."""
    arrays = next(iter(io.iterate_events([path], skim.skim_branches(cfg["skim"]), step_size=10**6)))[1]
    cols = features.compute_event_features(io.collection(arrays, "Muon", features.muon_fields(cfg["skim"])),
                                           io.collection(arrays, "Jet", features.jet_fields()),
                                           arrays["MET_pt"], arrays["MET_phi"], cfg["skim"])
    norm = normalisation.sample_normalisation([path], SAMPLE, cfg["samples"][SAMPLE], cfg["luminosity_fb"])["norm"]
    w = ak.to_numpy(arrays["genWeight"]).astype(np.float64) * norm
    return cols, processor.selection(cols, cfg["skim"], cfg["analysis"]), w


def test_cutflow_monotonic_and_histograms_hold_the_selected_weights(cfg, vbf_file, futures_result):
    res, path = futures_result
    assert execute.load_result(path)["yields"] == res["yields"]
    flow = list(res["cutflow"].values())
    assert flow[0]["events"] == res["n_events"] == 200
    assert all(b["events"] <= a["events"] for a, b in zip(flow, flow[1:]))
    assert all(b["sumw"] <= a["sumw"] + 1e-9 for a, b in zip(flow, flow[1:]))
    assert flow[-1]["events"] > 0
    cols, cuts, w = _independent_selection(vbf_file, cfg)
    assert [c for c, _ in cuts] == list(res["cutflow"])
    sel = cuts[-1][1]
    assert flow[-1]["events"] == int(sel.sum())
    assert flow[-1]["sumw"] == pytest.approx(w[sel].sum(), rel=1e-12)
    total = 0.0
    for region, (lo, hi) in processor.regions(cfg["analysis"]).items():
        in_r = sel & (cols["m_mumu"] >= lo) & (cols["m_mumu"] < hi)
        y = res["yields"][region]
        assert y["events"] == int(in_r.sum())
        assert y["sumw"] == pytest.approx(w[in_r].sum(), rel=1e-12, abs=1e-12)
        for var, h in res["hists"].items():  # flow bins included: every selected event is filled once
            assert h[{"region": region}].sum(flow=True).value == pytest.approx(y["sumw"], rel=1e-12, abs=1e-12)
        total += y["sumw"]
    assert total == pytest.approx(flow[-1]["sumw"], rel=1e-12)
    assert res["hists"]["m_mumu"][{"region": "signal"}].sum().value > 0


def test_dask_executor_gives_identical_histograms(cfg, vbf_file, futures_result):
    from distributed import Client, LocalCluster

    res, _ = futures_result
    norm = res["norm"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out, kind = execute.run_processor([vbf_file], SAMPLE, cfg["analysis"], cfg["skim"], cfg["seed"], norm,
                                          client=client, progress=False)
    assert kind == "dask"
    assert out["cutflow"] == res["cutflow"]
    assert set(out["hists"]) == set(res["hists"])
    for var, h in out["hists"].items():
        np.testing.assert_array_equal(h.values(flow=True), res["hists"][var].values(flow=True))
        np.testing.assert_array_equal(h.variances(flow=True), res["hists"][var].variances(flow=True))


def test_processor_runs_on_real_cms_nanoaod(cfg, nano_dy, tmp_path):
    c = copy.deepcopy(cfg)
    c["samples"] = {"cms_dy": {"files": [str(nano_dy)], "role": "background", "xsec_pb": 6077.22}}
    res = run_analysis([str(nano_dy)], str(tmp_path / "dy.coffea"), "cms_dy", "full", c, progress=False)
    flow = list(res["cutflow"].values())
    assert flow[0]["events"] == res["n_events"] == 40
    assert flow[1]["events"] > 0  # real DY: events with two selected muons
    assert all(b["events"] <= a["events"] for a, b in zip(flow, flow[1:]))
    assert res["norm"] == pytest.approx(6077.22 * 1000 * c["luminosity_fb"] / res["sum_genWeight"])


def _toy_model(path, features_used):
    """A TorchScript scorer following the classifier contract: raw columns (NaN allowed) -> [0, 1]."""
    import torch

    class Toy(torch.nn.Module):
        def forward(self, x):
            x = torch.nan_to_num(x, nan=0.0)
            return torch.sigmoid(x[:, 0] / 1000.0 + x[:, 1] - 4.0)

    torch.jit.script(Toy()).save(str(path))
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps({"features": features_used, "threshold_eff50": 0.5}))
    return str(path), str(meta)


def test_classifier_score_histogram(cfg, vbf_file, tmp_path, futures_result):
    model, meta = _toy_model(tmp_path / "model.pt", ["m_jj", "delta_eta_jj"])
    c = copy.deepcopy(cfg)
    c["analysis"]["use_classifier"] = True
    c["analysis"]["histograms"] = {v: cfg["analysis"]["histograms"][v] for v in ("m_mumu", "score")}
    res = run_analysis([vbf_file], str(tmp_path / "s.coffea"), SAMPLE, "full", c, model, meta, progress=False)
    assert res["with_score"] and "score" in res["hists"]
    cols, cuts, w = _independent_selection(vbf_file, cfg)
    sel = cuts[-1][1] & (cols["m_mumu"] >= 115) & (cols["m_mumu"] < 135)
    expected = 1 / (1 + np.exp(-(cols["m_jj"][sel] / 1000.0 + cols["delta_eta_jj"][sel] - 4.0)))
    h = res["hists"]["score"][{"region": "signal"}]
    ref, _ = np.histogram(expected, bins=h.axes[0].edges, weights=w[sel])
    np.testing.assert_allclose(h.values(), ref, rtol=1e-5, atol=1e-9)
    assert "score" not in futures_result[0]["hists"]


def _templates(sig, bkg, rel_err=0.05):
    sig, bkg = np.asarray(sig, float), np.asarray(bkg, float)
    return {"signal": [sig, (rel_err * sig) ** 2], "background": [bkg, (rel_err * bkg) ** 2],
            "edges": np.linspace(0, 1, len(sig) + 1)}


def test_pyhf_closure_identical_and_shifted_inputs():
    t = _templates([1, 2, 5, 10], [100, 50, 20, 5])
    out = fit.closure(t, copy.deepcopy(t))
    assert out["full"]["expected_significance"] == pytest.approx(out["flash"]["expected_significance"], rel=1e-9)
    assert out["full"]["expected_significance"] > 1.0
    assert out["full"]["expected_significance"] <= out["full"]["expected_significance_stat_only"] + 1e-6
    assert 0 < out["full"]["mu_uncertainty"] < 1.0
    lo, hi = out["full"]["mu_interval"]
    assert lo < 1.0 < hi and not out["full"]["mu_interval_at_bound"]
    # a well-constrained model is near-Gaussian: the profile width agrees with HESSE's
    assert out["full"]["mu_uncertainty"] == pytest.approx(out["full"]["mu_uncertainty_hesse"], rel=0.1)
    for c in out["cross"].values():
        assert c["mu"] == pytest.approx(1.0, abs=1e-3)
    # flash with 30 % more signal: the full model fitted to flash's Asimov data finds mu ~ 1.3
    shifted = _templates([1.3, 2.6, 6.5, 13], [100, 50, 20, 5])
    out = fit.closure(t, shifted)
    assert out["cross"]["full_model_on_flash_asimov"]["mu"] == pytest.approx(1.3, abs=0.05)
    assert out["flash"]["expected_significance"] > out["full"]["expected_significance"]


def test_flash_mc_stat_equal_statistics_and_oversampled(cfg, vbf_file):
    """The two flash MC-statistics conventions of pipeline.analysis.fit.templates on k copies of
    each event: all copies selected, both give the single sample's variance; one copy of k
    selected (the reco randomness averaged), the per-event variance is (w/k)^2 and the
    equal-statistics one k (w/k)^2 = w^2 / k, a sample of the full size's expectation."""
    cols, _, w = _independent_selection(vbf_file, cfg)
    ids = np.arange(len(w))
    k = 4
    roles = {"s": "signal", "b": "background"}

    def result(cols_, w_, ids_):
        return processor.process_columns(cols_, w_, cfg["skim"], cfg["analysis"], event_ids=ids_)

    one = result(cols, w, ids)
    rep = {c: np.repeat(v, k) for c, v in cols.items()}
    all_copies = result(rep, np.repeat(w / k, k), np.repeat(ids, k))
    single = fit.templates({"s": one, "b": one}, roles, "m_mumu")
    for mode in fit.MC_STAT:
        t = fit.templates({"s": all_copies, "b": all_copies}, roles, "m_mumu", mc_stat=mode, copies=k)
        np.testing.assert_allclose(t["background"][0], single["background"][0], rtol=1e-9)
        np.testing.assert_allclose(t["background"][1], single["background"][1], rtol=1e-9)
    first_only = result(cols, w / k, ids)  # one copy of k passes, weight w / k
    ev = fit.templates({"s": first_only, "b": first_only}, roles, "m_mumu", mc_stat="events", copies=k)
    eq = fit.templates({"s": first_only, "b": first_only}, roles, "m_mumu", mc_stat="equal_statistics", copies=k)
    np.testing.assert_allclose(ev["background"][1], single["background"][1] / k**2, rtol=1e-9)
    np.testing.assert_allclose(eq["background"][1], single["background"][1] / k, rtol=1e-9)
    with pytest.raises(ValueError, match="mc_stat"):
        fit.templates({"s": one, "b": one}, roles, "m_mumu", mc_stat="other")


def test_closure_reports_the_oversampled_flash_model():
    t = _templates([1, 2, 5, 10], [100, 50, 20, 5], rel_err=0.2)
    precise = _templates([1, 2, 5, 10], [100, 50, 20, 5], rel_err=0.05)  # smaller MC uncertainty
    out = fit.closure(t, copy.deepcopy(t), flash_oversampled=precise)
    assert out["significance_relative_difference"] == pytest.approx(0.0, abs=1e-9)
    o = out["flash_oversampled"]
    assert o["expected_significance"] > out["flash"]["expected_significance"]
    assert o["significance_relative_difference"] > 0
    assert o["background_mc_stat_error"] < out["flash"]["background_mc_stat_error"]


def test_compare_writes_yields_and_plots(cfg, vbf_file, futures_result, tmp_path):
    res, full_path = futures_result
    flash_path = tmp_path / "flash.coffea"
    few = copy.deepcopy(cfg)  # fewer histograms: the comparison plots those both outputs have
    few["analysis"]["histograms"] = {v: cfg["analysis"]["histograms"][v] for v in ("m_mumu", "m_jj")}
    run_analysis([vbf_file], str(flash_path), SAMPLE, "flash", few, progress=False)
    plots, yj, cj = tmp_path / "plots", tmp_path / "yields.json", tmp_path / "comparison.json"
    compare.compare({SAMPLE: full_path}, {SAMPLE: str(flash_path)}, str(plots), str(yj), str(cj))
    yields = json.loads(yj.read_text())
    assert set(yields) == {SAMPLE}
    assert set(yields[SAMPLE]) == set(cfg["analysis"]["regions"])
    for region, v in yields[SAMPLE].items():
        assert set(v) == {"full", "flash"}
        assert v["full"] == pytest.approx([res["yields"][region]["sumw"], res["yields"][region]["sumw2"] ** 0.5])
        assert v["full"] == v["flash"]  # same events analysed twice
    chi2 = json.loads(cj.read_text())["chi2"][SAMPLE]
    assert all(c["chi2"] == 0.0 for c in chi2.values())
    assert set(chi2) == {"m_mumu", "m_jj"}
    assert sorted(p.name for p in (plots / SAMPLE).glob("*.png")) == ["m_jj.png", "m_mumu.png"]


def test_missing_branch_is_one_clear_error(cfg, vbf_file, tmp_path):
    import uproot

    with uproot.open(vbf_file) as f:
        arrays = f["Events"].arrays(library="ak", how=dict)
    events = {k: ak.to_numpy(v) for k, v in arrays.items() if not k.startswith(("Jet_", "Muon_", "Gen", "nGen",
                                                                                   "nJet", "nMuon"))}
    events["Jet"] = io.collection(arrays, "Jet", list(nanoaod.JET))
    events["Muon"] = io.collection(arrays, "Muon", [f for f in nanoaod.MUON if f != "pfRelIso04_all"])
    bad = tmp_path / "no_iso.root"
    io.write_nanoaod(bad, events, collections=["Jet", "Muon"])
    out = tmp_path / "bad.coffea"
    with pytest.raises(MissingBranchError, match="Muon_pfRelIso04_all"):
        run_analysis([str(bad)], str(out), SAMPLE, "full", cfg, progress=False)
    assert not out.exists()


def test_bad_config_values(cfg):
    a = copy.deepcopy(cfg["analysis"])
    a["regions"] = {"signal": [135, 115]}
    with pytest.raises(ConfigError, match="analysis.regions.signal"):
        processor.regions(a)
    a = copy.deepcopy(cfg["analysis"])
    a["histograms"] = {"not_a_column": {"bins": 3, "lo": 0, "hi": 1}}
    with pytest.raises(ConfigError, match="not_a_column"):
        processor.histogram_axes(a)


def test_flash_copies_count_once_in_the_yield_errors(cfg, vbf_file):
    """k copies of an event (same event number, weight w/k) give the same yield as the event, and
    the same per-event variance (sumw2_events), while the per-entry sumw2 is k times smaller."""
    cols, _, w = _independent_selection(vbf_file, cfg)
    ids = np.arange(len(w))
    one = processor.process_columns(cols, w, cfg["skim"], cfg["analysis"], event_ids=ids)
    k = 3
    rep = {c: np.repeat(v, k) for c, v in cols.items()}
    copies = processor.process_columns(rep, np.repeat(w / k, k), cfg["skim"], cfg["analysis"],
                                       event_ids=np.repeat(ids, k))
    y1, yk = one["yields"]["signal"], copies["yields"]["signal"]
    assert y1["events"] > 0 and yk["events"] == k * y1["events"]
    assert yk["sumw"] == pytest.approx(y1["sumw"], rel=1e-12)
    assert yk["sumw2_events"] == pytest.approx(y1["sumw2_events"], rel=1e-12) == pytest.approx(y1["sumw2"])
    assert yk["sumw2"] == pytest.approx(y1["sumw2"] / k, rel=1e-12)


def _bootstrap_cfg(cfg, replicas=40):
    c = copy.deepcopy(cfg)
    c["analysis"]["fit"]["variable"] = "m_mumu"
    c["analysis"]["fit"]["rebin"] = 1
    c["analysis"]["bootstrap"] = {"replicas": replicas}
    return c


def test_bootstrap_replicas_resample_generator_events(cfg, vbf_file):
    """Poisson(1) weights per event number: k FlashSim copies of an event (weight w/k) fill the
    replicas exactly as the event does; the replicas scatter around the nominal yield by about
    its statistical error; another sample name (salt) gives other replicas."""
    c = _bootstrap_cfg(cfg)
    cols, _, w = _independent_selection(vbf_file, c)
    ids = np.arange(len(w), dtype=np.uint64) + 7
    salts = execute.bootstrap_salts(c["analysis"], c["seed"], SAMPLE)
    assert len(salts) == 40 and len(set(salts)) == 40
    one = processor.process_columns(cols, w, c["skim"], c["analysis"], event_ids=ids, bootstrap_salts=salts)
    k = 3
    rep = {n: np.repeat(v, k) for n, v in cols.items()}
    copies = processor.process_columns(rep, np.repeat(w / k, k), c["skim"], c["analysis"],
                                       event_ids=np.repeat(ids, k), bootstrap_salts=salts)
    b1, bk = one["bootstrap"]["m_mumu"], copies["bootstrap"]["m_mumu"]
    np.testing.assert_allclose(bk.values(flow=True), b1.values(flow=True), rtol=1e-12)
    per_replica = np.asarray(b1[{"region": "signal"}].values(flow=True)).sum(axis=-1)
    y = one["yields"]["signal"]
    assert y["events"] > 50
    assert not np.allclose(per_replica, per_replica[0])
    assert abs(per_replica.mean() - y["sumw"]) < 4 * y["sumw2"] ** 0.5 / np.sqrt(len(salts))
    assert 0.6 < per_replica.std(ddof=1) / y["sumw2"] ** 0.5 < 1.5
    other_salts = execute.bootstrap_salts(c["analysis"], c["seed"], "another_sample")
    other = processor.process_columns(cols, w, c["skim"], c["analysis"], event_ids=ids, bootstrap_salts=other_salts)
    assert not np.allclose(other["bootstrap"]["m_mumu"].values(), b1.values())
    # without the classifier a score fit has no bootstrap histogram to fill
    assert execute.bootstrap_salts(cfg["analysis"], cfg["seed"], SAMPLE, with_score=False) == []


def test_bootstrap_closure_uncertainty(cfg, vbf_file):
    """Identical simulations differ by exactly 0 in every replica; a flash that loses 20 % of the
    background events differs by about -20 % in yield, with a spread from the events it lost."""
    c = _bootstrap_cfg(cfg, replicas=20)
    cols, sel, w = _independent_selection(vbf_file, c)
    ids = np.arange(len(w), dtype=np.uint64)
    salts = execute.bootstrap_salts(c["analysis"], c["seed"], SAMPLE)
    roles = {"s": "signal", "b": "background"}

    def result(weights):
        return processor.process_columns(cols, weights, c["skim"], c["analysis"], event_ids=ids, bootstrap_salts=salts)

    full = {"s": result(w * 0.01), "b": result(w)}
    tf = fit.templates(full, roles, "m_mumu", rebin=8)  # 5 bins of 8 GeV: none emptied by a replica
    keep = fit.common_bins(tf)
    same = fit.bootstrap_closure(full, full, roles, "m_mumu", 8, keep, copies=1)
    assert same["replicas"] == 20 and same["used"] == 20
    for key in ("significance", "stat_only_significance", "background_yield"):
        assert same[f"{key}_relative_difference"]["mean"] == pytest.approx(0.0, abs=1e-9)
        assert same[f"{key}_relative_difference"]["std"] == pytest.approx(0.0, abs=1e-9)
    lose = np.random.default_rng(3).random(len(w)) < 0.2
    flash = {"s": full["s"], "b": result(np.where(lose, 0.0, w))}
    diff = fit.bootstrap_closure(full, flash, roles, "m_mumu", 8, keep, copies=1)
    assert diff["used"] == 20 and diff["mean_bins_used"] > keep.sum() - 0.5
    b = diff["background_yield_relative_difference"]
    assert -0.3 < b["mean"] < -0.1 and 0.0 < b["std"] < 0.1
    assert diff["stat_only_significance_relative_difference"]["mean"] > 0  # less background, more significance


def test_yields_table_paired_error(cfg, vbf_file):
    """The paired error of flash - full is 0 for the same events analysed twice and about the
    lost yield's error for a flash that loses events; the quadrature error is not."""
    c = _bootstrap_cfg(cfg, replicas=30)
    cols, _, w = _independent_selection(vbf_file, c)
    ids = np.arange(len(w), dtype=np.uint64)
    salts = execute.bootstrap_salts(c["analysis"], c["seed"], SAMPLE)
    res = processor.process_columns(cols, w, c["skim"], c["analysis"], event_ids=ids, bootstrap_salts=salts)
    table = compare.yields_table({SAMPLE: {"full": res, "flash": res}})
    for v in table[SAMPLE].values():
        assert v["difference_error_paired"] == pytest.approx(0.0, abs=1e-12)
    assert table[SAMPLE]["signal"]["full"][1] > 0
    lose = np.random.default_rng(5).random(len(w)) < 0.3
    less = processor.process_columns(cols, np.where(lose, 0.0, w), c["skim"], c["analysis"], event_ids=ids,
                                     bootstrap_salts=salts)
    t2 = compare.yields_table({SAMPLE: {"full": res, "flash": less}})[SAMPLE]["signal"]
    selected = processor.selection(cols, c["skim"], c["analysis"])[-1][1]
    lost = lose & selected & (cols["m_mumu"] >= 115) & (cols["m_mumu"] < 135)
    lost_err = float(np.sqrt(np.sum(w[lost] ** 2)))
    assert 0.5 * lost_err < t2["difference_error_paired"] < 1.6 * lost_err
    assert t2["difference_error_paired"] < np.hypot(t2["full"][1], t2["flash"][1])
    pulls = compare.yields_agreement({SAMPLE: {"signal": t2}}, paired=True)
    assert pulls[SAMPLE]["signal"] < 0


def test_pulls_total():
    table = {"a": {"r1": {"full": [10.0, 3.0], "flash": [14.0, 4.0]}, "r2": {"full": [0.0, 0.0], "flash": [0.0, 0.0]}},
             "b": {"r1": {"full": [5.0, 1.0], "flash": [5.0, 1.0]}}}
    t = compare.pulls_total(table)
    assert t["ndf"] == 2 and t["chi2"] == pytest.approx((4 / 5) ** 2)
    assert t["max_abs_pull"] == pytest.approx(0.8)
    assert t["p_value"] == pytest.approx(np.exp(-0.64 / 2))  # chi2 with 2 dof: sf = exp(-x/2)
