"""A catalogue of bad inputs, each run through Snakemake as a user would meet it.

Every case must end in one clear error that names the file or config key and what was expected,
a non-zero exit, and no output file (nor a leftover temporary). File problems surface as exactly one
line ``ERROR in rule <rule>: <file>: <problem>`` (pipeline.glue.run); configuration problems stop
the run before any job starts, naming the key.

Cases elsewhere, not repeated here (same contract, same kind of assertions):
- tests/test_workflow.py::test_bad_external_file_fails_clearly_through_the_dag: a ROOT sample file
  that is not ROOT, one without the tree 'Events', one missing a branch (rule skim);
- tests/test_calo_workflow.py::test_width_mismatch_stops_the_dag_with_one_line: CaloChallenge
  showers whose width disagrees with the binning (rule train_calo_gan);
- tests/test_config.py: the schema's messages for each kind of bad value, without Snakemake.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import yaml

from dag_runs import REPO, run_snakemake

pytestmark = pytest.mark.slow

TINY = str(REPO / "config" / "tiny.yaml")


def _tiny_samples() -> dict:
    """config/tiny.yaml's samples: kept in every config here, so that the blocks of other stages
    that name them stay valid; each test builds only the target it needs."""
    return yaml.safe_load(open(TINY))["samples"]


def _run(workdir, cfg: dict, target: str, *extra: str):
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(workdir, target, *extra, "--configfile", str(path), profile=None, cores=1, check=False,
                         timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def _no_outputs(workdir, target):
    assert not (workdir / target).exists(), f"{target} written despite the error"
    results = workdir / "results"
    assert not list(results.rglob("*.tmp")) if results.exists() else True, "temporary file left behind"


def _assert_rule_error(workdir, cfg, target, rule, *expected, extra=()):
    rc, out = _run(workdir, cfg, target, *extra)
    assert rc != 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith(f"ERROR in rule {rule}:")]
    assert len(lines) == 1, f"expected one 'ERROR in rule {rule}:' line:\n{out[-4000:]}"
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in lines[0]
    _no_outputs(workdir, target)
    return lines[0]


def _assert_config_error(workdir, cfg, *expected):
    rc, out = _run(workdir, cfg, "results/skims/vbf_hmumu.parquet")
    assert rc != 0
    for text in expected:
        assert text in out, (text, out[-3000:])
    assert not (workdir / "results" / "samples").exists(), "a job ran despite the bad config"


# ------------------------------------------------------------------------------------------------
# NanoAOD (ROOT) inputs of external samples: rule skim
# ------------------------------------------------------------------------------------------------
def _external(path) -> dict:
    samples = _tiny_samples()
    samples["user"] = {"files": [str(path)], "role": "background", "xsec_pb": 1.0}
    return {"base": TINY, "samples": samples}


@pytest.fixture(scope="module")
def good_chunk(tiny_dag_run):
    """A complete NanoAOD chunk from the session's tiny run, to damage."""
    return tiny_dag_run[0] / "results" / "samples" / "dy_mumu" / "chunk0.root"


def test_truncated_root_file(tmp_path, good_chunk):
    bad = tmp_path / "input" / "truncated.root"
    bad.parent.mkdir()
    data = good_chunk.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a copy interrupted half way
    _assert_rule_error(tmp_path, _external(bad), "results/skims/user.parquet", "skim", str(bad),
                       f"truncated ROOT file ({len(data) // 2} bytes, the header says {len(data)})")


def test_empty_root_file(tmp_path):
    bad = tmp_path / "input" / "empty.root"
    bad.parent.mkdir()
    bad.write_bytes(b"")
    _assert_rule_error(tmp_path, _external(bad), "results/skims/user.parquet", "skim", str(bad), "not a ROOT file")


def test_events_tree_without_events(tmp_path, good_chunk):
    """A file with the right branches but zero events: nothing to skim, said clearly."""
    import uproot

    with uproot.open(good_chunk) as f:
        tree = f["Events"]
        empty = {k: v[:0] for k, v in tree.arrays(library="np").items() if not k.startswith("n")}
        types = {k: tree[k].interpretation.numpy_dtype for k in empty}
    bad = tmp_path / "input" / "no_events.root"
    bad.parent.mkdir()
    flat = {k: t for k, t in types.items() if empty[k].dtype != object}
    with uproot.recreate(bad) as f:
        f.mktree("Events", flat).extend({k: empty[k] for k in flat})
    line = _assert_rule_error(tmp_path, _external(bad), "results/skims/user.parquet", "skim", str(bad))
    assert "branch" in line or "no event" in line.lower() or "0 event" in line


def test_sample_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "nowhere" / "*.root")
    _assert_config_error(tmp_path, _external(pattern), f"samples.user.files: '{pattern}' matches no file")


# ------------------------------------------------------------------------------------------------
# configuration: stops before any job, naming the key
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["wrong_type", "unknown_key", "unknown_process", "negative_events"])
def test_bad_config_value(tmp_path, case):
    samples = _tiny_samples()
    sig = samples["vbf_hmumu"]
    expected = ()
    cfg = {"base": TINY, "samples": samples}
    if case == "wrong_type":
        sig["n_events"] = "many"
        expected = ("samples.vbf_hmumu.n_events", "'many' is not of type 'integer'")
    elif case == "unknown_key":
        cfg["skim"] = {"mmumu_min_gev": 110.0, "mmumu_mni_gev": 150.0}
        expected = ("skim", "mmumu_mni_gev")
    elif case == "unknown_process":
        sig["process"] = "vbf_hmumu_typo"
        expected = ("samples.vbf_hmumu.process", "vbf_hmumu_typo")
    else:
        sig["n_events"] = -5
        expected = ("samples.vbf_hmumu.n_events", "-5")
    _assert_config_error(tmp_path, cfg, *expected)


# ------------------------------------------------------------------------------------------------
# CaloChallenge HDF5 inputs: rule train_calo_gan
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_showers(tiny_dag_run):
    ref = tiny_dag_run[0] / "results" / "calo" / "reference"
    return ref / "photon.h5", ref / "photon.xml"


@pytest.mark.parametrize("case", ["not_hdf5", "missing_dataset", "energies_wrong_shape", "negative_energy"])
def test_bad_calochallenge_file(tmp_path, good_showers, case):
    h5_good, xml_good = good_showers
    bad = tmp_path / "input" / "showers.h5"
    bad.parent.mkdir()
    xml = tmp_path / "input" / "binning.xml"
    shutil.copy(xml_good, xml)
    with h5py.File(h5_good, "r") as f:
        e, s = f["incident_energies"][()], f["showers"][()]
    if case == "not_hdf5":
        bad.write_text("incident_energies,showers\n1,2\n")
        expected = "not an HDF5 file"
    else:
        with h5py.File(bad, "w") as f:
            if case == "missing_dataset":
                f.create_dataset("incident_energies", data=e)
                expected = "no dataset 'showers'"
            elif case == "energies_wrong_shape":
                f.create_dataset("incident_energies", data=np.hstack([e, e]))
                f.create_dataset("showers", data=s)
                expected = "'incident_energies' has shape"
            else:
                s = s.copy()
                s[3, 5] = -1.0
                f.create_dataset("incident_energies", data=e)
                f.create_dataset("showers", data=s)
                expected = "negative energies in 'showers'"
    cfg = {"base": TINY, "calo": {"samples": {"user": {"particle": "photon", "file": str(bad), "binning": str(xml)}}}}
    _assert_rule_error(tmp_path, cfg, "results/models/calo/model.pt", "train_calo_gan", str(bad), expected)


# ------------------------------------------------------------------------------------------------
# tables between stages: a skim the classifier cannot use (rule train_classifier)
# ------------------------------------------------------------------------------------------------
def test_skim_without_a_column_the_classifier_needs(tmp_path, tiny_dag_run):
    """The session's skims, one without m_mumu, given to train_classifier as they are
    (--allowed-rules keeps Snakemake from rebuilding them)."""
    import pyarrow.parquet as pq

    from pipeline.classifier.disco import lambda_tag
    from pipeline.config import load_config

    cfg = load_config(TINY)
    skims = tmp_path / "results" / "skims"
    skims.mkdir(parents=True)
    for sample in cfg["samples"]:
        shutil.copy(tiny_dag_run[0] / "results" / "skims" / f"{sample}.parquet", skims)
    bad = skims / "vbf_hmumu.parquet"
    table = pq.read_table(bad)
    pq.write_table(table.drop_columns(["m_mumu"]), bad)
    target = f"results/models/classifier/lambda_{lambda_tag(cfg['classifier']['lambdas'][0])}/scorer.pt"
    _assert_rule_error(tmp_path, {"base": TINY}, target, "train_classifier",
                       "results/skims/vbf_hmumu.parquet: no column 'm_mumu'",
                       extra=("--allowed-rules", "train_classifier", "mlflow_init"))
