"""CaloChallenge-style validation of generated showers against held-out reference showers.

Per sample, on the held-out split of the reference and the generated showers at the same incident
energies:

- histograms (with ratio panels) of E_total/E_incident, the energy per layer, the radial centre of
  energy and width per layer, the centre of energy in x and y for layers with angular bins, the
  sparsity per layer and the voxel-energy spectrum, each with its **separation power**
  S = 1/2 sum_i (p_i - q_i)^2 / (p_i + q_i) of the unit-normalised histograms (0: identical,
  1: disjoint), as in the CaloChallenge (arXiv:2410.21611);
- a **classifier** (reference vs generated; an MLP as in the CaloChallenge) trained on 70 % of the
  showers with early stopping and evaluated on the other 30 %: AUC on the high-level features
  (:func:`pipeline.calo.features.classifier_inputs`) and on the voxels (voxel / E_incident and
  log10 E_incident). 0.5 means indistinguishable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline import plotting
from pipeline.calo.data import Showers, split_indices
from pipeline.calo.features import classifier_inputs, high_level
from pipeline.calo.train import load_sample
from pipeline.io import write_json
from pipeline.seeds import int_seed

log = logging.getLogger(__name__)

PRETTY = {
    "e_ratio": (r"$E_{total}/E_{inc}$", False),
    "e_layer": (r"$\log_{10}(E_{layer}$ / MeV) of layer {i}", True),
    "centre_r": (r"Radial centre of energy $\langle r\rangle$, layer {i} [mm]", False),
    "width_r": (r"Radial width, layer {i} [mm]", False),
    "centre_x": (r"Centre of energy $\langle x\rangle$, layer {i} [mm]", False),
    "centre_y": (r"Centre of energy $\langle y\rangle$, layer {i} [mm]", False),
    "sparsity": (r"Fraction of voxels with energy, layer {i}", False),
}

# Single-particle showers have no collider energy: no "(13.6 TeV)" on the right of the label.
SHOWER_LABEL = {"rlabel": ""}


def separation_power(p: np.ndarray, q: np.ndarray) -> float:
    """1/2 sum (p - q)^2 / (p + q) of two histograms normalised to unit sum."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    s = p + q
    return float(np.clip(0.5 * np.sum(np.where(s > 0, (p - q) ** 2 / np.where(s > 0, s, 1), 0.0)), 0.0, 1.0))


def _edges(ref: np.ndarray, gen: np.ndarray, bins: int) -> np.ndarray:
    """Bins spanning the central 99.8 % of both samples."""
    both = np.concatenate([ref, gen])
    both = both[np.isfinite(both)]
    lo, hi = np.quantile(both, [0.001, 0.999]) if both.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _hist(values: np.ndarray, edges: np.ndarray, label: str):
    import hist

    h = hist.Hist(hist.axis.Variable(edges, name="x", label=label, underflow=True, overflow=True))
    h.fill(np.clip(values, edges[0], edges[-1] - 1e-9 * (edges[-1] - edges[0])))
    return h


def classifier_auc(x_ref: np.ndarray, x_gen: np.ndarray, seed: int, hidden: list[int], epochs: int) -> float:
    """AUC of an MLP separating reference (label 0) from generated (label 1), on a held-out 30 %."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([x_ref, x_gen]).astype(np.float64)
    y = np.concatenate([np.zeros(len(x_ref)), np.ones(len(x_gen))])
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.7 * len(x))
    scaler = StandardScaler().fit(x[:n_train])
    clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), max_iter=int(epochs), early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=8, learning_rate_init=1e-3, alpha=1e-4,
                        random_state=seed % (2**31))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(scaler.transform(x[:n_train]), y[:n_train])
    prob = clf.predict_proba(scaler.transform(x[n_train:]))[:, 1]
    return float(roc_auc_score(y[n_train:], prob))


def validate_sample(name: str, ref: Showers, gen: Showers, calo_cfg: Mapping, seed: int, plot_dir: str | Path,
                    plots: bool = True) -> dict:
    """Separation powers, classifier AUCs and plots of one sample."""
    vcfg = calo_cfg["validation"]
    geometry = ref.geometry
    f_ref = high_level(ref.showers, ref.incident_energies, geometry)
    f_gen = high_level(gen.showers, gen.incident_energies, geometry)
    plot_dir = Path(plot_dir)
    sep: dict[str, float] = {}
    written = []
    for key in f_ref:
        base, _, idx = key.rpartition("_") if key[-1].isdigit() else (key, "", "")
        label_tpl, logx = PRETTY.get(base, (key, False))
        a, b = f_ref[key], f_gen[key]
        if logx:
            a, b = np.log10(np.maximum(a, 1e-3)), np.log10(np.maximum(b, 1e-3))
        edges = _edges(a, b, int(vcfg["bins"]))
        label = label_tpl.replace("{i}", idx)
        h_ref, h_gen = _hist(a, edges, label), _hist(b, edges, label)
        sep[key] = separation_power(h_ref.values(flow=True), h_gen.values(flow=True))
        if plots:
            written.append(plotting.plot_hists_with_ratio(
                [h_ref, h_gen], ["Reference", "GAN"], xlabel=label, ylabel="Normalised showers", density=True,
                path=plot_dir / f"{key}.png", legend_title=f"{name}, S = {sep[key]:.3f}",
                label_kwargs=SHOWER_LABEL))
    # voxel-energy spectrum of non-zero voxels
    va, vb = ref.showers[ref.showers > 0], gen.showers[gen.showers > 0]
    va, vb = np.log10(va), np.log10(vb)
    edges = _edges(va, vb, int(vcfg["bins"]))
    label = r"$\log_{10}$(voxel energy / MeV)"
    h_ref, h_gen = _hist(va, edges, label), _hist(vb, edges, label)
    sep["voxel_energy"] = separation_power(h_ref.values(flow=True), h_gen.values(flow=True))
    if plots:
        written.append(plotting.plot_hists_with_ratio(
            [h_ref, h_gen], ["Reference", "GAN"], xlabel=label, ylabel="Normalised voxels", density=True, logy=True,
            path=plot_dir / "voxel_energy.png", legend_title=f"{name}, S = {sep['voxel_energy']:.3f}",
            label_kwargs=SHOWER_LABEL))
    cseed = int_seed(seed, "validate_calo", name)
    hidden, epochs = list(vcfg["classifier_hidden"]), int(vcfg["classifier_epochs"])
    auc_hl = classifier_auc(classifier_inputs(ref.showers, ref.incident_energies, geometry),
                            classifier_inputs(gen.showers, gen.incident_energies, geometry), cseed, hidden, epochs)

    def vox_inputs(s: Showers) -> np.ndarray:
        return np.concatenate([s.showers / s.incident_energies[:, None],
                               np.log10(s.incident_energies)[:, None]], axis=1)

    auc_vox = classifier_auc(vox_inputs(ref), vox_inputs(gen), cseed + 1, hidden, epochs)
    finite = {k: v for k, v in sep.items() if np.isfinite(v)}
    out = {
        "auc_high_level": auc_hl,
        "auc_voxels": auc_vox,
        "separation_power": finite,
        "separation_power_mean": float(np.mean(list(finite.values()))) if finite else None,
        "n_reference": len(ref),
        "n_generated": len(gen),
        "mean_e_ratio_reference": float(np.mean(f_ref["e_ratio"])),
        "mean_e_ratio_generated": float(np.mean(f_gen["e_ratio"])),
        "plots": [str(p) for p in written],
    }
    log.info("%s: AUC high-level %.3f, voxels %.3f, mean separation power %.4f", name, auc_hl, auc_vox,
             out["separation_power_mean"] or float("nan"))
    return out


def validate(samples: Mapping[str, tuple[str, str, str, str, str]], calo_cfg: Mapping, seed: int, out_json: str,
             plot_root: str, tracked=None, plots: bool | None = None) -> dict:
    """``{sample: (ref_h5, ref_xml, gen_h5, gen_xml, particle)}`` -> metrics.json (+ MLflow)."""
    plots = bool(calo_cfg["validation"]["plots"]) if plots is None else plots
    Path(plot_root).mkdir(parents=True, exist_ok=True)
    metrics = {}
    for name, (ref_h5, ref_xml, gen_h5, gen_xml, particle) in samples.items():
        ref_all = load_sample(ref_h5, ref_xml, particle)
        _, te = split_indices(len(ref_all), float(calo_cfg["test_fraction"]))
        ref = ref_all.subset(te)
        gen = load_sample(gen_h5, gen_xml, particle)
        if len(gen) != len(ref) or not np.allclose(gen.incident_energies, ref.incident_energies, rtol=1e-6):
            from pipeline.errors import InputFileError

            raise InputFileError(f"{gen_h5}: incident energies differ from the held-out showers of {ref_h5}; "
                                 "regenerate it")
        metrics[name] = validate_sample(name, ref, gen, calo_cfg, seed, Path(plot_root) / name, plots)
    write_json(out_json, metrics)
    if tracked is not None:
        flat = {}
        for name, m in metrics.items():
            flat[f"{name}.auc_high_level"] = m["auc_high_level"]
            flat[f"{name}.auc_voxels"] = m["auc_voxels"]
            for k, v in m["separation_power"].items():
                flat[f"{name}.separation_power.{k}"] = v
        tracked.log_metrics(flat)
        tracked.log_artifact(out_json)
        for m in metrics.values():
            for p in m["plots"]:
                tracked.log_artifact(p, artifact_path=f"plots/{Path(p).parent.name}")
    return metrics
