"""Calorimeter geometry, reference shower simulation and CaloChallenge HDF5 input checks."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest

from pipeline.calo.data import read_showers, write_showers
from pipeline.calo.geometry import Geometry
from pipeline.calo.showersim import simulate
from pipeline.calo.train import reference_geometry
from pipeline.errors import InputFileError

# The CaloChallenge dataset-1 photon binning, as distributed (24 layers, 5 with voxels).
DS1_PHOTON_XML = """<Bins>
   <Bin pid="22" etaMin="0" etaMax="130" name="photon">
      <Layer id="0" r_edges="0,5,10,30,50,100,200,400,600" n_bin_alpha="1" />
      <Layer id="1" r_edges="0,2,4,6,8,10,12,15,20,30,40,50,70,90,120,150,200" n_bin_alpha="10"/>
      <Layer id="2" r_edges="0,2,5,10,15,20,25,30,40,50,60,80,100,130,160,200,250,300,350,400" n_bin_alpha="10"/>
      <Layer id="3" r_edges="0,50,100,200,400,600" n_bin_alpha="1" />
""" + "".join(f'      <Layer id="{i}" r_edges="0" n_bin_alpha="1" />\n' for i in range(4, 12)) + \
    """      <Layer id="12" r_edges="0,100,200,400,1000,2000" n_bin_alpha="1" />
""" + "".join(f'      <Layer id="{i}" r_edges="0" n_bin_alpha="1" />\n' for i in range(13, 24)) + \
    """   </Bin>
</Bins>
"""


@pytest.fixture(scope="module")
def calo_cfg(laptop_config):
    return copy.deepcopy(laptop_config["calo"])


def _sim(calo_cfg, **response):
    sim = copy.deepcopy(calo_cfg["simulation"])
    sim["response"].update(response)
    return sim


def test_challenge_binning_is_368_voxels_and_round_trips(tmp_path, calo_cfg):
    path = tmp_path / "binning_dataset_1_photons.xml"
    path.write_text(DS1_PHOTON_XML)
    real = Geometry.from_xml(path, "photon")
    assert real.n_voxels == 368 and [la.id for la in real.layers] == [0, 1, 2, 3, 12]
    ours = Geometry.from_config(calo_cfg["geometries"]["challenge_ds1"])
    assert ours.same_binning(real)
    ours.to_xml(tmp_path / "ours.xml")
    back = Geometry.from_xml(tmp_path / "ours.xml")
    assert back.same_binning(ours) and back.has_depth()
    assert [la.x0_end for la in back.layers] == pytest.approx([la.x0_end for la in ours.layers])


def test_showers_are_sparse_non_negative_and_contained(calo_cfg):
    g = reference_geometry(calo_cfg, "photon")
    e = np.full(300, 50_000.0)
    s = simulate(e, "photon", g, calo_cfg["simulation"], np.random.default_rng(1))
    assert s.shape == (300, g.n_voxels) and s.dtype == np.float32
    assert (s >= 0).all()
    thr = calo_cfg["simulation"]["response"]["threshold_mev"]
    assert (s[s > 0] >= thr).all(), "zero suppression"
    assert 0.2 < (s > 0).mean() < 0.99
    ratio = s.sum(1) / e
    assert 0.9 < np.median(ratio) < 1.0, "response: a few % leak out, never more energy than came in"


def _one_big_layer(calo_cfg):
    return Geometry.from_config({"layers": [{"x0": 80.0, "n_alpha": 1, "r_edges_mm": [0.0, 1e6]}]})


@pytest.mark.parametrize("energy_gev", [2.0, 20.0, 200.0])
def test_resolution_follows_the_stochastic_term(calo_cfg, energy_gev):
    """No leakage, noise or constant term: sigma/E must be a / sqrt(E) from the spot energies."""
    g = _one_big_layer(calo_cfg)
    sim = _sim(calo_cfg, constant=0.0, noise_mev=0.0, threshold_mev=0.0, stochastic=0.15)
    e = np.full(3000, energy_gev * 1000.0)
    ratio = simulate(e, "electron", g, sim, np.random.default_rng(2)).sum(1) / e
    assert ratio.mean() == pytest.approx(1.0, abs=0.005)
    assert ratio.std() / (0.15 / np.sqrt(energy_gev)) == pytest.approx(1.0, abs=0.08)


def test_longitudinal_peak_moves_deeper_as_log_energy(calo_cfg):
    g = Geometry.from_config({"layers": [{"x0": 1.0, "n_alpha": 1, "r_edges_mm": [0.0, 1e6]}] * 60})
    sim = _sim(calo_cfg, noise_mev=0.0, threshold_mev=0.0)
    centres = np.arange(60) + 0.5
    depth = {}
    for particle in ("electron", "photon"):
        for e_gev in (1.0, 10.0, 100.0, 1000.0):
            e = np.full(400, e_gev * 1000.0)
            s = simulate(e, particle, g, sim, np.random.default_rng(3)).astype(float)
            profile = s.sum(0)
            depth[particle, e_gev] = (profile * centres).sum() / profile.sum()
    for particle in ("electron", "photon"):
        d = [depth[particle, e] for e in (1.0, 10.0, 100.0, 1000.0)]
        assert np.all(np.diff(d) > 0), d
        slope = np.polyfit(np.log([1.0, 10.0, 100.0, 1000.0]), d, 1)[0]
        assert 0.7 < slope < 1.3, f"{particle}: mean depth grows {slope:.2f} X0 per unit ln E (expected ~1)"
    # photons convert first (mean 9/7 X0), so their showers sit deeper
    for e in (10.0, 100.0):
        assert 0.6 < depth["photon", e] - depth["electron", e] < 2.0


def test_reference_is_seeded(calo_cfg):
    g = reference_geometry(calo_cfg, "electron")
    e = np.geomspace(1e3, 1e6, 50)
    a = simulate(e, "electron", g, calo_cfg["simulation"], np.random.default_rng(7))
    b = simulate(e, "electron", g, calo_cfg["simulation"], np.random.default_rng(7))
    c = simulate(e, "electron", g, calo_cfg["simulation"], np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --------------------------------------------------------------------------------------------
# CaloChallenge HDF5 input
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def geometry(calo_cfg):
    return reference_geometry(calo_cfg, "photon")


@pytest.fixture()
def good_file(tmp_path, geometry, calo_cfg):
    e = np.geomspace(1e3, 1e6, 200)
    s = simulate(e, "photon", geometry, calo_cfg["simulation"], np.random.default_rng(0))
    path = tmp_path / "good.hdf5"
    write_showers(path, e, s)
    return path


def test_written_file_is_the_challenge_format(good_file, geometry):
    with h5py.File(good_file) as f:
        assert f["incident_energies"].shape == (200, 1)
        assert f["showers"].shape == (200, geometry.n_voxels)
    sh = read_showers(good_file, geometry)
    assert len(sh) == 200 and sh.showers.shape[1] == geometry.n_voxels


def test_truncated_file_fails_clearly(tmp_path, good_file, geometry):
    data = good_file.read_bytes()
    bad = tmp_path / "truncated.hdf5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated") as exc:
        read_showers(bad, geometry)
    assert str(bad) in str(exc.value)


def test_width_mismatch_fails_clearly(tmp_path, geometry):
    bad = tmp_path / "wide.hdf5"
    write_showers(bad, np.full(5, 1e4), np.ones((5, geometry.n_voxels + 3)))
    with pytest.raises(InputFileError, match=f"{geometry.n_voxels + 3} voxels per shower but the geometry has "
                                            f"{geometry.n_voxels}") as exc:
        read_showers(bad, geometry)
    assert str(bad) in str(exc.value)


def test_negative_energies_fail_clearly(tmp_path, geometry):
    s = np.ones((5, geometry.n_voxels))
    s[3, 7] = -2.0
    bad = tmp_path / "negative.hdf5"
    write_showers(bad, np.full(5, 1e4), s)
    with pytest.raises(InputFileError, match="negative energies") as exc:
        read_showers(bad, geometry)
    assert str(bad) in str(exc.value) and "shower 3 voxel 7" in str(exc.value)


@pytest.mark.parametrize("kind", ["not_hdf5", "no_showers", "missing"])
def test_other_bad_inputs_fail_clearly(tmp_path, geometry, kind):
    bad = tmp_path / "bad.hdf5"
    if kind == "not_hdf5":
        bad.write_text("csv,not,hdf5\n")
        expected = "not an HDF5 file"
    elif kind == "no_showers":
        with h5py.File(bad, "w") as f:
            f["incident_energies"] = np.ones((3, 1))
        expected = "no dataset 'showers'"
    else:
        expected = "does not exist"
    with pytest.raises(InputFileError, match=expected) as exc:
        read_showers(bad, geometry)
    assert str(bad) in str(exc.value)


def test_symmetry_permutations_are_the_azimuthal_images(calo_cfg):
    """Rotations by the angular bin and the reflection, on every angular layer at once: radial
    features are unchanged, the centre of energy turns by the angle, and the reference's
    distribution of a centre does not depend on the image (the simulation is symmetric)."""
    from pipeline.calo.features import high_level

    g = reference_geometry(calo_cfg, "photon")
    perms = g.symmetry_permutations()
    n_alpha = g.layers[1].n_alpha
    assert perms.shape == (2 * n_alpha, g.n_voxels) and len({tuple(p) for p in perms}) == 2 * n_alpha
    assert np.array_equal(perms[0], np.arange(g.n_voxels))
    assert all(sorted(p) == list(range(g.n_voxels)) for p in perms)
    e = np.full(2000, 20_000.0)
    s = simulate(e, "photon", g, calo_cfg["simulation"], np.random.default_rng(3))
    f0, f1 = high_level(s, e, g), high_level(s[:, perms[1]], e, g)
    for key in f0:
        if not key.startswith("centre_x") and not key.startswith("centre_y"):
            np.testing.assert_allclose(f1[key], f0[key], rtol=1e-9, atol=1e-9, err_msg=key)
    turn = 2 * np.pi / n_alpha
    c, sn = np.cos(turn), np.sin(turn)
    np.testing.assert_allclose(f1["centre_x_1"], c * f0["centre_x_1"] - sn * f0["centre_y_1"], atol=1e-6)
    np.testing.assert_allclose(f1["centre_y_1"], sn * f0["centre_x_1"] + c * f0["centre_y_1"], atol=1e-6)
    # reflection alpha -> -alpha: y -> -y
    f_ref = high_level(s[:, perms[n_alpha]], e, g)
    np.testing.assert_allclose(f_ref["centre_y_2"], -f0["centre_y_2"], atol=1e-6)
    np.testing.assert_allclose(f_ref["centre_x_2"], f0["centre_x_2"], atol=1e-6)
    # the reference itself is symmetric: the centre's spread is the same along x and y
    assert abs(np.std(f0["centre_x_2"]) / np.std(f0["centre_y_2"]) - 1) < 0.1


def test_symmetry_permutations_only_identity_for_mixed_angular_binnings():
    g = Geometry.from_config({"layers": [{"x0": 2.0, "n_alpha": 4, "r_edges_mm": [0, 5, 10]},
                                         {"x0": 5.0, "n_alpha": 6, "r_edges_mm": [0, 5, 10]}]})
    assert np.array_equal(g.symmetry_permutations(), np.arange(g.n_voxels)[None, :])
