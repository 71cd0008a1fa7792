"""pipeline.samples.plots (and the pipeline.plotting helpers it uses).

Two inputs: a synthetic contract file with a known detector response (written here with
pipeline.io.write_nanoaod), and the real CMS NanoAOD file of ../shared/data (skipped if absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from pipeline import nanoaod
from pipeline.errors import ConfigError, MissingBranchError
from pipeline.config import load_config
from pipeline.io import iterate_events, write_nanoaod
from pipeline.samples.plots import BRANCHES, SamplePlotAccumulator, _opts, sample_plots

REAL_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nano_dy.root"
# the shipped laptop config's plots.samples block: the tests use the settings users run
PLOTS_CFG = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")["plots"]["samples"]
EXPECTED_PLOTS = {
    "jet_response_vs_genpt", "jet_resolution_vs_genpt", "jet_response_vs_geneta", "jet_resolution_vs_geneta",
    "muon_response_vs_genpt", "muon_resolution_vs_genpt", "muon_response_vs_geneta",
    "muon_resolution_vs_geneta", "jet_response_distribution", "muon_response_distribution",
    "jet_efficiency_vs_genpt", "jet_purity_vs_pt", "muon_efficiency_vs_genpt", "jet_multiplicity",
    "muon_multiplicity", "btag_by_flavour", "muon_isolation",
}

JET_SCALE, JET_SIGMA = 1.10, 0.10
MU_SCALE, MU_SIGMA = 0.98, 0.02
N_EVENTS = 1500


def _jagged(per_event: list[np.ndarray], dtype) -> ak.Array:
    return ak.values_astype(ak.Array([list(x) for x in per_event]), dtype)


def _collection(spec: dict, fields: dict[str, list]) -> ak.Array:
    return ak.zip({f: _jagged(fields[f], dtype) for f, dtype in spec.items()})


def _write_synthetic(path: Path, n: int = N_EVENTS, seed: int = 5) -> None:
    """Per event: 3 gen jets (jets 0 and 1 reconstructed with a Gaussian response, jet 2 lost) and
    1 fake reco jet; 2 stable gen muons (a prompt one, reconstructed, and a non-prompt one, lost), a
    Z, and 1 unmatched reco muon."""
    rng = np.random.default_rng(seed)
    gj = {f: [] for f in nanoaod.GENJET}
    j = {f: [] for f in nanoaod.JET}
    gp = {f: [] for f in nanoaod.GENPART}
    mu = {f: [] for f in nanoaod.MUON}
    for _ in range(n):
        gpt = np.sort(rng.uniform(20, 390, 3))[::-1]
        geta = rng.uniform(-4.6, 4.6, 3)
        flav = rng.choice([0, 4, 5], 3)
        for f, v in dict(pt=gpt, eta=geta, phi=rng.uniform(-3, 3, 3), mass=np.full(3, 5.0),
                         partonFlavour=flav, hadronFlavour=flav).items():
            gj[f].append(v)
        rpt = np.append(gpt[:2] * rng.normal(JET_SCALE, JET_SIGMA, 2), 18.0)
        btag = np.where(np.append(flav[:2], 0) == 5, 0.9, 0.05)
        for f, v in dict(pt=rpt, eta=np.append(geta[:2], 0.1), phi=np.zeros(3), mass=np.full(3, 5.0),
                         btagDeepFlavB=btag, qgl=np.full(3, 0.5), nConstituents=np.full(3, 10),
                         jetId=np.full(3, 6), hadronFlavour=np.append(flav[:2], 0),
                         genJetIdx=np.array([0, 1, -1])).items():
            j[f].append(v)
        mpt = rng.uniform(6, 190, 2)
        meta = rng.uniform(-2.3, 2.3, 2)
        for f, v in dict(pt=np.append(91.0, mpt), eta=np.append(0.0, meta), phi=np.zeros(3),
                         mass=np.array([91.0, 0.106, 0.106]), pdgId=np.array([23, 13, -13]),
                         status=np.array([62, 1, 1]), statusFlags=np.array([1 << 7, 1, 0]),
                         genPartIdxMother=np.array([-1, 0, -1])).items():
            gp[f].append(v)
        rmpt = np.array([mpt[0] * rng.normal(MU_SCALE, MU_SIGMA), 7.0])
        for f, v in dict(pt=rmpt, eta=np.array([meta[0], 1.0]), phi=np.zeros(2), mass=np.full(2, 0.106),
                         charge=np.array([-1, 1]), pfRelIso04_all=np.array([0.02, 0.6]),
                         mediumId=np.array([True, True]), tightId=np.array([True, False]),
                         dxy=np.zeros(2), dz=np.zeros(2), ip3d=np.zeros(2), genPartIdx=np.array([1, -1])).items():
            mu[f].append(v)
    events = {
        "run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32),
        "event": np.arange(n, dtype=np.uint64), "genWeight": np.ones(n, np.float32),
        "GenMET_pt": np.zeros(n, np.float32), "GenMET_phi": np.zeros(n, np.float32),
        "MET_pt": np.zeros(n, np.float32), "MET_phi": np.zeros(n, np.float32),
        "GenPart": _collection(nanoaod.GENPART, gp), "GenJet": _collection(nanoaod.GENJET, gj),
        "Jet": _collection(nanoaod.JET, j), "Muon": _collection(nanoaod.MUON, mu),
    }
    write_nanoaod(path, events, collections=["GenPart", "GenJet", "Jet", "Muon"])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "sample.root"
    _write_synthetic(path)
    return path


def _check_outputs(paths: list[str], out: Path) -> dict:
    from PIL import Image

    assert {Path(p).stem for p in paths} == EXPECTED_PLOTS
    for p in paths:
        assert Path(p).parent == out and Path(p).suffix == ".png"
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= 1000 and im.height >= 1000
    assert not list(out.glob(".*.tmp")), "atomic writes left temporary files"
    return json.loads((out / "summary.json").read_text())


def test_synthetic_sample_recovers_the_known_response(synthetic, tmp_path):
    out = tmp_path / "plots"
    paths = sample_plots([str(synthetic)], str(out), "synthetic", PLOTS_CFG, progress=False)
    s = _check_outputs(paths, out)
    assert s["n_events"] == N_EVENTS
    c = s["counts"]
    # |eta| < 4.6 gen jets all lie in the regions and in acceptance; 2 of 3 matched
    assert c["gen_jets_in_regions"] == 3 * N_EVENTS and c["gen_jets_matched"] == 2 * N_EVENTS
    assert 1.7 * N_EVENTS < c["reco_jets_matched"] <= 2 * N_EVENTS  # reco pT > 400 GeV leaves the range
    assert c["stable_gen_muons_in_acceptance"] == 2 * N_EVENTS
    assert c["stable_gen_muons_matched"] == N_EVENTS
    assert c["reco_muons_by_origin"] == {"prompt": N_EVENTS, "non-prompt": 0, "unmatched": N_EVENTS}
    assert s["multiplicity_mean"] == {"nJet": 3.0, "nGenJet": 3.0, "nMuon": 2.0, "n_stable_gen_muons": 2.0}

    checked = 0
    for region, prof in s["jet"]["response_vs_genpt"].items():
        for n, r, r_err, res in zip(prof["entries"], prof["response"], prof["response_err"], prof["resolution"],
                                    strict=True):
            if n >= 150:
                checked += 1
                assert r == pytest.approx(JET_SCALE, abs=5 * r_err + 0.005), region
                assert res == pytest.approx(JET_SIGMA / JET_SCALE, rel=0.3), region
            elif n < 10:
                assert r is None  # too few entries: no point, not a zero
    assert checked >= 6
    mu = s["muon"]["response_vs_geneta"]
    good = [r for n, r in zip(mu["entries"], mu["response"], strict=True) if n >= 100]
    assert good and all(abs(r - MU_SCALE) < 0.006 for r in good)
    eff = s["jet"]["efficiency_vs_genpt"]["barrel"]
    tot, pas = np.array(eff["total"]), np.array(eff["passed"])
    assert pas.sum() / tot.sum() == pytest.approx(2 / 3, abs=0.03)
    for e, lo, hi in zip(eff["efficiency"], eff["cp68_low"], eff["cp68_high"], strict=True):
        if e is not None:
            assert lo <= e <= hi
    meff = s["muon"]["efficiency_vs_genpt"]
    assert sum(meff["passed"]) / sum(meff["total"]) == pytest.approx(0.5, abs=0.05)


def test_chunked_filling_equals_one_pass(synthetic):
    """Histograms do not depend on the chunk size (the sample is never read at once)."""
    opts = _opts(PLOTS_CFG)
    results = []
    for step in (N_EVENTS, 97):
        acc = SamplePlotAccumulator(opts)
        for _, chunk in iterate_events([str(synthetic)], BRANCHES, step_size=step):
            acc.fill(chunk)
        results.append(acc)
    assert results[0].n_events == results[1].n_events == N_EVENTS
    for key, h in results[0].h.items():
        np.testing.assert_array_equal(h.values(flow=True), results[1].h[key].values(flow=True), err_msg=key)


@pytest.mark.skipif(not REAL_FILE.exists(), reason=f"real CMS NanoAOD not available ({REAL_FILE} is absent)")
def test_real_cms_nanoaod(tmp_path):
    out = tmp_path / "cms"
    paths = sample_plots([str(REAL_FILE)], str(out), "cms_dy", {**PLOTS_CFG, "min_entries": 3,
                                                                    "chunk_events": 16}, progress=False)
    s = _check_outputs(paths, out)
    assert s["n_events"] == 40
    # cross-check the matching against a direct awkward computation on the whole (small) file
    import uproot

    ev = uproot.open(REAL_FILE)["Events"].arrays(["Jet_genJetIdx", "GenJet_pt", "GenJet_eta", "Muon_genPartIdx",
                                                  "GenPart_pdgId", "GenPart_status", "GenPart_eta", "GenPart_pt"])
    local = ak.local_index(ev.GenJet_pt)
    pairs = ak.cartesian([local, ev.Jet_genJetIdx], nested=True)
    matched = ak.any(pairs["0"] == pairs["1"], axis=-1)
    in_range = (ev.GenJet_pt >= 15) & (ev.GenJet_pt < 400) & (abs(ev.GenJet_eta) < 4.7)
    assert s["counts"]["gen_jets_in_regions"] == ak.sum(in_range)
    assert s["counts"]["gen_jets_matched"] == ak.sum(in_range & matched)
    stable = (abs(ev.GenPart_pdgId) == 13) & (ev.GenPart_status == 1) & (abs(ev.GenPart_eta) < 2.4)
    stable = stable & (ev.GenPart_pt >= 5) & (ev.GenPart_pt < 200)
    assert s["counts"]["stable_gen_muons_in_acceptance"] == ak.sum(stable)
    assert s["counts"]["reco_muons"] == ak.sum(ak.num(ev.Muon_genPartIdx))
    # the real file has a sensible jet response where there are entries
    resp = [r for p in s["jet"]["response_vs_genpt"].values() for r in p["response"] if r is not None]
    assert resp and all(0.5 < r < 1.6 for r in resp)


def test_missing_branch_is_named(tmp_path):
    import uproot

    path = tmp_path / "bad.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"Jet_pt": "var * float32"})
    with pytest.raises(MissingBranchError, match="Jet_genJetIdx.*sample plots"):
        sample_plots([str(path)], str(tmp_path / "out"), "bad", PLOTS_CFG, progress=False)


def test_bad_bins_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="plots.samples.jet_pt_bins_gev"):
        sample_plots([], str(tmp_path), "x", {**PLOTS_CFG, "jet_pt_bins_gev": [30, 20]}, progress=False)
    with pytest.raises(ConfigError, match="plots.samples.eta_bins"):
        sample_plots([], str(tmp_path), "x", {k: v for k, v in PLOTS_CFG.items() if k != "eta_bins"})


# ---- the pipeline.stats and pipeline.plotting helpers behind these numbers ---------------------
def test_binned_profile_matches_exact_quantiles():
    import hist

    from pipeline import stats

    rng = np.random.default_rng(3)
    x = rng.uniform(15, 400, 20000)
    y = rng.normal(1.0, 0.05 + 1 / np.sqrt(x), x.size)
    bins = PLOTS_CFG["jet_pt_bins_gev"]
    h = hist.Hist(hist.axis.Variable(bins), hist.axis.Regular(300, 0, 3))
    h.fill(x, y)
    exact, binned = stats.profile(x, y, bins), stats.profile_from_hist(h)
    np.testing.assert_allclose(binned.center, exact.center, atol=0.005)
    np.testing.assert_allclose(binned.width, exact.width, rtol=0.03)
    np.testing.assert_array_equal(binned.n, exact.n)
    sparse = stats.profile(x[:5], y[:5], bins, min_entries=10)
    assert np.all(np.isnan(sparse.center)) and sparse.to_dict()["response"] == [None] * (len(bins) - 1)


def test_clopper_pearson():
    from scipy.stats import binom

    from pipeline import stats

    lo, hi = stats.clopper_pearson([0, 3, 10, 0], [10, 10, 10, 0])
    assert lo[0] == 0 and hi[2] == 1 and np.isnan(lo[3]) and np.isnan(hi[3])
    # exact interval: P(K >= 3 | lo) = P(K <= 3 | hi) = (1 - 0.6827) / 2
    assert binom.sf(2, 10, lo[1]) == pytest.approx(0.15865, rel=1e-3)
    assert binom.cdf(3, 10, hi[1]) == pytest.approx(0.15865, rel=1e-3)


def test_plot_helpers_refuse_unlabelled_axes(tmp_path):
    import hist

    from pipeline import plotting

    h = hist.Hist(hist.axis.Regular(5, 0, 1))
    with pytest.raises(ValueError, match="xlabel"):
        plotting.plot_hists_with_ratio([h, h], ["a", "b"], 0, xlabel="", ylabel="Events")
    out = plotting.plot_hists_with_ratio([h, h.copy()], ["a", "b"], 0, xlabel="x [GeV]", ylabel="Events",
                                         path=tmp_path / "empty.png", pdf=True)
    assert Path(out).exists() and (tmp_path / "empty.pdf").exists()


def test_stats_do_not_import_matplotlib_and_plotting_leaves_rcparams_alone():
    """Statistics import no drawing code; the plot style is a context (plotting.style), not a
    side effect of importing pipeline.plotting."""
    import subprocess
    import sys

    code = (
        "import sys, matplotlib as mpl\n"
        "import pipeline.stats\n"
        "assert not any(m.startswith(('matplotlib.pyplot', 'mplhep')) for m in sys.modules)\n"
        "before = {k: v for k, v in mpl.rcParams.items() if not k.startswith('backend')}\n"
        "from pipeline import plotting\n"
        "after = {k: v for k, v in mpl.rcParams.items() if not k.startswith('backend')}\n"
        "assert before == after, {k for k in before if before[k] != after[k]}\n"
        "with plotting.style():\n"
        "    assert mpl.rcParams['xtick.direction'] == 'in', mpl.rcParams['xtick.direction']\n"
        "assert {k: v for k, v in mpl.rcParams.items() if not k.startswith('backend')} == before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
