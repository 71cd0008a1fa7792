"""End to end: config/tiny.yaml through Snakemake, as a user runs it, then the outputs checked.

The DAG runs once per test session in a temporary working directory (module fixture), with
two cores, exactly as `snakemake --profile profiles/laptop --configfile config/tiny.yaml` would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def _snakemake(repo: Path, workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--profile", str(repo / "profiles" / "laptop"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_run(tiny_dag_run):
    """The session's one local run of config/tiny.yaml (tests/conftest.py), shared with other tests."""
    return tiny_dag_run


def test_every_output_exists(tiny_run):
    workdir, cfg, elapsed = tiny_run
    for sample, scfg in cfg["samples"].items():
        chunks = sorted((workdir / "results" / "samples" / sample).glob("chunk*.root"))
        assert len(chunks) == -(-scfg["n_events"] // scfg["events_per_chunk"])
        assert (workdir / "results" / "skims" / f"{sample}.parquet").exists()
        assert (workdir / "results" / "skims" / f"{sample}.cutflow.json").exists()
        pngs = list((workdir / "results" / "plots" / "samples" / sample).glob("*.png"))
        assert len(pngs) >= 5, pngs
        assert (workdir / "results" / "logs" / "skim" / f"{sample}.log").stat().st_size > 0
        assert (workdir / "results" / "benchmarks" / "rules" / "skim" / f"{sample}.tsv").exists()
    for obj in ("jets", "muons"):
        assert (workdir / "results" / "training" / f"{obj}.parquet").exists()
    assert not list((workdir / "results").rglob("*.tmp")), "temporary files left behind"


def test_samples_open_with_coffea_without_warnings_and_matching_works(tiny_run):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    workdir, cfg, _ = tiny_run
    path = workdir / "results" / "samples" / "ttbar_dilep" / "chunk0.root"
    import uproot

    branches = set(uproot.open(path)["Events"].keys())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    assert len(events) == cfg["samples"]["ttbar_dilep"]["n_events"]
    # coffea warns about every cross-reference it knows whose index branch is absent, also for
    # collections the file does not have (a real CMS file warns too). Ours must be complete for
    # every pair of collections the file holds: each warning must involve a collection that is absent.
    for w in caught:
        msg = str(w.message)
        assert msg.startswith("Missing cross-reference index for "), msg
        indexer, target = msg.split(" for ")[1].split(" => ")
        source = indexer.split("_")[0]
        assert f"n{source}" not in branches or f"n{target}" not in branches, f"{path.name}: {msg}"
    # the cross-references that are there work: a muon's jet is within dR 0.4
    mu_in_jet = events.Muon[events.Muon.jetIdx >= 0]
    assert ak.all(mu_in_jet.delta_r(mu_in_jet.matched_jet) < 0.4)

    jets = events.Jet[events.Jet.genJetIdx >= 0]
    gen = jets.matched_gen
    dr = jets.delta_r(gen)
    assert ak.count(dr) > 100
    assert ak.all(dr < 0.4), "a reco jet points to a gen jet farther than dR = 0.4"
    # the partner is the GenJet at the stored index
    assert ak.all(gen.pt == events.GenJet.pt[jets.genJetIdx])

    muons = events.Muon[events.Muon.genPartIdx >= 0]
    gmu = muons.matched_gen
    assert ak.count(gmu.pt) > 50
    assert ak.all(abs(gmu.pdgId) == 13)
    assert ak.all(gmu.status == 1)
    assert ak.all(muons.delta_r(gmu) < 0.1)
    # charge agrees with the partner's pdgId (mu- is +13) for nearly all muons (charge flips are rare)
    agree = ak.mean(muons.charge == -np.sign(gmu.pdgId))
    assert agree > 0.97


def test_skims_are_normalised_and_consistent_with_cutflow(tiny_run):
    workdir, cfg, _ = tiny_run
    from pipeline.io import read_runs

    for sample in cfg["samples"]:
        df = pd.read_parquet(workdir / "results" / "skims" / f"{sample}.parquet")
        flow = json.loads((workdir / "results" / "skims" / f"{sample}.cutflow.json").read_text())
        assert len(df) > 0
        for col in ("m_mumu", "pt_mumu", "weight", "event", "genWeight"):
            assert col in df.columns
        assert df["m_mumu"].between(cfg["skim"]["mmumu_min_gev"], cfg["skim"]["mmumu_max_gev"]).all()
        # normalisation: weight = genWeight * xsec * lumi / sumw
        files = sorted((workdir / "results" / "samples" / sample).glob("chunk*.root"))
        runs = [read_runs(f) for f in files]
        sumw = sum(r["genEventSumw"] for r in runs)
        # each chunk has its own Pythia8 estimate of the cross-section: the skim averages them
        # weighted by each chunk's sum of weights
        xsec = sum(r["xsec_pb"] * r["genEventSumw"] for r in runs) / sumw
        expected = df["genWeight"] * xsec * 1000.0 * cfg["luminosity_fb"] / sumw
        np.testing.assert_allclose(df["weight"], expected, rtol=1e-5)
        assert json.dumps(flow).count(str(len(df))) >= 1  # the last cutflow step counts the rows


def test_mlflow_runs_carry_provenance(tiny_run):
    import mlflow

    workdir, cfg, _ = tiny_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/results/mlflow.db")
    exp = client.get_experiment_by_name(cfg["mlflow"].get("experiment_prefix", "") + "samples")
    runs = client.search_runs([exp.experiment_id])
    n_chunks = sum(-(-s["n_events"] // s["events_per_chunk"]) for s in cfg["samples"].values())
    assert len(runs) == n_chunks
    from pipeline.config import config_sha256

    for run in runs:
        tags = run.data.tags
        for key in ("git_commit", "git_dirty", "config_sha256", "snakemake_rule", "seed",
                    "wildcard.sample", "wildcard.chunk"):
            assert key in tags, (key, tags)
        assert tags["snakemake_rule"] == "generate_sample"
        assert tags["config_sha256"] == config_sha256(cfg)
        # the DAG ran in a temporary directory: the commit is the code's, not "unknown"
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]), tags["git_commit"]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["n_events"] > 0


def test_same_seed_same_samples(tiny_run, tmp_path, repo):
    """A chunk regenerated from the same config is bit-identical in every branch."""
    import uproot

    workdir, cfg, _ = tiny_run
    ref = workdir / "results" / "samples" / "dy_mumu" / "chunk0.root"
    again = tmp_path / "again.root"
    from pipeline.samples.produce import produce_chunk

    produce_chunk("dy_mumu", 0, cfg["samples"]["dy_mumu"], cfg["generation"], cfg["detector"], cfg["seed"],
                  str(again), progress=False)
    a = uproot.open(ref)["Events"].arrays(library="ak")
    b = uproot.open(again)["Events"].arrays(library="ak")
    assert a.fields == b.fields
    for field in a.fields:
        assert ak.all(a[field] == b[field]), field


def test_tiny_dag_is_fast(tiny_run):
    _, _, elapsed = tiny_run
    assert elapsed < 600, f"tiny DAG took {elapsed:.0f} s (budget 600 s: 45 jobs incl. hls4ml compile and Yosys)"


def test_rerun_is_a_no_op(tiny_run, repo):
    workdir, _, _ = tiny_run
    proc = _snakemake(repo, workdir, "--configfile", str(repo / "config" / "tiny.yaml"), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_external_real_cms_sample_runs_through_the_dag(tmp_path, repo, nano_dy, laptop_config):
    """A sample listing a real CMS NanoAOD file is skimmed, plotted and enters the training tables."""
    cfg = {
        "base": str(repo / "config" / "tiny.yaml"),
        "samples": {
            "vbf_hmumu": {"process": "vbf_hmumu", "role": "signal", "n_events": 60, "events_per_chunk": 60},
            "cms_dy": {"files": [str(nano_dy)], "role": "background", "xsec_pb": 6077.22},
        },
        "skim": {"muons": {"pt_min_gev": 5.0, "rel_iso_max": 10.0}, "mmumu_min_gev": 0.0},
        "training_tables": {"samples": ["vbf_hmumu", "cms_dy"]},
        "flashsim": {"validation": {"samples": ["vbf_hmumu"]}},
        "trigger": {"samples": ["vbf_hmumu", "cms_dy"]},
    }
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # the targets of the external sample: skim, plots, training tables, its flash version
    targets = ["results/skims/cms_dy.parquet", "results/plots/samples/cms_dy/summary.json",
               "results/training/jets.parquet", "results/flashsim/cms_dy/chunk0.root"]
    proc = _snakemake(repo, tmp_path, *targets, "--configfile", str(path), check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        # The only acceptable failure on 40 real events is an empty preselection, said clearly.
        assert "cms_dy" in out and "no event" in out.lower(), out[-4000:]
    else:
        assert (tmp_path / "results" / "plots" / "samples" / "cms_dy" / "summary.json").exists()
        jets = pd.read_parquet(tmp_path / "results" / "training" / "jets.parquet")
        assert set(jets["sample"]) == {"vbf_hmumu", "cms_dy"}
        real = jets[jets["sample"] == "cms_dy"]
        assert len(real) > 50 and real["is_reconstructed"].mean() > 0.3
        # the real CMS file went through FlashSim and opens with coffea's NanoAODSchema
        from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

        flash = tmp_path / "results" / "flashsim" / "cms_dy" / "chunk0.root"
        events = NanoEventsFactory.from_root({str(flash): "Events"}, schemaclass=NanoAODSchema,
                                             mode="eager").events()
        assert len(events) == 40 * 2  # k = 2 flash events per gen event (config/tiny.yaml)
        assert ak.all(events.Jet.matched_gen.pt[events.Jet.genJetIdx >= 0] > 0)


@pytest.mark.parametrize("kind", ["not_root", "no_events_tree", "missing_branch"])
def test_bad_external_file_fails_clearly_through_the_dag(tmp_path, repo, kind):
    """A user's file that is not usable stops the run with one line naming it, and no output."""
    import uproot

    bad = tmp_path / "input" / "bad.root"
    bad.parent.mkdir()
    if kind == "not_root":
        bad.write_text("this is a CSV export, not ROOT\n")
        expected = "not a ROOT file"
    elif kind == "no_events_tree":
        with uproot.recreate(bad) as f:
            f.mktree("Runs", {"run": np.uint32}).extend({"run": np.array([1], np.uint32)})
        expected = "no tree 'Events'"
    else:
        with uproot.recreate(bad) as f:
            f.mktree("Events", {"run": np.uint32, "event": np.uint64}).extend(
                {"run": np.ones(3, np.uint32), "event": np.arange(3, dtype=np.uint64)})
        expected = "has no branch"
    cfg = {
        "base": str(repo / "config" / "tiny.yaml"),
        "samples": {
            "sig": {"process": "vbf_hmumu", "role": "signal", "n_events": 20, "events_per_chunk": 20},
            "user": {"files": [str(bad)], "role": "background", "xsec_pb": 1.0},
        },
        "training_tables": {"samples": ["sig"]},
        "flashsim": {"validation": {"samples": ["sig"]}},
        "trigger": {"samples": ["sig", "user"]},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(path), "--cores", "1", "results/skims/user.parquet"],
        capture_output=True, text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    line = [ln for ln in out.splitlines() if ln.startswith("ERROR in rule skim:")]
    assert len(line) == 1, out[-3000:]
    assert str(bad) in line[0] and expected in line[0], line[0]
    assert not (tmp_path / "results" / "skims" / "user.parquet").exists()
    assert not list((tmp_path / "results").rglob("*.tmp"))
