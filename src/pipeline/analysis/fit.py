"""Statistical closure of FlashSim with pyhf: the same physics result from full and flash simulation?

Model (one per simulation type): one channel, the signal region; templates of ``analysis.fit.variable``
(the DisCo score or m_mumu) from the analysis histograms: signal = the samples with role signal,
background = the sum of the background samples; signal scaled by the normfactor ``mu``; MC
statistical uncertainties as Barlow-Beeston-lite ``staterror`` (sqrt(sum w^2) per bin). Bins
without background in either simulation are dropped (the same bins for both models, so that
each model can be fitted to the other's data).

FlashSim's MC statistical uncertainty, two ways (``mc_stat`` of :func:`templates`):

- ``flash`` (the closure test): *equal statistics*, k x sum w^2 per bin for k flash copies of
  weight w/k per gen event: the variance a flash sample of the full simulation's size (one reco
  event per gen event) has, in expectation the full simulation's own. The closure then compares
  the two simulations, not the two sample sizes.
- ``flash_oversampled``: the flash sample's own uncertainty, per event number (the k copies of a
  gen event summed before squaring: ``sumw2_events / sumw2`` of the region per sample). The k
  copies average out the reco-level randomness, so this is smaller than the full simulation's
  (the point of oversampling); where MC statistics dominate the expected significance (the
  laptop config: ~40 background MC events in the signal region) flash then gives a larger one.

Per model, on its own Asimov data (mu = 1):

- ``expected_significance``: Z = Phi^-1(1 - p0), p0 of the discovery test (``q0``, asymptotic
  formulae, ``pyhf.infer.hypotest(0, asimov, test_stat="q0")``)
- ``mu_uncertainty``: the profile-likelihood uncertainty of mu in the fit to the Asimov data
  (half the width of -2 Delta ln L < 1; HESSE's in ``mu_uncertainty_hesse``)
- ``expected_significance_stat_only``: the Asimov formula without MC statistical uncertainties
  (what the model would give with infinite MC statistics), to separate the two effects

Cross fits: each model fitted to the other's Asimov data (the other's expected counts with its
own auxiliary data): fitted mu and its HESSE uncertainty. If FlashSim closes, mu = 1 within
the uncertainty.

Statistical uncertainty of the closure (``bootstrap``, with ``analysis.bootstrap.replicas``): full
and flash are built from the same generator events, so their difference is not the difference of
two independent samples. Each bootstrap replica (the analysis's histograms refilled with Poisson(1)
weights per generator event, the same in both simulations) gives the two models again; the spread
over the replicas of flash/full - 1 (of the expected significance, of its stat-only version, of the
background yield) is the uncertainty of the nominal difference, ``significance_relative_difference_uncertainty``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline import io
from pipeline.errors import ConfigError, EmptySelectionError

log = logging.getLogger(__name__)

DEFAULT_MU_BOUNDS = (-50.0, 50.0)  # range of mu in the fits (analysis.fit.mu_bounds)


def _pyhf():
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0))
    return pyhf


MC_STAT = ("events", "equal_statistics")


def templates(results: Mapping[str, Mapping], roles: Mapping[str, str], variable: str,
              region: str = "signal", rebin: int = 1, mc_stat: str = "events", copies: int = 1) -> dict:
    """Signal and background templates (values, variances, edges) of ``variable`` in ``region``
    from ``{sample: analysis result}``; ``roles``: ``{sample: "signal" | "background"}``;
    ``rebin`` adjacent bins merged (must divide the number of bins). ``mc_stat`` (see the module
    docstring): ``"events"`` (variance per event number) or ``"equal_statistics"`` (``copies`` x
    sum w^2, ``copies`` = FlashSim's k; 1 for the full simulation, where both are sum w^2)."""
    if mc_stat not in MC_STAT:
        raise ValueError(f"mc_stat is {mc_stat!r}; expected one of {MC_STAT}")
    sums = {"signal": None, "background": None}
    edges = None
    for sample, res in results.items():
        if variable not in res["hists"]:
            raise ConfigError(f"analysis.fit.variable is {variable!r} but the analysis of '{sample}' has no such "
                              f"histogram ({'no classifier model was given' if variable == 'score' else 'see analysis.histograms'})")
        h = res["hists"][variable][{"region": region}]
        role = roles[sample]
        v, var = np.asarray(h.values(), float), np.asarray(h.variances(), float)
        y = res["yields"][region]
        if mc_stat == "equal_statistics":
            var = var * float(copies)
        elif y.get("sumw2_events") and y["sumw2"] > 0:  # FlashSim copies: per-event variance of the region
            var = var * (y["sumw2_events"] / y["sumw2"])
        if sums[role] is None:
            sums[role] = [v.copy(), var.copy()]
        else:
            sums[role][0] += v
            sums[role][1] += var
        edges = np.asarray(h.axes[0].edges, float)
    for role, s in sums.items():
        if s is None:
            raise ConfigError(f"no {role} sample in the analysis (samples.<name>.role)")
    rebin = int(rebin)
    if rebin < 1 or (len(edges) - 1) % rebin:
        raise ConfigError(f"analysis.fit.rebin is {rebin}; it must divide the {len(edges) - 1} bins of "
                          f"analysis.histograms.{variable}")
    for role in sums:
        sums[role] = [a.reshape(-1, rebin).sum(axis=1) for a in sums[role]]
    return {"signal": sums["signal"], "background": sums["background"], "edges": edges[::rebin]}


def common_bins(*tmpls: Mapping) -> np.ndarray:
    """Bins with background and signal + background > 0 in every template set."""
    keep = None
    for t in tmpls:
        ok = (t["background"][0] > 0) & (t["signal"][0] + t["background"][0] > 0)
        keep = ok if keep is None else keep & ok
    if keep is None or not keep.any():
        raise EmptySelectionError("pyhf model: no bin of the signal region has background in every simulation")
    return keep


def model_spec(t: Mapping, keep: np.ndarray) -> dict:
    """The pyhf JSON specification of one template set restricted to bins ``keep``."""
    s, sv = t["signal"][0][keep], t["signal"][1][keep]
    b, bv = t["background"][0][keep], t["background"][1][keep]
    return {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": s.tolist(), "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "staterror_SR", "type": "staterror", "data": np.sqrt(sv).tolist()}]},
        {"name": "background", "data": b.tolist(), "modifiers": [
            {"name": "staterror_SR", "type": "staterror", "data": np.sqrt(bv).tolist()}]},
    ]}]}


def _model(spec: Mapping):
    return _pyhf().Model(spec, poi_name="mu")


def asimov(model, mu: float = 1.0) -> np.ndarray:
    """Expected main + auxiliary data of ``model`` at ``mu`` (other parameters nominal)."""
    pars = np.asarray(model.config.suggested_init(), float)
    pars[model.config.poi_index] = mu
    return np.asarray(model.expected_data(pars), float)


def _bounds(model, mu_bounds):
    b = list(model.config.suggested_bounds())
    b[model.config.poi_index] = tuple(mu_bounds)
    return b


def fit_mu(model, data: Sequence[float], mu_bounds: Sequence[float] = DEFAULT_MU_BOUNDS) -> dict:
    """Best-fit mu (MINUIT, all nuisance parameters free); its uncertainty from the profile
    likelihood (half the width of the interval where -2 Delta ln L < 1, MINOS-like: where MC
    statistics dominate the likelihood is far from parabolic and HESSE's curvature at the minimum
    is not a reliable width), and HESSE's for reference. An interval edge beyond the mu bounds is
    taken at the bound (``mu_interval_at_bound``)."""
    pyhf = _pyhf()
    lo_b, hi_b = float(mu_bounds[0]), float(mu_bounds[1])
    if not lo_b < 1.0 < hi_b:
        raise ConfigError(f"analysis.fit.mu_bounds is {list(mu_bounds)}; expected lo < 1 < hi")
    data = np.asarray(data, float)
    bounds = _bounds(model, (lo_b, hi_b))
    pars, nll_min = pyhf.infer.mle.fit(data, model, par_bounds=bounds, return_uncertainties=True,
                                       return_fitted_val=True)
    poi = model.config.poi_index
    mu, err = float(pars[poi][0]), float(pars[poi][1])

    def above(m: float) -> bool:  # -2 Delta ln L(m) > 1 (a fit that fails there: unphysical, outside)
        try:
            _, nll = pyhf.infer.mle.fixed_poi_fit(m, data, model, par_bounds=bounds, return_fitted_val=True)
        except pyhf.exceptions.FailedMinimization:
            return True
        return float(nll - nll_min) > 1.0

    step = max(err if np.isfinite(err) and err > 0 else 1.0, 1e-3 * (hi_b - lo_b))
    edges, at_bound = [], False
    for bound, sign in ((lo_b, -1.0), (hi_b, 1.0)):
        inside, probe = mu, mu + sign * step
        while True:  # bracket: expand by doubling until outside or at the bound
            probe = min(max(probe, lo_b), hi_b)
            if above(probe):
                break
            inside = probe
            if probe == bound:
                break
            probe = mu + 2 * (probe - mu)
        if inside == bound:
            edges.append(bound)
            at_bound = True
            continue
        for _ in range(20):  # bisection to 1e-6 of the bracket
            mid = 0.5 * (inside + probe)
            if above(mid):
                probe = mid
            else:
                inside = mid
        edges.append(0.5 * (inside + probe))
    return {"mu": mu, "mu_uncertainty": 0.5 * (edges[1] - edges[0]), "mu_interval": edges,
            "mu_interval_at_bound": at_bound, "mu_uncertainty_hesse": err,
            "mu_at_bound": bool(min(mu - lo_b, hi_b - mu) < 1e-3 * (hi_b - lo_b))}


def stat_only_significance(t: Mapping, keep: np.ndarray) -> float:
    """Asimov significance without MC statistical uncertainties, sqrt(sum 2((s+b) ln(1+s/b) - s))."""
    s, b = t["signal"][0][keep], t["background"][0][keep]
    return float(np.sqrt(np.sum(2 * ((s + b) * np.log1p(s / b) - s))))


def expected_significance(model, data=None) -> dict:
    """Discovery p0 and Z on ``data`` (default: the model's Asimov data at mu = 1)."""
    from scipy.stats import norm

    pyhf = _pyhf()
    data = asimov(model) if data is None else data
    p0 = float(pyhf.infer.hypotest(0.0, data, model, test_stat="q0"))
    return {"p0": p0, "expected_significance": float(norm.isf(p0))}


def _summary(model, data, t: Mapping, keep: np.ndarray, mu_bounds) -> dict:
    return {**expected_significance(model, data), **fit_mu(model, data, mu_bounds),
            "expected_significance_stat_only": stat_only_significance(t, keep),
            "signal_yield": float(t["signal"][0][keep].sum()),
            "background_yield": float(t["background"][0][keep].sum()),
            "background_mc_stat_error": float(np.sqrt(t["background"][1][keep].sum()))}


def closure(full: Mapping, flash: Mapping, mu_bounds: Sequence[float] = DEFAULT_MU_BOUNDS,
            flash_oversampled: Mapping | None = None) -> dict:
    """The closure test of the two template sets (see module docstring); with
    ``flash_oversampled`` (the flash templates with their own MC statistical uncertainty) also
    its expected significance and mu uncertainty under ``flash_oversampled``."""
    keep = common_bins(full, flash)
    models = {"full": _model(model_spec(full, keep)), "flash": _model(model_spec(flash, keep))}
    data = {k: asimov(m) for k, m in models.items()}
    out: dict = {"bins_used": int(keep.sum()), "bin_edges": full["edges"].tolist(), "bins_kept": keep.tolist()}
    for k, m in models.items():
        out[k] = _summary(m, data[k], full if k == "full" else flash, keep, mu_bounds)
    n_main = {k: m.config.nmaindata for k, m in models.items()}
    out["cross"] = {}
    for mk, dk in (("full", "flash"), ("flash", "full")):
        m = models[mk]
        d = np.concatenate([data[dk][: n_main[dk]], np.asarray(m.config.auxdata, float)])
        out["cross"][f"{mk}_model_on_{dk}_asimov"] = fit_mu(m, d, mu_bounds)
    zf, zg = out["full"]["expected_significance"], out["flash"]["expected_significance"]
    out["significance_relative_difference"] = (zg - zf) / zf if zf else float("nan")
    if flash_oversampled is not None:
        m = _model(model_spec(flash_oversampled, keep))
        out["flash_oversampled"] = _summary(m, asimov(m), flash_oversampled, keep, mu_bounds)
        zo = out["flash_oversampled"]["expected_significance"]
        out["flash_oversampled"]["significance_relative_difference"] = (zo - zf) / zf if zf else float("nan")
    return out


def _replica(res: Mapping, variable: str, r: int) -> dict:
    """The analysis result ``res`` with the fit variable's histogram of bootstrap replica ``r``."""
    boot = res.get("bootstrap", {}).get(variable)
    if boot is None:
        raise ConfigError(f"analysis.bootstrap.replicas > 0 but the analysis output of '{res.get('sample')}' has no "
                          f"bootstrap histogram of {variable!r}; rerun the analysis")
    return {"hists": {variable: boot[{"replica": r}]}, "yields": res["yields"]}


def _spread(values: Sequence[float]) -> dict:
    v = np.asarray(values, float)
    if not len(v):
        return {"mean": None, "std": None, "q16": None, "q84": None}
    q16, q84 = np.quantile(v, [0.16, 0.84])
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "q16": float(q16), "q84": float(q84)}


def bootstrap_closure(full: Mapping[str, Mapping], flash: Mapping[str, Mapping], roles: Mapping[str, str],
                      variable: str, rebin: int, keep: np.ndarray, copies: int) -> dict:
    """flash/full - 1 of the expected significance, its stat-only version and the background
    yield on every bootstrap replica (see the module docstring), in the bins ``keep`` of the
    nominal fit that have background in the replica in both simulations (a replica can empty a
    bin of few MC events; ``mean_bins_used``)."""
    first = next(iter(full.values()))
    boot = first.get("bootstrap", {}).get(variable)
    n = 0 if boot is None else boot.axes["replica"].size
    rel = {"significance": [], "stat_only_significance": [], "background_yield": []}
    z_full, bins = [], []
    for r in range(n):
        tf = templates({s: _replica(v, variable, r) for s, v in full.items()}, roles, variable, rebin=rebin)
        tg = templates({s: _replica(v, variable, r) for s, v in flash.items()}, roles, variable, rebin=rebin,
                       mc_stat="equal_statistics", copies=copies)
        kr = keep & (tf["background"][0] > 0) & (tg["background"][0] > 0)
        if not kr.any():
            continue
        bins.append(int(kr.sum()))
        zf = expected_significance(_model(model_spec(tf, kr)))["expected_significance"]
        zg = expected_significance(_model(model_spec(tg, kr)))["expected_significance"]
        sf, sg = stat_only_significance(tf, kr), stat_only_significance(tg, kr)
        bf, bg = tf["background"][0][kr].sum(), tg["background"][0][kr].sum()
        if zf > 0:
            rel["significance"].append(zg / zf - 1)
        rel["stat_only_significance"].append(sg / sf - 1)
        rel["background_yield"].append(bg / bf - 1)
        z_full.append(zf)
    out = {"replicas": int(n), "used": len(rel["background_yield"]),
           "mean_bins_used": float(np.mean(bins)) if bins else 0.0}
    out.update({f"{k}_relative_difference": _spread(v) for k, v in rel.items()})
    out["full_expected_significance"] = _spread(z_full)
    return out


def fit(full_paths: Mapping[str, str], flash_paths: Mapping[str, str], roles: Mapping[str, str],
        fit_cfg: Mapping, out_json: str, copies: int = 1) -> dict:
    """Load the analysis outputs, run :func:`closure` with ``analysis.fit`` (``variable``,
    ``rebin``, ``mu_bounds``) and write ``fit.json``; ``copies``: FlashSim's oversampling k."""
    from pipeline.analysis.execute import load_result

    try:
        variable, rebin, mu_bounds = fit_cfg["variable"], fit_cfg["rebin"], fit_cfg["mu_bounds"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"config key 'analysis.fit.{exc.args[0] if exc.args else ''}' is missing") from None
    full = {s: load_result(p) for s, p in full_paths.items()}
    flash = {s: load_result(p) for s, p in flash_paths.items()}
    tf = templates(full, roles, variable, rebin=rebin)
    tg = templates(flash, roles, variable, rebin=rebin, mc_stat="equal_statistics", copies=copies)
    to = templates(flash, roles, variable, rebin=rebin, mc_stat="events")
    out = {"variable": variable, "rebin": int(rebin), "flash_copies": int(copies),
           **closure(tf, tg, mu_bounds, flash_oversampled=to)}
    if any("bootstrap" in r for r in full.values()):
        b = bootstrap_closure(full, flash, roles, variable, rebin, np.asarray(out["bins_kept"], bool), copies)
        out["bootstrap"] = b
        out["significance_relative_difference_uncertainty"] = b["significance_relative_difference"]["std"]
        log.info("closure: expected significance flash/full - 1 = %+.3f +- %s (%d of %d bootstrap replicas)",
                 out["significance_relative_difference"], b["significance_relative_difference"]["std"],
                 b["used"], b["replicas"])
    io.write_json(out_json, out)
    log.info("expected significance full %.3f, flash %.3f (oversampled: %.3f); mu uncertainty full %.3f, flash %.3f",
             out["full"]["expected_significance"], out["flash"]["expected_significance"],
             out["flash_oversampled"]["expected_significance"],
             out["full"]["mu_uncertainty"], out["flash"]["mu_uncertainty"])
    return out

