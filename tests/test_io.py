"""Reading and writing: atomic outputs and one clear error per kind of bad input file."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from pipeline import nanoaod
from pipeline.errors import InputFileError, MissingBranchError
from pipeline.io import (
    atomic_output,
    expand_files,
    iterate_events,
    open_tree,
    read_runs,
    write_json,
    write_nanoaod,
)


def _events(n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, n)
    flat = int(counts.sum())
    muons = ak.unflatten(ak.zip({
        "pt": rng.exponential(30, flat).astype(np.float32),
        "eta": rng.uniform(-2.4, 2.4, flat).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, flat).astype(np.float32),
        "mass": np.full(flat, 0.10566, np.float32),
        "charge": rng.choice([-1, 1], flat).astype(np.int32),
        "mediumId": rng.random(flat) < 0.9,
        "genPartIdx": np.full(flat, -1, np.int32),
    }), counts)
    return {
        "run": np.ones(n, np.uint32),
        "luminosityBlock": np.ones(n, np.uint32),
        "event": np.arange(n, dtype=np.uint64),
        "genWeight": np.ones(n, np.float32),
        "MET_pt": rng.exponential(20, n).astype(np.float32),
        "Muon": muons,
    }


def test_write_and_read_roundtrip(tmp_path):
    ev = _events(2500)
    path = tmp_path / "x.root"
    write_nanoaod(path, ev, collections=["Muon"], chunk_size=1000,
                  runs={"run": np.array([1], np.uint32), "genEventSumw": np.array([2500.0]),
                        "genEventCount": np.array([2500], np.int64), "xsec_pb": np.array([1.5])})
    tree = open_tree(path)
    assert tree.num_entries == 2500
    assert {"nMuon", "Muon_pt", "Muon_mediumId", "MET_pt"} <= set(tree.keys())
    chunks = list(iterate_events([path], ["Muon_pt", "nMuon"], step_size=1000))
    assert [len(c["nMuon"]) for _, c in chunks] == [1000, 1000, 500]
    pt = ak.concatenate([c["Muon_pt"] for _, c in chunks])
    assert ak.all(pt == ev["Muon"].pt)
    assert read_runs(path) == {"genEventSumw": 2500.0, "genEventCount": 2500.0, "xsec_pb": 1.5}
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.root"
    ev = _events(10)
    ev["MET_pt"] = ev["MET_pt"][:5]  # inconsistent lengths
    with pytest.raises(ValueError):
        write_nanoaod(path, ev, collections=["Muon"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "y.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_json_rejects_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []
    write_json(tmp_path / "m.json", {"x": np.float32(1.5), "n": np.int64(3)})
    assert (tmp_path / "m.json").read_text().count("1.5") == 1


def test_bad_inputs_give_one_clear_error(tmp_path):
    good = tmp_path / "good.root"
    write_nanoaod(good, _events(3000), collections=["Muon"], chunk_size=500)

    with pytest.raises(InputFileError, match=r"missing\.root: file does not exist"):
        open_tree(tmp_path / "missing.root")

    text = tmp_path / "notes.root"
    text.write_text("this is not ROOT")
    with pytest.raises(InputFileError, match=r"notes\.root: not a ROOT file"):
        open_tree(text)

    truncated = tmp_path / "truncated.root"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"truncated\.root"):
        for _ in iterate_events([truncated], ["Muon_pt"], step_size=500):
            pass

    no_events = tmp_path / "no_events.root"
    with uproot.recreate(no_events) as f:
        f.mktree("Other", {"x": np.float32}).extend({"x": np.zeros(3, np.float32)})
    with pytest.raises(InputFileError, match=r"no_events\.root: no tree 'Events' \(found: Other\)"):
        open_tree(no_events)

    with pytest.raises(MissingBranchError, match=r"good\.root: tree 'Events' has no branch 'Jet_pt' needed by skim"):
        next(iterate_events([good], ["Muon_pt", "Jet_pt"], stage="skim"))

    with pytest.raises(InputFileError, match=r"nothing_\*\.root: no such file \(listed in samples\.x\.files\)"):
        expand_files([str(tmp_path / "nothing_*.root")], what="samples.x.files")


def test_contract_branch_lists_are_consistent():
    assert nanoaod.counter("Jet") == "nJet"
    assert "Jet_genJetIdx" in nanoaod.reco_branches()
    assert "GenPart_genPartIdxMother" in nanoaod.gen_branches()
    assert not set(nanoaod.gen_branches()) & set(nanoaod.reco_branches())
    for name in ("run", "luminosityBlock", "event"):
        assert name in nanoaod.gen_branches()


def test_slightly_truncated_file_is_caught(tmp_path):
    good = tmp_path / "good.root"
    write_nanoaod(good, _events(3000), collections=["Muon"], chunk_size=500)
    cut = tmp_path / "cut.root"
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.99)])
    with pytest.raises(InputFileError, match=r"cut\.root: truncated ROOT file"):
        open_tree(cut)


def test_runs_of_real_cms_file(nano_dy):
    runs = read_runs(nano_dy)
    assert runs["genEventCount"] >= 40 and runs["genEventSumw"] > 0
