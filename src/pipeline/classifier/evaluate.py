"""Evaluation of the DisCo classifiers on the test split (rule ``evaluate_classifier``).

Per lambda:

``auc``
    ROC AUC with the physical weights (sklearn).
``r50``
    Background rejection 1/eps_B at 50 % signal efficiency, eps_B the weighted background fraction
    above the score cut that keeps half the weighted signal (``threshold_eff50``).
``inv_jsd``
    1/JSD between the normalised weighted background m_mumu histograms (``evaluation.jsd_bins``
    bins over the population window) of the events that pass and that fail the 50 % cut. JSD in
    bits (base-2 logarithm, so 0 <= JSD <= 1).
``inv_jsd_floor``
    The statistical floor: 1/(mean JSD) of ``evaluation.floor_repeats`` seeded random splits of
    the test background into two sets with the raw sizes of the pass and fail sets (same weights).
    A perfectly decorrelated classifier reaches it on average; a 1/JSD above it is fluctuation.
``dcor_weighted_sq``
    dCor^2(m_mumu, score) of the test background with its physical weights
    (:func:`pipeline.classifier.disco.distance_corr_sq`, float64).
``dcor_sq``, ``dcor``
    The unweighted dCor^2 and dCor from the ``dcor`` package (cross-check; the package has no
    weights). At most ``evaluation.dcor_max_events`` background events (a seeded random subset)
    enter the dCor figures (O(n^2) memory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import io
from pipeline.classifier.data import Dataset, load_population
from pipeline.classifier.disco import distance_corr_sq
from pipeline.classifier.naming import lambda_tag
from pipeline.seeds import rng

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# figures of merit
# --------------------------------------------------------------------------------------------
def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``values`` under ``weights`` (inverse of the weighted CDF)."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cdf = np.cumsum(w) / w.sum()
    return float(v[min(np.searchsorted(cdf, q, side="left"), len(v) - 1)])


def threshold_at_efficiency(score: np.ndarray, label: np.ndarray, weight: np.ndarray, eff: float) -> float:
    """Score cut keeping the fraction ``eff`` of the weighted signal (``score > cut`` passes)."""
    sig = label == 1
    return weighted_quantile(score[sig], weight[sig], 1.0 - eff)


def jsd_bits(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) of two histograms (normalised here)."""
    p = np.clip(np.asarray(p, float), 0, None)
    q = np.clip(np.asarray(q, float), 0, None)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def _hist(m: np.ndarray, w: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(m, bins=edges, weights=w)[0]


def sculpting_jsd(m: np.ndarray, w: np.ndarray, passed: np.ndarray, edges: np.ndarray) -> float:
    """JSD between the background m_mumu histograms of the passing and the failing events."""
    return jsd_bits(_hist(m[passed], w[passed], edges), _hist(m[~passed], w[~passed], edges))


def jsd_floor(m: np.ndarray, w: np.ndarray, n_pass: int, edges: np.ndarray, repeats: int,
              gen: np.random.Generator) -> float:
    """Mean JSD of random splits of the background into sets of ``n_pass`` and the rest."""
    vals = []
    for _ in range(int(repeats)):
        passed = np.zeros(len(m), dtype=bool)
        passed[gen.choice(len(m), size=n_pass, replace=False)] = True
        vals.append(sculpting_jsd(m, w, passed, edges))
    return float(np.mean(vals))


def r_at(score, label, weight, eff: float) -> tuple[float, float]:
    """(1/eps_B, cut) at signal efficiency ``eff``."""
    cut = threshold_at_efficiency(score, label, weight, eff)
    bkg = label == 0
    eps_b = weight[bkg][score[bkg] > cut].sum() / weight[bkg].sum()
    return (float(1.0 / eps_b) if eps_b > 0 else float("inf")), cut


def dcor_figures(m: np.ndarray, score: np.ndarray, w: np.ndarray, max_events: int,
                 gen: np.random.Generator) -> dict[str, float]:
    import dcor

    if len(m) > max_events:
        idx = np.sort(gen.choice(len(m), size=max_events, replace=False))
        m, score, w = m[idx], score[idx], w[idx]
    m64, s64 = np.asarray(m, np.float64), np.asarray(score, np.float64)
    with torch.no_grad():
        weighted = float(distance_corr_sq(torch.from_numpy(m64), torch.from_numpy(s64),
                                          torch.from_numpy(np.asarray(w, np.float64))))
    return {"dcor_weighted_sq": weighted, "dcor_sq": float(dcor.distance_correlation_sqr(m64, s64)),
            "dcor": float(dcor.distance_correlation(m64, s64)), "n_dcor_events": int(len(m))}


def metrics_of(score: np.ndarray, test: Dataset, ecfg: Mapping, window: tuple[float, float],
               gen: np.random.Generator) -> dict[str, Any]:
    """All figures of merit of one classifier on the test split (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    label, w = test.label, test.weight
    auc = float(roc_auc_score(label, score, sample_weight=w))
    r50, cut50 = r_at(score, label, w, 0.5)
    bkg = label == 0
    edges = np.linspace(window[0], window[1], int(ecfg["jsd_bins"]) + 1)
    mb, wb, sb = test.m_mumu[bkg].astype(np.float64), w[bkg], score[bkg]
    passed = sb > cut50
    jsd = sculpting_jsd(mb, wb, passed, edges)
    floor = jsd_floor(mb, wb, int(passed.sum()), edges, int(ecfg["floor_repeats"]), gen)
    out = {
        "auc": auc, "r50": r50, "threshold_eff50": cut50,
        "jsd_bits": jsd, "inv_jsd": 1.0 / jsd if jsd > 0 else float("inf"),
        "jsd_floor_bits": floor, "inv_jsd_floor": 1.0 / floor if floor > 0 else float("inf"),
        "n_test_signal": int((label == 1).sum()), "n_test_background": int(bkg.sum()),
        "n_test_background_pass50": int(passed.sum()),
    }
    out.update(dcor_figures(mb, sb, wb, int(ecfg["dcor_max_events"]), gen))
    return out


def score_dataset(scorer, d: Dataset) -> np.ndarray:
    with torch.no_grad():
        return scorer(torch.from_numpy(d.x)).numpy().astype(np.float64)


def acceptance(metrics: Mapping[str, Mapping], chosen: str) -> dict[str, Any]:
    """The issue's criterion at the chosen lambda against lambda = 0 (when lambda = 0 was trained)."""
    if "0" not in metrics:
        return {"reference": None}
    ref, ch = metrics["0"], metrics[chosen]
    gain = ch["inv_jsd"] / ref["inv_jsd"]
    to_floor = ch["inv_jsd_floor"] / ch["inv_jsd"]
    r50_loss = 1.0 - ch["r50"] / ref["r50"]
    return {"reference": "0", "inv_jsd_gain": gain, "floor_over_inv_jsd": to_floor, "r50_loss": r50_loss,
            "decorrelated": bool(gain >= 10.0 or to_floor <= 2.0), "r50_ok": bool(r50_loss <= 0.2),
            "passed": bool((gain >= 10.0 or to_floor <= 2.0) and r50_loss <= 0.2)}


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str) -> str:
    from pipeline import plotting

    with plotting.style():
        fig, ax = plotting.figure()
        for (tag, (eff_s, rej)), color in zip(curves.items(), plotting._colors(len(curves))):
            ax.plot(eff_s, rej, label=f"$\\lambda$ = {tag}", color=color)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
        ax.axvline(0.5, color="0.6", linestyle=":")
        ax.legend(title="DisCo", loc="upper right")
        return plotting.save(fig, path)


def plot_sculpting(score: np.ndarray, test: Dataset, efficiencies: Sequence[float], edges: np.ndarray,
                   tag: str, path: str) -> str:
    import hist

    from pipeline import plotting

    bkg = test.label == 0
    m, w, s = test.m_mumu[bkg], test.weight[bkg], score[bkg]

    def h(mask):
        out = hist.Hist(hist.axis.Variable(edges, name="m_mumu"), storage=hist.storage.Weight())
        out.fill(m[mask], weight=w[mask])
        return out

    hists, labels = [h(np.ones(len(m), bool))], ["all background"]
    for eff in efficiencies:
        cut = threshold_at_efficiency(score, test.label, test.weight, eff)
        hists.append(h(s > cut))
        labels.append(f"pass, $\\varepsilon_S$ = {eff:g}")
    cut50 = threshold_at_efficiency(score, test.label, test.weight, 0.5)
    hists.append(h(s <= cut50))
    labels.append(r"fail, $\varepsilon_S$ = 0.5")
    return plotting.plot_hists_with_ratio(
        hists, labels, reference_index=0, xlabel=r"$m_{\mu\mu}$ [GeV]", ylabel="Normalised background",
        density=True, path=path, ratio_label="Ratio to\nall", legend_title=f"DisCo $\\lambda$ = {tag}")


def plot_r50_vs_invjsd(metrics: Mapping[str, Mapping], chosen: str, path: str) -> str:
    """R50 versus 1/JSD, one point per lambda (the chosen one a star); the grey open circle on the
    same row is that classifier's statistical floor of 1/JSD."""
    from pipeline import plotting

    with plotting.style():
        fig, ax = plotting.figure()
        xmax = 0.0
        for i, (tag, mt) in enumerate(metrics.items()):
            x, y, floor = mt["inv_jsd"], mt["r50"], mt["inv_jsd_floor"]
            xmax = max(xmax, x, floor)
            ax.plot([x, floor], [y, y], color="0.6", linestyle=":", linewidth=1.5)
            ax.scatter([floor], [y], s=70, facecolors="none", edgecolors="0.4",
                       label="statistical floor of 1/JSD" if i == 0 else None)
            ax.scatter([x], [y], s=160 if tag == chosen else 70, marker="*" if tag == chosen else "o",
                       color="C3" if tag == chosen else "C0", zorder=3,
                       label=f"chosen $\\lambda$ = {tag}" if tag == chosen else None)
            ax.annotate(f"$\\lambda$ = {tag}", (x, y), textcoords="offset points", xytext=(8, 8), fontsize="small")
        ax.set_xlim(0, 1.25 * xmax if np.isfinite(xmax) and xmax > 0 else 1)
        ax.set_ylim(0, 1.3 * max(mt["r50"] for mt in metrics.values() if np.isfinite(mt["r50"])))
        ax.set_xlabel("1/JSD (background $m_{\\mu\\mu}$, pass vs fail at $\\varepsilon_S$ = 0.5)")
        ax.set_ylabel(r"$R_{50}$ = $1/\varepsilon_B$ at $\varepsilon_S$ = 0.5")
        ax.legend(loc="upper right")
        return plotting.save(fig, path)


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def evaluate_classifiers(skims: Mapping[str, str], roles: Mapping[str, str], scorers: Mapping[str, str],
                         ccfg: Mapping, seed: int, out_dir: str, plot_dir: str) -> dict[str, Any]:
    """Score the test split of the skims (``sample -> path``, ``roles``: ``sample ->
    signal/background``) with every scorer (``lambda tag -> TorchScript file``) under the
    ``classifier`` config block ``ccfg``; write ``{out_dir}/lambda_{tag}/scores.parquet``, the plots
    under ``plot_dir``, and return the metrics (the caller writes metrics.json)."""
    from sklearn.metrics import roc_curve

    ecfg = ccfg["evaluation"]
    chosen = lambda_tag(ccfg["chosen_lambda"])
    torch.set_num_threads(int(ccfg["threads"]))
    test = load_population(skims, roles, ccfg)["test"]
    pop = ccfg["population"]
    window = (float(pop["mmumu_min_gev"]), float(pop["mmumu_max_gev"]))
    edges = np.linspace(window[0], window[1], int(ecfg["plot_bins"]) + 1)
    metrics: dict[str, Any] = {}
    curves = {}
    for tag, path in scorers.items():
        scorer = torch.jit.load(str(path)).eval()
        score = score_dataset(scorer, test)
        gen = rng(int(seed), "evaluate_classifier", tag)
        metrics[tag] = {"lambda": float(tag), **metrics_of(score, test, ecfg, window, gen)}
        log.info("lambda %s: %s", tag, {k: round(v, 5) if isinstance(v, float) else v
                                         for k, v in metrics[tag].items()})
        io.write_parquet(Path(out_dir) / f"lambda_{tag}" / "scores.parquet", pd.DataFrame({
            "score": score.astype(np.float32), "label": test.label.astype(np.int8),
            "m_mumu": test.m_mumu.astype(np.float32), "weight": test.weight.astype(np.float64),
            "sample": test.sample.astype(str)}))
        fpr, tpr, _ = roc_curve(test.label, score, sample_weight=test.weight)
        ok = fpr > 0
        curves[tag] = (tpr[ok], 1.0 / fpr[ok])
        plot_sculpting(score, test, list(ecfg["efficiencies"]), edges, tag,
                       str(Path(plot_dir) / f"mmumu_sculpting_lambda_{tag}.png"))
    plot_roc(curves, str(Path(plot_dir) / "roc.png"))
    plot_r50_vs_invjsd(metrics, chosen, str(Path(plot_dir) / "r50_vs_invjsd.png"))
    return {"lambdas": metrics, "chosen": chosen, "jsd_log_base": 2, "acceptance": acceptance(metrics, chosen)}

