"""Trigger firmware: L1 inputs from NanoAOD, the Lightning MLP, hls4ml C-simulation (real
``compile()``), the generated Verilog simulated with Icarus against the C-simulation, Yosys.

One module-scoped run of the tiny config's model on synthetic NanoAOD files (real ROOT files)
does the expensive parts once (about a minute: two hls4ml compiles, one simulation, one Yosys run).
"""

from __future__ import annotations

import copy
import json
import shutil

import awkward as ak
import numpy as np
import pytest

from pipeline import io
from pipeline.errors import ConfigError, MissingBranchError
from pipeline.trigger import firmware as fw
from pipeline.trigger import inputs as tin
from pipeline.trigger import rtl
from pipeline.trigger.fixed import FixedType
from pipeline.trigger.model import efficiency_at_background, model_cfg, train_model


def write_sample(path, n, seed, signal: bool, first_event=0, drop=()):
    """A NanoAOD file of ``n`` events: signal has harder muons and forward jets."""
    rng = np.random.default_rng(seed)
    n_mu = rng.integers(0, 3, n)
    n_jet = rng.integers(0, 4, n)
    mu_scale, jet_eta = (40.0, 3.5) if signal else (15.0, 2.0)

    def coll(counts, fields):
        tot = int(counts.sum())
        return ak.unflatten(ak.zip({k: f(tot).astype(np.float32) for k, f in fields.items()}), counts)

    muons = coll(n_mu, {"pt": lambda k: 3 + rng.exponential(mu_scale, k), "eta": lambda k: rng.uniform(-2.5, 2.5, k),
                        "phi": lambda k: rng.uniform(-np.pi, np.pi, k)})
    jets = coll(n_jet, {"pt": lambda k: 15 + rng.exponential(30, k), "eta": lambda k: rng.normal(0, jet_eta, k),
                        "phi": lambda k: rng.uniform(-np.pi, np.pi, k)})
    events = {"run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32),
              "event": np.arange(first_event, first_event + n, dtype=np.uint64),
              "genWeight": np.ones(n, np.float32), "MET_pt": rng.exponential(20, n).astype(np.float32),
              "Muon": muons, "Jet": jets}
    for b in drop:
        events.pop(b)
    io.write_nanoaod(path, events, ["Muon", "Jet"])
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_config):
    d = tmp_path_factory.mktemp("trigger")
    cfg = copy.deepcopy(tiny_config)
    # one leading muon and jet (7 inputs) and one precision: a small RTL, so Yosys is quick
    cfg["trigger"]["objects"]["muon"]["n"] = cfg["trigger"]["objects"]["jet"]["n"] = 1
    cfg["trigger"]["hls"]["widths"] = [10]
    files = {"vbf_hmumu": [write_sample(d / "sig.root", 700, 1, True)],
             "dy_mumu": [write_sample(d / "dy.root", 500, 2, False, first_event=10_000)],
             "ttbar_dilep": [write_sample(d / "tt.root", 300, 3, False, first_event=20_000)]}
    cutflows = {}
    for s, norm in zip(files, (0.01, 2.0, 1.0)):
        cutflows[s] = str(d / f"{s}.cutflow.json")
        io.write_json(cutflows[s], {"weight_per_genWeight": norm})
    build = tin.build_inputs(files, cutflows, cfg["samples"], cfg["trigger"], str(d / "inputs.parquet"))
    train = train_model("mlp", str(d / "inputs.parquet"), str(d / "mlp.pt"), cfg["trigger"], cfg["seed"],
                        work_dir=str(d))
    metrics = fw.build_firmware("mlp", str(d / "mlp.pt"), str(d / "inputs.parquet"), str(d / "fw"), cfg["trigger"],
                                cfg["plots"], work_dir=str(d), plots=True)
    return {"dir": d, "cfg": cfg, "files": files, "cutflows": cutflows, "build": build, "train": train,
            "metrics": metrics}


def test_inputs_are_hardware_counts(tiny):
    df = io.read_parquet(tiny["dir"] / "inputs.parquet")
    assert tiny["build"]["n_events"] == 1500 == len(df)
    names = tin.feature_names(tiny["cfg"]["trigger"])
    assert names == ["muon1_pt", "muon1_eta", "muon1_phi", "jet1_pt", "jet1_eta", "jet1_phi", "met_pt"]
    assert all(np.issubdtype(df[c].dtype, np.integer) for c in names)
    # pT in 0.5 GeV counts: a muon above 3 GeV has a count of at least 6; absent muons are 0
    has_mu = df["muon1_pt"] > 0
    assert (df.loc[has_mu, "muon1_pt"] >= 6).all() and (df.loc[~has_mu, "muon1_eta"] == 0).all()
    # weights from the cutflow normalisation, split by event-number hash
    assert np.allclose(df.loc[df["sample"] == "dy_mumu", "weight"], 2.0)
    assert 0.2 < df["is_test"].mean() < 0.6


def test_csim_agrees_with_float_model(tiny):
    """The real hls4ml C-simulation (ap_fixed<10, ...>): its AUC is that of the float model within
    0.01, and it equals the integer emulation bit for bit."""
    m = tiny["metrics"]
    widest = max(m["scan"], key=lambda s: s["width"])
    assert abs(widest["auc_fixed"] - widest["auc_float"]) <= 0.01
    assert all(s["csim_emulation_mismatches"] == 0 for s in m["scan"])
    assert 0.5 < m["auc_float"] <= 1.0
    assert (tiny["dir"] / "fw" / "hls4ml_prj" / "firmware" / "trigger_nn.cpp").exists()


def test_rtl_matches_csim_bit_for_bit(tiny):
    assert shutil.which("iverilog") is not None, ".ci/run installs iverilog (Debian)"
    m = tiny["metrics"]
    assert m["n_test_vectors"] >= 300
    assert m["csim_rtl_mismatches"] == 0
    # at least one register stage per Dense layer (two here), plus the adder-tree stages
    assert 2 <= m["latency_cycles"] <= 20
    v = (tiny["dir"] / "fw" / "rtl" / "trigger_nn.v").read_text()
    assert "module trigger_nn" in v and f"// latency {m['latency_cycles']} cycles" in v


def test_yosys_resources(tiny):
    assert shutil.which("yosys") is not None, ".ci/run installs yosys (Debian)"
    m = tiny["metrics"]
    assert m["luts"] > 0 and m["ffs"] > 0 and m["logic_levels"] > 0
    stat = rtl.parse_yosys_stat((tiny["dir"] / "fw" / "rtl" / "yosys_stat.txt").read_text())
    assert stat["luts"] == m["luts"]
    on_disk = json.loads((tiny["dir"] / "fw" / "metrics.json").read_text())
    for key in ("auc_float", "auc_fixed", "csim_rtl_mismatches", "luts", "ffs", "dsps", "latency_cycles"):
        assert key in on_disk
    assert on_disk["resources"]["multiplications"] > 0


def test_fixed_point_cast_matches_ap_fixed_rules():
    t = FixedType(6, 3, "AP_RND", "AP_SAT")  # LSB 1/8, range [-4, 3.875]
    # 0.0625 = half an LSB rounds up; -0.0625 rounds to 0 (towards +inf); saturation both ends
    assert t.quantize(np.array([0.0625, -0.0625, -0.07, 10.0, -10.0])).tolist() == [1, 0, -1, 31, -32]
    # 3/16 = 1.5 LSB -> 2; -1.5 LSB -> -1 (half towards +inf); 1000/16 saturates
    assert t.cast(np.array([3, -3, 1000]), 4).tolist() == [2, -1, 31]
    w = FixedType(6, 3, "AP_TRN", "AP_WRAP")
    assert w.quantize(np.array([4.0, -0.01])).tolist() == [-32, -1]


def test_efficiency_at_fixed_background():
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5, 0.2, 0.05])
    sig = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    r = efficiency_at_background(score, sig, np.ones(8), 0.25)
    assert r["background_efficiency"] == 0.25 and r["threshold"] == 0.6 and r["signal_efficiency"] == 0.75


def test_missing_branch_is_one_clear_error(tiny, tmp_path):
    bad = write_sample(tmp_path / "bad.root", 50, 4, True, drop=("MET_pt",))
    files = {**tiny["files"], "vbf_hmumu": [bad]}
    with pytest.raises(MissingBranchError, match="MET_pt"):
        tin.build_inputs(files, tiny["cutflows"], tiny["cfg"]["samples"], tiny["cfg"]["trigger"],
                         str(tmp_path / "inputs.parquet"))
    assert not (tmp_path / "inputs.parquet").exists()


def test_unknown_model_is_one_clear_error(tiny):
    with pytest.raises(ConfigError, match="no model 'nope'"):
        model_cfg(tiny["cfg"]["trigger"], "nope")
