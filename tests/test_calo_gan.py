"""The calorimeter GAN: real Lightning training on tiny reference samples, generation, validation,
and a real CaloChallenge-format file (368-voxel dataset-1 binning) trained on unchanged. Both
generators (gan.generator): the MLP WGAN-GP and the Flow-GAN (spline flows, likelihood +
adversarial loss)."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from pipeline.calo import train as T
from pipeline.calo.data import read_showers
from pipeline.calo.geometry import Geometry
from pipeline.calo.validate import classifier_auc, separation_power, validate

N_SHOWERS = 400


@pytest.fixture(scope="module")
def cfg(tiny_config):
    c = copy.deepcopy(tiny_config["calo"])
    c["gan"].update({"generator": "mlp", "epochs": 1, "batch_size": 64, "hidden": [32, 64], "critic_hidden": [64],
                     "latent_dim": 16})
    c["validation"].update({"classifier_hidden": [32], "classifier_epochs": 5, "plots": False})
    return c


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cfg):
    d = tmp_path_factory.mktemp("calo_ref")
    files = {}
    for name, particle in (("photon", "photon"), ("electron", "electron")):
        c = copy.deepcopy(cfg)
        c["samples"] = {name: {"particle": particle, "n_showers": N_SHOWERS}}
        T.produce_reference(name, c, 11, str(d / f"{name}.h5"), str(d / f"{name}.xml"))
        files[name] = (str(d / f"{name}.h5"), str(d / f"{name}.xml"), particle)
    return files


def flow_cfg(cfg, epochs=10, adversarial_weight=0.1):
    c = copy.deepcopy(cfg)
    c["gan"].update({"generator": "flow", "epochs": epochs, "adversarial_weight": adversarial_weight,
                     "flow": {"energy": {"transforms": 3, "bins": 6, "hidden": [32, 32], "coupling": "zuko"},
                              "voxels": {"transforms": 4, "bins": 6, "hidden": [64, 64], "coupling": "split"},
                              "dequantisation_decades": 1.0, "dequantisation_gap_decades": 3.0}})
    return c


@pytest.fixture(scope="module", params=["mlp", "flow"])
def trained(request, tmp_path_factory, cfg, reference):
    c = cfg if request.param == "mlp" else flow_cfg(cfg)
    d = tmp_path_factory.mktemp(f"calo_gan_{request.param}")
    metrics = T.train_gan(reference, c, 5, str(d / "model.pt"), str(d / "ckpt"), threads=1)
    return d, metrics, c


def test_training_writes_model_and_checkpoints(trained):
    d, metrics, c = trained
    assert (d / "model.pt").exists()
    assert list((d / "ckpt").glob("*.ckpt")), "no Lightning checkpoint"
    assert np.isfinite(metrics["critic_loss"]) and np.isfinite(metrics["generator_loss"])
    if c["gan"]["generator"] == "flow":
        assert np.isfinite(metrics["nll_energy"]) and np.isfinite(metrics["nll_voxels"])


def test_generated_showers_respect_shape_and_energy_scale(trained, reference):
    d, _, _ = trained
    gen = T.ShowerGenerator(d / "model.pt")
    ref = read_showers(reference["photon"][0], Geometry.from_xml(reference["photon"][1]))
    e = np.geomspace(1e3, 1e6, 400)
    s = gen(e, "photon", seed=3)
    assert s.shape == (400, ref.geometry.n_voxels)
    assert (s >= 0).all() and np.isfinite(s).all()
    ratio = s.sum(1) / e
    ref_ratio = ref.showers.sum(1) / ref.incident_energies
    # the energy scale is built in: E_total / E_inc right from the start, over three decades
    assert abs(np.median(ratio) / np.median(ref_ratio) - 1) < 0.15
    assert np.corrcoef(np.log(s.sum(1)), np.log(e))[0, 1] > 0.99
    # zero suppression as in the data
    thr = ref.showers[ref.showers > 0].min()
    assert (s[s > 0] >= thr * 0.99).all()


def test_generation_is_seeded(trained):
    d, _, _ = trained
    gen = T.ShowerGenerator(d / "model.pt")
    e = np.full(50, 2e4)
    assert np.array_equal(gen(e, "electron", seed=1), gen(e, "electron", seed=1))
    assert not np.array_equal(gen(e, "electron", seed=1), gen(e, "electron", seed=2))


def test_training_is_deterministic(tmp_path, reference, trained):
    d, _, cfg = trained
    T.train_gan(reference, cfg, 5, str(tmp_path / "again.pt"), str(tmp_path / "ckpt"), threads=1)
    a = torch.load(d / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "again.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_generate_and_validate_write_challenge_files_and_metrics(tmp_path, trained, reference):
    d, _, cfg = trained
    samples = {}
    for name, (h5, xml, particle) in reference.items():
        out = T.generate(str(d / "model.pt"), h5, xml, particle, cfg, 5, name, str(tmp_path / f"{name}.h5"),
                         str(tmp_path / f"{name}.xml"))
        assert out["n_showers"] == round(N_SHOWERS * cfg["test_fraction"])
        with h5py.File(tmp_path / f"{name}.h5") as f:
            assert f["incident_energies"].shape == (out["n_showers"], 1)
        samples[name] = (h5, xml, str(tmp_path / f"{name}.h5"), str(tmp_path / f"{name}.xml"), particle)
    m = validate(samples, cfg, 5, str(tmp_path / "metrics.json"), str(tmp_path / "plots"))
    for name in reference:
        assert 0.0 <= m[name]["auc_high_level"] <= 1.0 and 0.0 <= m[name]["auc_voxels"] <= 1.0
        sp = m[name]["separation_power"]
        assert {"e_ratio", "e_layer_0", "width_r_1", "centre_x_1", "sparsity_2", "voxel_energy"} <= set(sp)
        assert all(0.0 <= v <= 1.0 for v in sp.values())


def test_separation_power_and_classifier_behave():
    assert separation_power([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0)
    assert separation_power([1, 0], [0, 1]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert classifier_auc(a, b, 1, [16], 20) < 0.56
    assert classifier_auc(a, b + 1.0, 1, [16], 20) > 0.85


@pytest.mark.parametrize("generator", ["mlp", "flow"])
def test_trains_on_a_calochallenge_file_unchanged(tmp_path, cfg, generator):
    """A file written exactly as the CaloChallenge's dataset 1 (its binning XML, 368 voxels,
    float64 datasets), listed as an external sample: loads, trains and generates the same way."""
    from test_calo import DS1_PHOTON_XML

    xml = tmp_path / "binning_dataset_1_photons.xml"
    xml.write_text(DS1_PHOTON_XML)
    geo = Geometry.from_config(cfg["geometries"]["challenge_ds1"])
    from pipeline.calo.showersim import reference_sample

    e, s = reference_sample(300, "photon", geo, cfg, np.random.default_rng(4))
    h5 = tmp_path / "dataset_1_photons_1.hdf5"
    with h5py.File(h5, "w") as f:  # as the challenge wrote them: float64, no compression, no attributes
        f.create_dataset("incident_energies", data=e.reshape(-1, 1).astype(np.float64))
        f.create_dataset("showers", data=s.astype(np.float64))
    c = copy.deepcopy(cfg) if generator == "mlp" else flow_cfg(cfg, epochs=1)
    c["samples"] = {"cc_photon": {"particle": "photon", "file": str(h5), "binning": str(xml)}}
    samples = {"cc_photon": (str(h5), str(xml), "photon")}
    T.train_gan(samples, c, 1, str(tmp_path / "m.pt"), str(tmp_path / "ckpt"), threads=1)
    out = T.generate(str(tmp_path / "m.pt"), str(h5), str(xml), "photon", c, 1, "cc_photon",
                     str(tmp_path / "gen.h5"), str(tmp_path / "gen.xml"))
    g = read_showers(tmp_path / "gen.h5", Geometry.from_xml(tmp_path / "gen.xml", "photon"))
    assert g.showers.shape == (out["n_showers"], 368)


def test_voxel_gates_make_exact_zeros_and_keep_the_energy_scale():
    """The optional per-voxel gates (gan.voxel_gates): hard zeros forward, gradients backward."""
    from pipeline.calo.gan import Generator

    torch.manual_seed(0)
    g = Generator([4, 12], cond_dim=3, latent_dim=8, hidden=[16], log_ratio_mean=-0.03, log_ratio_std=0.05,
                  threshold_mev=0.0, gates=True)
    with torch.no_grad():
        g.head.bias[1 + 2 + 16:] = 0.0  # half the voxels on
    e = torch.full((256,), 1e4)
    cond = torch.zeros(256, 3)
    with torch.no_grad():
        s = g(torch.randn(256, 8), cond, e)
    assert 0.3 < (s > 0).float().mean() < 0.7
    kept = (s[:, :4] > 0).any(1) & (s[:, 4:] > 0).any(1)
    assert torch.allclose(s[kept].sum(1) / 1e4, torch.tensor(np.exp(-0.03)).float(), rtol=0.3)
    out = g(torch.randn(256, 8), cond, e)
    out.sum().backward()
    assert g.head.weight.grad[1 + 2 + 16:].abs().sum() > 0, "no gradient reaches the gate logits"


# ------------------------------------------------------------------------------------------------
# the flow generator's representation
# ------------------------------------------------------------------------------------------------
def _shower_flow(threshold=3.0):
    from pipeline.calo.flow import ShowerFlow

    spec = {"transforms": 2, "bins": 4, "hidden": [8]}
    return ShowerFlow([4, 12], cond_dim=3, threshold_mev=threshold, energy_flow={**spec, "coupling": "zuko"},
                      voxel_flow={**spec, "coupling": "split"}, dequantisation_decades=1.0,
                      dequantisation_gap_decades=2.0)


def test_flow_representation_is_exact_on_voxels_above_threshold(reference):
    """decode(encode(shower)) gives the shower back, voxel by voxel, and the dequantised zeros
    stay below the threshold, so decoding reads them as zero again."""
    flow = _shower_flow(threshold=3.0)
    rng = np.random.default_rng(2)
    showers = rng.exponential(40.0, (200, 16)) * (rng.uniform(size=(200, 16)) < 0.6)
    showers[showers < 3.0] = 0.0
    showers[:, 0] = np.maximum(showers[:, 0], 5.0)  # every layer has energy
    showers[:, 4] = np.maximum(showers[:, 4], 5.0)
    s = torch.tensor(showers, dtype=torch.float64)
    flow = flow.double()
    deq = flow.dequantise(s, torch.Generator().manual_seed(0))
    assert torch.equal(deq[s > 0], s[s > 0])
    filled = deq[s == 0]
    assert (filled <= 3.0 * 1e-2 * 1.001).all() and (filled >= 3.0 * 1e-3 * 0.999).all()
    inc = torch.full((200,), 2e3, dtype=torch.float64)
    x1, x2 = flow.encode(deq, inc)
    back = flow.decode(x1, x2, inc)
    assert torch.allclose(back, s, rtol=1e-5, atol=1e-9)


def test_flow_likelihood_and_samples_are_differentiable():
    flow = _shower_flow()
    cond, inc = torch.randn(32, 3), torch.full((32,), 5e3)
    showers = torch.rand(32, 16) * 200 * (torch.rand(32, 16) < 0.5) + torch.tensor([5.0] + [0] * 3 + [5.0] + [0] * 11)
    flow.fit_standardisation(showers, inc, cond, torch.Generator().manual_seed(0))
    nll_e, nll_v = flow.nll(showers, inc, cond)
    (nll_e + nll_v).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters() if p.requires_grad)
    flow.zero_grad()
    fake = flow(cond, inc)
    assert fake.shape == (32, 16) and (fake >= 0).all()
    fake.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.voxels.parameters())
