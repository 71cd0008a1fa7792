"""``validate_flashsim``: flash against full simulation on held-out events from the same gen inputs.

Only events of the validation split (:func:`pipeline.seeds.is_holdout`), which no
model was trained on, are compared. Both sides are read from NanoAOD files (the full-simulation
sample and its flash copy, which shares ``event``), as an analysis would read them. A flash object
carries weight 1/k (k = oversampling), a full one weight 1.

Per object (``jet``, ``muon``), every contract variable of the reco collection:

* histograms with ratio panels (``<obj>_<var>.png``);
* W1 of the *standardised* variable (both sides divided by the full simulation's standard deviation,
  after subtracting its mean): ``metrics[obj]['w1'][var]``, plus the multiplicity per event
  (``n_per_event``); beside it ``w1_bootstrap[var]``, the W1 of the full simulation against
  bootstrap resamples of itself (``flashsim.validation.w1_bootstraps``), its statistical scale;
* correlation matrices, full / flash / difference (``<obj>_correlations.png``);
* 2D contours (jets: log pT vs log mass, logit b-tag vs logit qgl; muons: log pT vs log isolation,
  dxy vs dz), 50/80/95 % density levels;
* response and resolution versus gen pT and eta (matched objects, through the gen index);
* b-tag ROC split by hadron flavour (b vs light and c vs light), full vs flash;
* a classifier two-sample test: ``HistGradientBoostingClassifier`` on all variables of the object,
  equal numbers of full and flash objects, AUC on a held-out half (``metrics[obj]['c2st_auc']``;
  0.5 = indistinguishable).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline import io, nanoaod
from pipeline.errors import ConfigError, EmptySelectionError
from pipeline.seeds import is_holdout, rng

log = logging.getLogger(__name__)

OBJECTS = {"jet": ("Jet", "genJetIdx", "GenJet"), "muon": ("Muon", "genPartIdx", "GenPart")}
VARIABLES = {
    "jet": [f for f in nanoaod.JET if f != "genJetIdx"],
    "muon": [f for f in nanoaod.MUON if f not in ("genPartIdx", "mass")],  # mass is a constant
}
LABELS = {
    "pt": "$p_T$ [GeV]", "eta": r"$\eta$", "phi": r"$\phi$ [rad]", "mass": "mass [GeV]",
    "btagDeepFlavB": "btagDeepFlavB", "qgl": "qgl", "nConstituents": "nConstituents", "jetId": "jetId",
    "hadronFlavour": "hadronFlavour", "charge": "charge", "pfRelIso04_all": "pfRelIso04_all",
    "mediumId": "mediumId", "tightId": "tightId", "dxy": "dxy [cm]", "dz": "dz [cm]", "ip3d": "ip3d [cm]",
}


def _read(files: Sequence[str], obj: str, holdout: float, weight: float) -> dict[str, np.ndarray]:
    """Flat arrays of the reco objects of the held-out events, with their gen partner's pT/eta."""
    coll, idx, gcoll = OBJECTS[obj]
    fields = VARIABLES[obj]
    branches = ["event", *nanoaod.branches(coll, [*fields, idx]), f"{gcoll}_pt", f"{gcoll}_eta"]
    parts: list[dict] = []
    n_events = []
    for _, arr in io.iterate_events(files, branches, stage="validate_flashsim"):
        sel = is_holdout(np.asarray(arr["event"], dtype=np.uint64), holdout)
        reco = io.collection(arr, coll, [*fields, idx])[sel]
        gen = io.collection(arr, gcoll, ["pt", "eta"])[sel]
        n_events.append(np.asarray(ak.num(reco, axis=1)))
        gi = reco[idx]
        ok = (gi >= 0) & (gi < ak.num(gen, axis=1))
        safe = ak.where(ok, gi, 0)
        pad = ak.pad_none(gen, 1, axis=1)
        gpt = ak.where(ok, pad["pt"][safe], np.nan)
        geta = ak.where(ok, pad["eta"][safe], np.nan)
        part = {f: np.asarray(ak.flatten(reco[f])).astype(np.float64) for f in fields}
        part["gen_pt"] = np.asarray(ak.flatten(ak.fill_none(gpt, np.nan))).astype(np.float64)
        part["gen_eta"] = np.asarray(ak.flatten(ak.fill_none(geta, np.nan))).astype(np.float64)
        parts.append(part)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    out["n_per_event"] = np.concatenate(n_events).astype(np.float64) if n_events else np.zeros(0)
    out["weight"] = np.full(len(out.get("pt", [])), weight)
    out["event_weight"] = np.full(len(out["n_per_event"]), weight)
    return out


def wasserstein_standardised(a: np.ndarray, b: np.ndarray, wa=None, wb=None) -> float:
    """W1 between a and b after standardising both with a's mean and standard deviation."""
    from scipy.stats import wasserstein_distance

    mu, sd = np.average(a, weights=wa), np.sqrt(np.cov(a, aweights=wa)) if len(a) > 1 else 1.0
    sd = sd if sd > 0 else 1.0
    return float(wasserstein_distance((a - mu) / sd, (b - mu) / sd, wa, wb))


def w1_bootstrap(a: np.ndarray, wa: np.ndarray, n: int, seed_rng: np.random.Generator) -> float:
    """The statistical scale of :func:`wasserstein_standardised` for this sample: the mean W1
    between ``a`` and ``n`` bootstrap resamples of it (0 if ``n`` is 0). A heavy-tailed variable
    (isolation, impact parameters) has a large one: its standardised W1 rests on a few dozen
    objects in the tail."""
    if n <= 0 or len(a) < 2:
        return 0.0
    vals = [wasserstein_standardised(a, a[idx], wa, wa[idx])
            for idx in (seed_rng.integers(len(a), size=len(a)) for _ in range(n))]
    return float(np.mean(vals))


def c2st_auc(full: np.ndarray, flash: np.ndarray, max_rows: int, seed_rng: np.random.Generator) -> float:
    """AUC of a gradient-boosted classifier separating full from flash (held-out half)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    n = min(len(full), len(flash), max_rows)
    if n < 20:
        raise EmptySelectionError(f"two-sample test: only {n} objects per class")
    a = full[seed_rng.choice(len(full), n, replace=False)]
    b = flash[seed_rng.choice(len(flash), n, replace=False)]
    x = np.vstack([a, b])
    y = np.r_[np.zeros(n), np.ones(n)]
    rs = int(seed_rng.integers(2**31))
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, stratify=y, random_state=rs)
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True, random_state=rs)
    clf.fit(xtr, ytr)
    return float(roc_auc_score(yte, clf.predict_proba(xte)[:, 1]))


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _edges(var: str, a: np.ndarray, nbins: int) -> np.ndarray:
    if var in ("nConstituents", "jetId", "hadronFlavour", "charge", "mediumId", "tightId"):
        lo, hi = np.floor(a.min()) if len(a) else 0, np.ceil(a.max()) if len(a) else 1
        return np.arange(lo - 0.5, hi + 1.5, max(1.0, np.ceil((hi - lo + 1) / 60)))
    lo, hi = np.quantile(a, [0.002, 0.998]) if len(a) else (0, 1)
    if var in ("pt", "mass"):
        lo = max(lo, 0.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, nbins + 1)


def _hist(values, weights, edges):
    import hist

    h = hist.Hist(hist.axis.Variable(edges), storage=hist.storage.Weight())
    h.fill(values, weight=weights)
    return h


def _plot_variables(obj, full, flash, out, nbins, pdf):
    from pipeline import plotting

    paths = []
    for var in [*VARIABLES[obj], "n_per_event"]:
        a, b = full[var], flash[var]
        wa = full["event_weight" if var == "n_per_event" else "weight"]
        wb = flash["event_weight" if var == "n_per_event" else "weight"]
        edges = _edges("nConstituents" if var == "n_per_event" else var, a, nbins)
        hs = [_hist(a, wa, edges), _hist(b, wb, edges)]
        logy = var in ("pt", "mass", "dxy", "dz", "ip3d", "pfRelIso04_all")
        xl = f"{OBJECTS[obj][0]} {LABELS[var]}" if var in LABELS else f"{OBJECTS[obj][0]}s per event"
        paths.append(plotting.plot_hists_with_ratio(
            hs, ["Full sim.", "FlashSim"], xlabel=xl, ylabel="Objects" if var != "n_per_event" else "Events",
            path=Path(out) / f"{obj}_{var}.png", logy=logy, ratio_label="Flash / Full", pdf=pdf))
    return paths


def _plot_correlations(obj, full, flash, out, pdf):
    import matplotlib.pyplot as plt

    from pipeline import plotting

    with plotting.style():
        names = VARIABLES[obj]
        ca = np.nan_to_num(np.corrcoef(np.vstack([full[v] for v in names])))
        cb = np.nan_to_num(np.corrcoef(np.vstack([flash[v] for v in names])))
        fig, axes = plt.subplots(1, 3, figsize=(27, 9))
        for ax, m, title, cmap, lim in zip(axes, (ca, cb, cb - ca), ("Full sim.", "FlashSim", "Flash - Full"),
                                           ("RdBu_r", "RdBu_r", "PiYG"), (1.0, 1.0, 0.2), strict=True):
            im = ax.imshow(m, vmin=-lim, vmax=lim, cmap=cmap)
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize="x-small")
            ax.set_yticks(range(len(names)), names, fontsize="x-small")
            ax.set_title(title)
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        plotting.save(fig, Path(out) / f"{obj}_correlations.png", pdf=pdf)
        return float(np.abs(cb - ca).max())


def _plot_contours(obj, full, flash, out, pdf):
    import matplotlib.pyplot as plt

    from pipeline import plotting

    with plotting.style():
        # axis transforms: log10 for pT / mass / isolation, logit for scores in (0, 1), asinh for impact parameters
        pairs = {"jet": [("pt", "mass", "log10", "log10"), ("btagDeepFlavB", "qgl", "logit", "logit")],
                 "muon": [("pt", "pfRelIso04_all", "log10", "log10"), ("dxy", "dz", "asinh", "asinh")]}[obj]
        for xv, yv, logx, logy in pairs:
            sel_a = np.ones(len(full[xv]), bool)
            sel_b = np.ones(len(flash[xv]), bool)
            if xv == "btagDeepFlavB":
                sel_a, sel_b = full[xv] >= 0, flash[xv] >= 0
            def tr(v, how):
                if how == "log10":
                    return np.log10(np.clip(v, 1e-3, None))
                if how == "logit":
                    p = np.clip(v, 1e-5, 1 - 1e-5)
                    return np.log(p / (1 - p))
                return np.arcsinh(v / 1e-3)  # asinh(x / 10 um)
            xa, ya = tr(full[xv][sel_a], logx), tr(full[yv][sel_a], logy)
            xb, yb = tr(flash[xv][sel_b], logx), tr(flash[yv][sel_b], logy)
            if len(xa) < 10 or len(xb) < 10:
                continue
            xe = np.linspace(*np.quantile(xa, [0.005, 0.995]), 31)
            ye = np.linspace(*np.quantile(ya, [0.005, 0.995]), 31)
            fig, ax = plotting.figure()
            for x, y, w, color, label in ((xa, ya, full["weight"][sel_a], "C0", "Full sim."),
                                          (xb, yb, flash["weight"][sel_b], "C1", "FlashSim")):
                h, _, _ = np.histogram2d(x, y, bins=[xe, ye], weights=w, density=True)
                levels = np.quantile(h[h > 0], [0.5, 0.8, 0.95]) if (h > 0).sum() > 3 else None
                cs = ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T, levels=levels, colors=color)
                cs.collections[0].set_label(label) if hasattr(cs, "collections") else None
                ax.plot([], [], color=color, label=label)
            names = {"log10": "log10 {}", "logit": "logit {}", "asinh": "asinh({} / 10 um)"}
            ax.set_xlabel(names[logx].format(f"{OBJECTS[obj][0]} {LABELS[xv]}"))
            ax.set_ylabel(names[logy].format(f"{OBJECTS[obj][0]} {LABELS[yv]}"))
            ax.legend()
            plotting.save(fig, Path(out) / f"{obj}_contour_{xv}_{yv}.png", pdf=pdf)


def _plot_response(obj, full, flash, out, pdf):
    from pipeline import plotting
    from pipeline.stats import profile

    ma, mb = np.isfinite(full["gen_pt"]), np.isfinite(flash["gen_pt"])
    ra, rb = full["pt"][ma] / full["gen_pt"][ma], flash["pt"][mb] / flash["gen_pt"][mb]
    pt_bins = np.array([15, 20, 30, 40, 60, 80, 120, 200, 400]) if obj == "jet" else np.array([5, 10, 20, 30, 40, 60, 100, 200])
    eta_bins = np.linspace(-4.7, 4.7, 13) if obj == "jet" else np.linspace(-2.4, 2.4, 9)
    summary = {}
    for xname, xa, xb, bins, logx in (("gen_pt", full["gen_pt"][ma], flash["gen_pt"][mb], pt_bins, True),
                                      ("gen_eta", full["gen_eta"][ma], flash["gen_eta"][mb], eta_bins, False)):
        pa = profile(xa, ra, bins)
        pb = profile(xb, rb, bins)
        for what in ("response", "resolution"):
            plotting.plot_profiles([pa, pb], ["Full sim.", "FlashSim"], what=what,
                                   xlabel=f"Gen {OBJECTS[obj][0].lower()} " + ("$p_T$ [GeV]" if xname == "gen_pt" else r"$\eta$"),
                                   ylabel=f"$p_T$ {what} (reco / gen)", logx=logx,
                                   hline=1.0 if what == "response" else None,
                                   path=Path(out) / f"{obj}_{what}_vs_{xname}.png", pdf=pdf)
        with np.errstate(invalid="ignore"):
            summary[f"max_abs_response_diff_vs_{xname}"] = float(np.nanmax(np.abs(pa.center - pb.center)))
    return summary


def _plot_btag_roc(full, flash, out, pdf):
    from pipeline import plotting

    with plotting.style():
        fig, ax = plotting.figure()
        aucs = {}
        for sig, name, ls in ((5, "b", "-"), (4, "c", "--")):
            for d, label, color in ((full, "Full sim.", "C0"), (flash, "FlashSim", "C1")):
                tr = d["btagDeepFlavB"] >= 0
                s = d["btagDeepFlavB"][tr & (d["hadronFlavour"] == sig)]
                b = d["btagDeepFlavB"][tr & (d["hadronFlavour"] == 0)]
                if len(s) < 5 or len(b) < 5:
                    continue
                thr = np.unique(np.quantile(np.r_[s, b], np.linspace(0, 1, 201)))
                eff_s = np.array([(s > t).mean() for t in thr])
                eff_b = np.array([(b > t).mean() for t in thr])
                ax.plot(eff_s, np.clip(eff_b, 1e-4, None), ls, color=color, label=f"{label}, {name} vs light")
                aucs[f"btag_auc_{name}_vs_light_{'full' if d is full else 'flash'}"] = float(
                    -np.trapezoid(1 - eff_b, eff_s) if hasattr(np, "trapezoid") else -np.trapz(1 - eff_b, eff_s))
        ax.set_yscale("log")
        ax.set_xlabel("Signal-flavour efficiency")
        ax.set_ylabel("Light-flavour mistag rate")
        ax.legend(fontsize="small")
        plotting.save(fig, Path(out) / "jet_btag_roc.png", pdf=pdf)
        return aucs


# --------------------------------------------------------------------------------------------
def validate_flashsim(full_files: Mapping[str, Sequence[str]], flash_files: Mapping[str, Sequence[str]],
                      out_metrics: str, fcfg: Mapping, seed: int, pdf: bool = False, tracked=None) -> dict:
    """Compare flash and full simulation on the held-out events; write ``out_metrics`` and plots
    next to it; log the figures and plots to ``tracked`` (an MLflow run) if given.

    ``full_files`` / ``flash_files``: per sample (``flashsim.validation.samples``) its full-sim and
    flash files; ``fcfg``: the ``flashsim`` config block; ``seed``: the master seed; ``pdf``: also
    write a PDF of every plot (``plots.samples.pdf``)."""
    vcfg = fcfg["validation"]
    for s in full_files:
        if s not in flash_files:
            raise ConfigError(f"flashsim.validation.samples: no flash files for sample '{s}'")
    out = Path(out_metrics).parent
    out.mkdir(parents=True, exist_ok=True)
    k = int(fcfg["oversampling_k"])
    holdout = float(fcfg["holdout_fraction"])
    pdf = bool(pdf)
    metrics: dict = {"holdout_fraction": holdout, "oversampling_k": k, "samples": list(full_files)}
    g = rng(seed, "validate_flashsim")
    for obj in OBJECTS:
        full_parts = [_read(list(full_files[s]), obj, holdout, 1.0) for s in full_files]
        flash_parts = [_read(list(flash_files[s]), obj, holdout, 1.0 / k) for s in full_files]
        full = {key: np.concatenate([p[key] for p in full_parts]) for key in full_parts[0]}
        flash = {key: np.concatenate([p[key] for p in flash_parts]) for key in flash_parts[0]}
        if len(full["pt"]) < 20 or len(flash["pt"]) < 20:
            raise EmptySelectionError(f"validate_flashsim: too few held-out {obj}s (full {len(full['pt'])}, "
                                      f"flash {len(flash['pt'])}); raise flashsim.holdout_fraction or the sample sizes")
        w1, w1_boot = {}, {}
        for var in [*VARIABLES[obj], "n_per_event"]:
            wk = "event_weight" if var == "n_per_event" else "weight"
            w1[var] = wasserstein_standardised(full[var], flash[var], full[wk], flash[wk])
            w1_boot[var] = w1_bootstrap(full[var], full[wk], int(vcfg["w1_bootstraps"]), g)
        feats = VARIABLES[obj]
        auc = c2st_auc(np.column_stack([full[v] for v in feats]), np.column_stack([flash[v] for v in feats]),
                       int(vcfg["c2st_max_rows"]), g)
        m = {"c2st_auc": auc, "w1": w1, "w1_max": max(w1.values()), "w1_bootstrap": w1_boot,
             "n_full": int(len(full["pt"])), "n_flash_weighted": float(flash["weight"].sum()),
             "n_events_full": int(len(full["n_per_event"]))}
        _plot_variables(obj, full, flash, out, int(vcfg["hist_bins"]), pdf)
        m["max_abs_correlation_diff"] = _plot_correlations(obj, full, flash, out, pdf)
        _plot_contours(obj, full, flash, out, pdf)
        m.update(_plot_response(obj, full, flash, out, pdf))
        if obj == "jet":
            m.update(_plot_btag_roc(full, flash, out, pdf))
        metrics[obj] = m
        log.info("validate_flashsim %s: C2ST AUC %.4f, max W1 %.4f (%s)", obj, auc, m["w1_max"],
                 max(w1, key=w1.get))
    io.write_json(out_metrics, _finite(metrics))
    if tracked is not None:
        flat = {}
        for obj in OBJECTS:
            flat[f"{obj}_c2st_auc"] = metrics[obj]["c2st_auc"]
            flat.update({f"{obj}_w1_{v}": x for v, x in metrics[obj]["w1"].items()})
        tracked.log_metrics(flat)
        tracked.log_artifact(str(out), artifact_path="validation")
    return metrics


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
