"""Full simulation against FlashSim: histogram overlays with ratio panels, chi2/ndf, yields table.

chi2 of two weighted histograms (full F, flash G, per-bin variances from ``sum w^2``)::

    chi2 = sum_i (G_i - F_i)^2 / (var F_i + var G_i),   ndf = number of bins with an entry in either

(in-range bins; both are normalised to the luminosity, so the test compares shapes *and* rates).
Full and flash share their generator events, so the two are positively correlated and this chi2
is conservative (it overestimates the variance of the difference).

Outputs: one PNG per (sample, variable), ``<plots_dir>/<sample>/<variable>.png``, regions summed (the whole m_mumu window after the VBF
selection), with chi2/ndf in the legend title; ``comparison.json``
``{sample: {variable: {"chi2", "ndf", "chi2_ndf"}}}``; ``yields.json``
``{sample: {region: {"full": [yield, error], "flash": [yield, error]}}}`` (error = sqrt of the
squared weights summed per event number, so that FlashSim's k copies of a generator event count
as one independent event; for full simulation this is sqrt(sum w^2)), and, when the analysis ran
bootstrap replicas (``analysis.bootstrap.replicas``), ``"difference_error_paired"``: the standard
deviation over the replicas of flash - full, the uncertainty of the difference with the shared
generator events taken into account (smaller than the two errors in quadrature when the
simulations agree event by event); ``comparison.json`` then has ``yield_pulls_paired`` too.
``comparison.json`` ``yield_pulls_total``: the squared pulls summed over samples and regions, with
their number and chi2 p-value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline import io, plotting
from pipeline.analysis import processor as proc
from pipeline.errors import InputFileError

log = logging.getLogger(__name__)


def chi2(full, flash) -> tuple[float, int]:
    """chi2 and ndf of two 1-D weighted histograms with the same binning (see module docstring)."""
    f, g = np.asarray(full.values(), float), np.asarray(flash.values(), float)
    vf, vg = np.asarray(full.variances(), float), np.asarray(flash.variances(), float)
    use = (vf + vg) > 0
    return float(np.sum((g[use] - f[use]) ** 2 / (vf[use] + vg[use]))), int(use.sum())


def _variance(y: Mapping) -> float:
    """Variance of a yield: per event number (FlashSim copies counted once) when known."""
    return float(y.get("sumw2_events", y["sumw2"]))


def _replica_yields(res: Mapping, region: str) -> np.ndarray | None:
    """Yield of ``region`` in each bootstrap replica (the bootstrap histogram with its flow bins)."""
    boot = res.get("bootstrap") or {}
    if not boot:
        return None
    h = next(iter(boot.values()))[{"region": region}]
    return np.asarray(h.values(flow=True), float).sum(axis=-1)


def yields_table(results: Mapping[str, Mapping[str, Mapping]]) -> dict:
    """``{sample: {region: {simtype: [yield, error]}}}`` from ``{sample: {simtype: result}}``,
    with ``difference_error_paired`` where both simulations have bootstrap replicas."""
    out: dict = {}
    for sample, by_type in results.items():
        regions = list(next(iter(by_type.values()))["yields"])
        out[sample] = {r: {st: [float(res["yields"][r]["sumw"]), float(np.sqrt(_variance(res["yields"][r])))]
                           for st, res in by_type.items()} for r in regions}
        if {"full", "flash"} <= set(by_type):
            for r in regions:
                yf, yg = _replica_yields(by_type["full"], r), _replica_yields(by_type["flash"], r)
                if yf is not None and yg is not None and len(yf) == len(yg) and len(yf) > 1:
                    out[sample][r]["difference_error_paired"] = float(np.std(yg - yf, ddof=1))
    return out


def yields_agreement(table: Mapping, paired: bool = False) -> dict:
    """Per sample and region: (flash - full) / sqrt(err_full^2 + err_flash^2) ("pull"); with
    ``paired``, divided by ``difference_error_paired`` instead (regions without it are left out)."""
    out: dict = {}
    for sample, regs in table.items():
        for region, v in regs.items():
            (yf, ef), (yg, eg) = v["full"], v["flash"]
            if paired:
                if "difference_error_paired" not in v:
                    continue
                err = float(v["difference_error_paired"])
            else:
                err = float(np.hypot(ef, eg))
            out.setdefault(sample, {})[region] = (yg - yf) / err if err > 0 else 0.0
    return out


def pulls_total(table: Mapping) -> dict:
    """Sum of the squared yield pulls over every (sample, region) with a nonzero error, its
    number of terms and the chi2 p-value: whether the set of pulls is what statistical
    fluctuations give (the largest of many pulls exceeds 2 in a fair fraction of comparisons)."""
    from scipy.stats import chi2 as chi2_dist

    terms = [(v["flash"][0] - v["full"][0]) / float(np.hypot(v["full"][1], v["flash"][1]))
             for regs in table.values() for v in regs.values() if np.hypot(v["full"][1], v["flash"][1]) > 0]
    total = float(np.sum(np.square(terms)))
    return {"chi2": total, "ndf": len(terms), "p_value": float(chi2_dist.sf(total, len(terms))) if terms else None,
            "max_abs_pull": float(np.max(np.abs(terms))) if terms else None}


def compare(full_paths: Mapping[str, str], flash_paths: Mapping[str, str], plots_dir: str,
            yields_json: str, comparison_json: str, pdf: bool = False) -> dict:
    """Overlay full and flash histograms of every sample; write plots, yields.json, comparison.json."""
    from pipeline.analysis.execute import load_result

    if set(full_paths) != set(flash_paths):
        raise InputFileError(f"full samples {sorted(full_paths)} and flash samples {sorted(flash_paths)} differ")
    results = {s: {"full": load_result(full_paths[s]), "flash": load_result(flash_paths[s])} for s in full_paths}
    out_dir = Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison: dict = {}
    for sample, r in results.items():
        (out_dir / sample).mkdir(exist_ok=True)
        lumi = r["full"]["luminosity_fb"]
        for var, hfull in r["full"]["hists"].items():
            if var not in r["flash"]["hists"]:
                continue
            hf = hfull[{"region": sum}]
            hg = r["flash"]["hists"][var][{"region": sum}]
            c2, ndf = chi2(hf, hg)
            comparison.setdefault(sample, {})[var] = {"chi2": c2, "ndf": ndf,
                                                      "chi2_ndf": c2 / ndf if ndf else float("nan")}
            plotting.plot_hists_with_ratio(
                [hf, hg], ["Full simulation", "FlashSim"], xlabel=proc.axis_label(var),
                ylabel=f"Events / bin ({lumi:g} fb$^{{-1}}$)", path=out_dir / sample / f"{var}.png",
                ratio_label="Flash / Full", legend_title=f"{sample}, VBF: $\\chi^2$/ndf = {c2:.1f}/{ndf}",
                pdf=pdf)
    table = yields_table(results)
    io.write_json(yields_json, table)
    agreement = {"chi2": comparison, "yield_pulls": yields_agreement(table), "yield_pulls_total": pulls_total(table)}
    if any("difference_error_paired" in v for regs in table.values() for v in regs.values()):
        agreement["yield_pulls_paired"] = yields_agreement(table, paired=True)
    io.write_json(comparison_json, agreement)
    return {"yields": table, "comparison": comparison, "yield_pulls_total": agreement["yield_pulls_total"]}

