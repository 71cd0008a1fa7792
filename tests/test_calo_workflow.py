"""The calo part of the DAG on a CaloChallenge-format file listed in the config (no reference
simulation), and a bad file stopping it with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from test_calo import DS1_PHOTON_XML

pytestmark = pytest.mark.slow


def _challenge_file(tmp_path, tiny_config, n=300, width=None):
    from pipeline.calo.geometry import Geometry
    from pipeline.calo.showersim import reference_sample

    xml = tmp_path / "binning_dataset_1_photons.xml"
    xml.write_text(DS1_PHOTON_XML)
    calo = tiny_config["calo"]
    e, s = reference_sample(n, "photon", Geometry.from_config(calo["geometries"]["challenge_ds1"]), calo,
                            np.random.default_rng(1))
    if width is not None:
        s = s[:, :width]
    h5 = tmp_path / "dataset_1_photons_1.hdf5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("incident_energies", data=e.reshape(-1, 1))
        f.create_dataset("showers", data=s.astype(np.float64))
    return h5, xml


def _run(repo, workdir, cfg):
    path = workdir / "calo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(path), "--cores", "2", "results/validation/calo/metrics.json"],
        capture_output=True, text=True)


def test_external_challenge_sample_runs_through_the_dag(tmp_path, repo, tiny_config):
    h5, xml = _challenge_file(tmp_path, tiny_config)
    cfg = {"base": str(repo / "config" / "tiny.yaml"),
           "calo": {"samples": {"cc_photon": {"particle": "photon", "file": str(h5), "binning": str(xml)}},
                    "gan": {"epochs": 1}}}
    # calo.samples of a config replace those of its base (like the top-level samples)
    proc = _run(repo, tmp_path, cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "results" / "validation" / "calo" / "metrics.json").read_text())
    assert set(metrics) == {"cc_photon"}
    with h5py.File(tmp_path / "results" / "calo" / "generated" / "cc_photon.h5") as f:
        assert f["showers"].shape[1] == 368
    assert not (tmp_path / "results" / "calo" / "reference").exists(), "no reference simulation for a given file"


def test_width_mismatch_stops_the_dag_with_one_line(tmp_path, repo):
    from pipeline.config import load_config

    tiny = load_config(repo / "config" / "tiny.yaml")
    h5, xml = _challenge_file(tmp_path, tiny, n=50, width=300)
    cfg = {"base": str(repo / "config" / "tiny.yaml"),
           "calo": {"samples": {"cc_photon": {"particle": "photon", "file": str(h5), "binning": str(xml)}}}}
    proc = _run(repo, tmp_path, cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("ERROR in rule train_calo_gan:")]
    assert len(lines) == 1, out[-3000:]
    assert str(h5) in lines[0] and "300 voxels per shower but the geometry has 368" in lines[0]
    assert not (tmp_path / "results" / "models" / "calo" / "model.pt").exists()
