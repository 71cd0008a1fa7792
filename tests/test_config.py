"""The configuration: schema validation, consistency checks, `base:` inheritance, clear errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from pipeline.config import (
    config_sha256,
    load_config,
    merge_configs,
    n_chunks,
    chunk_events,
    resolve_base,
    validate_config,
)
from pipeline.errors import ConfigError


def test_shipped_configs_validate(laptop_config, tiny_config):
    assert set(tiny_config["samples"]) == {"vbf_hmumu", "dy_mumu", "ttbar_dilep"}
    # tiny inherits the laptop's detector block and overrides only what it names
    assert tiny_config["detector"] == laptop_config["detector"]
    assert tiny_config["samples"]["vbf_hmumu"]["n_events"] < laptop_config["samples"]["vbf_hmumu"]["n_events"]


@pytest.mark.parametrize(
    "mutate, key, expected",
    [
        (lambda c: c["samples"]["dy_mumu"].update(n_events=-5), "samples.dy_mumu.n_events", "minimum"),
        (lambda c: c["samples"]["dy_mumu"].update(role="sideband"), "samples.dy_mumu.role", "sideband"),
        (lambda c: c["samples"]["dy_mumu"].update(process="zz4l"), "samples.dy_mumu.process", "zz4l"),
        (lambda c: c["samples"]["dy_mumu"].update(files=["x.root"]), "samples.dy_mumu", "either"),
        (lambda c: c.update(luminosity_fb=0), "luminosity_fb", "minimum of 0"),
        (lambda c: c.update(seed="abc"), "seed", "integer"),
        (lambda c: c["skim"]["muons"].update(id="looseId"), "skim.muons.id", "looseId"),
        (lambda c: c["skim"].update(mmumu_min_gev=300.0), "skim.mmumu_min_gev", "below"),
        (lambda c: c["skim"].update(typo_key=1), "skim", "typo_key"),
        (lambda c: c["generation"]["genjets"].update(r=-0.4), "generation.genjets.r", "0"),
        (lambda c: c["generation"]["processes"]["vbf_hmumu"].update(settings=["no equals sign"]),
         "generation.processes.vbf_hmumu.settings.0", "does not match"),
        (lambda c: c["training_tables"].update(samples=["wjets"]), "training_tables.samples", "wjets"),
        (lambda c: c["plots"]["samples"].update(eta_bins=[0.0, 1.0, 0.5]), "plots.samples.eta_bins", "increase"),
        (lambda c: c["samples"].update(ext={"files": ["does/not/exist_*.root"], "role": "background"}),
         "samples.ext.files", "matches no file"),
        (lambda c: [s.update(role="background") for s in c["samples"].values()], "samples", "signal"),
        (lambda c: c["mlflow"].pop("tracking_uri"), "mlflow", "tracking_uri"),
        (lambda c: c["flashsim"]["validation"].update(samples=["wjets"]), "flashsim.validation.samples", "wjets"),
        # cross-key checks of the capability blocks (once, here, not in the rule files or the library)
        (lambda c: c["calo"].update(geometry="nope"), "calo.geometry", "is not a key of calo.geometries"),
        (lambda c: c["calo"].update(energy_min_mev=c["calo"]["energy_max_mev"]), "calo.energy_min_mev", "below"),
        (lambda c: c["calo"]["samples"].update(cc={"particle": "photon", "file": "no.h5", "binning": "no.xml"}),
         "calo.samples.cc.file", "does not exist"),
        (lambda c: c["classifier"].update(lambdas=[0, 20.0], chosen_lambda=3),
         "classifier.chosen_lambda", "3 is not one of classifier.lambdas (0, 20)"),
        (lambda c: c["trigger"]["hls"].update(chosen_width=7), "trigger.hls.chosen_width", "7 is not in"),
    ],
)
def test_invalid_values_name_the_key(laptop_config, mutate, key, expected):
    cfg = copy.deepcopy(laptop_config)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="test.yaml")
    msg = str(err.value)
    assert msg.startswith("test.yaml: invalid configuration")
    assert key in msg and expected in msg, msg


def test_detector_block_is_validated(laptop_config):
    cfg = copy.deepcopy(laptop_config)
    cfg["detector"]["not_a_detector_key"] = 1
    with pytest.raises(ConfigError, match="detector"):
        validate_config(cfg)


def test_base_merges_mappings_and_replaces_samples(tmp_path, laptop_config):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(laptop_config))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({
        "base": "base.yaml",
        "samples": {"sig": {"process": "vbf_hmumu", "role": "signal", "n_events": 10, "events_per_chunk": 4}},
        "skim": {"muons": {"pt_min_gev": 30.0}},
        "training_tables": {"samples": ["sig"]},
        "flashsim": {"validation": {"samples": ["sig"]}},
    }))
    cfg = load_config(child)
    assert list(cfg["samples"]) == ["sig"]
    assert cfg["skim"]["muons"]["pt_min_gev"] == 30.0
    assert cfg["skim"]["muons"]["abs_eta_max"] == laptop_config["skim"]["muons"]["abs_eta_max"]
    assert n_chunks(cfg["samples"]["sig"]) == 3
    assert [chunk_events(cfg["samples"]["sig"], c) for c in range(3)] == [4, 4, 2]


def test_base_errors(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        resolve_base({"base": "b.yaml"}, a)
    with pytest.raises(ConfigError, match="missing.yaml"):
        resolve_base({"base": "missing.yaml"}, a)
    with pytest.raises(ConfigError, match="not valid YAML"):
        (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
        load_config(tmp_path / "bad.yaml")


def test_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": 2}, "samples": {"x": 1}}
    over = {"a": {"b": 3}, "samples": {"y": 2}}
    out = merge_configs(base, over)
    assert out == {"a": {"b": 3, "c": 2}, "samples": {"y": 2}}
    assert base == {"a": {"b": 1, "c": 2}, "samples": {"x": 1}}


def test_config_hash_is_canonical(laptop_config):
    reordered = dict(reversed(list(laptop_config.items())))
    assert config_sha256(reordered) == config_sha256(laptop_config)
    changed = copy.deepcopy(laptop_config)
    changed["seed"] += 1
    assert config_sha256(changed) != config_sha256(laptop_config)


def test_snakemake_rejects_bad_config_before_running(tmp_path, repo, laptop_config):
    cfg = copy.deepcopy(laptop_config)
    cfg["samples"]["dy_mumu"]["events_per_chunk"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(bad), "-n", "--cores", "1"],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "samples.dy_mumu.events_per_chunk" in out and "minimum of 1" in out, out[-2000:]
    assert not (tmp_path / "results").exists()
