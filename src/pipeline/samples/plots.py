"""Sanity plots of a NanoAOD sample: detector response, efficiencies, multiplicities, b tagging.

:func:`sample_plots` reads only the contract branches it needs, chunk by chunk
(:func:`pipeline.io.iterate_events`), fills ``hist`` histograms (never holding all events) and
draws them with :mod:`pipeline.plotting`. It works on the built-in samples, on FlashSim outputs
and on real CMS NanoAOD alike. Objects are counted unweighted (``genWeight`` is ignored): these are
object-level performance plots, not cross-section-weighted distributions.

Definitions
-----------
Jet response
    ``Jet_pt / GenJet_pt[Jet_genJetIdx]`` for reco jets with a gen-jet partner, in bins of the
    gen jet's pT (per |eta| region: barrel < 1.3 < endcap < 3.0 < forward) and of its eta (gen
    pT above ``eta_profile_min_jet_pt_gev``, so that the reco pT threshold does not bias it).
Muon response
    ``Muon_pt / GenPart_pt[Muon_genPartIdx]`` for reco muons matched to a gen muon, per |eta|
    region (barrel < 0.9 < overlap < 1.2 < endcap < 2.4).
Response and resolution
    median and ``(q84 - q16) / (2 median)`` of the response in each bin (see
    :mod:`pipeline.plotting`); bins with fewer than ``min_entries`` objects are not drawn.
Jet efficiency
    fraction of gen jets (|eta| < last ``eta_bins`` edge) that at least one reco jet points to.
Jet purity
    fraction of reco jets with a gen-jet partner, versus reco pT (``1 - purity`` = fake rate).
Muon efficiency
    fraction of stable (status 1) gen muons with |eta| < 2.4 that a reco muon points to.
Multiplicities
    reco versus gen counts per event: nJet vs nGenJet, nMuon vs stable gen muons (|eta| < 2.4);
    the last bin holds the overflow.
b tagging
    ``Jet_btagDeepFlavB`` of reco jets with |eta| < 2.5 by ``Jet_hadronFlavour`` (b: 5, c: 4,
    light: 0).
Muon isolation
    ``Muon_pfRelIso04_all`` for muons matched to a prompt gen muon (``statusFlags`` bit 0,
    isPrompt), matched to a non-prompt one, and unmatched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np

from pipeline import plotting, stats
from pipeline.errors import ConfigError
from pipeline.io import iterate_events, open_tree, write_json
from pipeline.nanoaod import STATUS_FLAG_BITS

log = logging.getLogger(__name__)

BRANCHES = [
    "Jet_pt", "Jet_eta", "Jet_genJetIdx", "Jet_hadronFlavour", "Jet_btagDeepFlavB",
    "GenJet_pt", "GenJet_eta",
    "Muon_pt", "Muon_eta", "Muon_genPartIdx", "Muon_pfRelIso04_all",
    "GenPart_pt", "GenPart_eta", "GenPart_pdgId", "GenPart_status", "GenPart_statusFlags",
]

JET_RESPONSE_AXIS = hist.axis.Regular(300, 0.0, 3.0, name="response", label="Jet response")
MUON_RESPONSE_AXIS = hist.axis.Regular(400, 0.8, 1.2, name="response", label="Muon response")
ISO_MAX = 1.0
FLAVOURS = {"b": 5, "c": 4, "light": 0}
PROMPT_BIT = STATUS_FLAG_BITS["isPrompt"]

L_JET_RESP = r"Jet response $p_T^{reco}/p_T^{gen}$"
L_JET_RES = r"Jet $p_T$ resolution $(q_{84}-q_{16})\,/\,(2\,q_{50})$"
L_MU_RESP = r"Muon response $p_T^{reco}/p_T^{gen}$"
L_MU_RES = r"Muon $p_T$ resolution $(q_{84}-q_{16})\,/\,(2\,q_{50})$"
L_GENJET_PT = r"Gen jet $p_T$ [GeV]"
L_GENJET_ETA = r"Gen jet $\eta$"
L_GENMU_PT = r"Gen muon $p_T$ [GeV]"
L_GENMU_ETA = r"Gen muon $\eta$"


def _opts(plots_cfg: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(plots_cfg)
    for key in ("jet_pt_bins_gev", "muon_pt_bins_gev", "eta_bins"):
        if key not in opts:
            raise ConfigError(f"plots.samples.{key}: missing (bin edges)")
        edges = np.asarray(opts[key], dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"plots.samples.{key}: needs at least two increasing bin edges, got {opts[key]}")
    if "muon_eta_bins" not in opts:
        m = float(opts["muon_abs_eta_max"])
        inner = [e for e in opts["eta_bins"] if -m < e < m]
        opts["muon_eta_bins"] = [-m, *inner, m]
    return opts


def _region_label(name: str, lo: float, hi: float) -> str:
    return f"{name}: ${lo:g} \\leq |\\eta| < {hi:g}$" if lo > 0 else f"{name}: $|\\eta| < {hi:g}$"


def _flat(a) -> np.ndarray:
    return ak.to_numpy(ak.flatten(a, axis=None))


def _match(index: ak.Array, n_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each source object (flattened): whether its index points inside the target collection
    of the same event, and the flat (global) position of the target (``-1`` where not)."""
    n_src = ak.to_numpy(ak.num(index, axis=1))
    idx = _flat(index).astype(np.int64)
    event = np.repeat(np.arange(n_src.size), n_src)
    valid = (idx >= 0) & (idx < n_target[event])
    offsets = np.concatenate([[0], np.cumsum(n_target)[:-1]]).astype(np.int64)
    return valid, np.where(valid, offsets[event] + idx, -1)


class SamplePlotAccumulator:
    """The histograms of :func:`sample_plots`; :meth:`fill` is a pure function of one chunk."""

    def __init__(self, opts: Mapping[str, Any]):
        self.opts = opts
        jpt = hist.axis.Variable(opts["jet_pt_bins_gev"], name="pt", label=L_GENJET_PT)
        mpt = hist.axis.Variable(opts["muon_pt_bins_gev"], name="pt", label=L_GENMU_PT)
        jeta = hist.axis.Variable(opts["eta_bins"], name="eta", label=L_GENJET_ETA)
        meta = hist.axis.Variable(opts["muon_eta_bins"], name="eta", label=L_GENMU_ETA)
        self.jet_regions = {k: tuple(map(float, v)) for k, v in opts["jet_eta_regions"].items()}
        self.muon_regions = {k: tuple(map(float, v)) for k, v in opts["muon_eta_regions"].items()}
        jreg = hist.axis.StrCategory(list(self.jet_regions), name="region")
        mreg = hist.axis.StrCategory(list(self.muon_regions), name="region")
        self.h = {
            "jet_resp_pt": hist.Hist(jreg, jpt, JET_RESPONSE_AXIS),
            "jet_resp_eta": hist.Hist(jeta, JET_RESPONSE_AXIS),
            "mu_resp_pt": hist.Hist(mreg, mpt, MUON_RESPONSE_AXIS),
            "mu_resp_eta": hist.Hist(meta, MUON_RESPONSE_AXIS),
            "jet_eff": hist.Hist(jreg, jpt, hist.axis.Boolean(name="matched")),
            "jet_purity": hist.Hist(jreg, hist.axis.Variable(opts["jet_pt_bins_gev"], name="pt",
                                                             label=r"Jet $p_T$ [GeV]"),
                                    hist.axis.Boolean(name="matched")),
            "mu_eff": hist.Hist(mpt, hist.axis.Boolean(name="matched")),
            "n_jet": hist.Hist(hist.axis.Integer(0, opts["max_jets"] + 1, name="n", underflow=False,
                                                 overflow=False)),
            "n_genjet": hist.Hist(hist.axis.Integer(0, opts["max_jets"] + 1, name="n", underflow=False,
                                                    overflow=False)),
            "n_muon": hist.Hist(hist.axis.Integer(0, opts["max_muons"] + 1, name="n", underflow=False,
                                                  overflow=False)),
            "n_genmu": hist.Hist(hist.axis.Integer(0, opts["max_muons"] + 1, name="n", underflow=False,
                                                   overflow=False)),
            "btag": hist.Hist(hist.axis.StrCategory(list(FLAVOURS), name="flavour"),
                              hist.axis.Regular(50, 0.0, 1.0, name="score")),
            "iso": hist.Hist(hist.axis.StrCategory(["prompt", "non-prompt", "unmatched"], name="origin"),
                             hist.axis.Regular(40, 0.0, ISO_MAX, name="iso")),
        }
        self.n_events = 0

    def _regions(self, abs_eta: np.ndarray, regions: Mapping[str, tuple[float, float]]) -> np.ndarray:
        out = np.full(abs_eta.shape, "", dtype=object)
        for name, (lo, hi) in regions.items():
            out[(abs_eta >= lo) & (abs_eta < hi)] = name
        return out

    def _fill_response(self, kind: str, response: np.ndarray, gen_pt: np.ndarray, gen_eta: np.ndarray,
                       regions: Mapping[str, tuple[float, float]], eta_profile_min_pt: float) -> None:
        """Response of matched objects versus gen pT per |eta| region, and versus gen eta above
        ``eta_profile_min_pt`` (histograms ``{kind}_resp_pt`` and ``{kind}_resp_eta``)."""
        reg = self._regions(np.abs(gen_eta), regions)
        sel = reg != ""
        self.h[f"{kind}_resp_pt"].fill(region=reg[sel], pt=gen_pt[sel], response=response[sel])
        sel = gen_pt >= eta_profile_min_pt
        self.h[f"{kind}_resp_eta"].fill(eta=gen_eta[sel], response=response[sel])

    def fill(self, chunk: Mapping[str, ak.Array]) -> None:
        o, h = self.opts, self.h
        n_ev = len(chunk["Jet_pt"])
        self.n_events += n_ev

        # ---- jets ------------------------------------------------------------------------
        n_gj = ak.to_numpy(ak.num(chunk["GenJet_pt"], axis=1))
        n_j = ak.to_numpy(ak.num(chunk["Jet_pt"], axis=1))
        gj_pt, gj_eta = _flat(chunk["GenJet_pt"]), _flat(chunk["GenJet_eta"])
        j_pt, j_eta = _flat(chunk["Jet_pt"]), _flat(chunk["Jet_eta"])
        valid, gpos = _match(chunk["Jet_genJetIdx"], n_gj)
        g = gpos[valid]
        self._fill_response("jet", j_pt[valid] / gj_pt[g], gj_pt[g], gj_eta[g], self.jet_regions,
                            o["eta_profile_min_jet_pt_gev"])
        gj_matched = np.zeros(gj_pt.size, dtype=bool)
        gj_matched[g] = True
        acc = np.abs(gj_eta) < o["eta_bins"][-1]
        reg = self._regions(np.abs(gj_eta), self.jet_regions)
        sel = acc & (reg != "")
        h["jet_eff"].fill(region=reg[sel], pt=gj_pt[sel], matched=gj_matched[sel])
        reg = self._regions(np.abs(j_eta), self.jet_regions)
        sel = reg != ""
        h["jet_purity"].fill(region=reg[sel], pt=j_pt[sel], matched=valid[sel])
        h["n_jet"].fill(np.minimum(n_j, o["max_jets"]))
        h["n_genjet"].fill(np.minimum(n_gj, o["max_jets"]))
        btag_sel = np.abs(j_eta) < o["btag_abs_eta_max"]
        flav = _flat(chunk["Jet_hadronFlavour"])[btag_sel]
        score = _flat(chunk["Jet_btagDeepFlavB"])[btag_sel]
        for name, code in FLAVOURS.items():
            # scores of exactly 1 and overflow go to the last bin (no jet is lost from the shapes)
            s = np.clip(score[flav == code], 0.0, np.nextafter(1.0, 0.0))
            h["btag"].fill(flavour=name, score=s[s >= 0])

        # ---- muons -----------------------------------------------------------------------
        n_gp = ak.to_numpy(ak.num(chunk["GenPart_pt"], axis=1))
        gp_pt, gp_eta = _flat(chunk["GenPart_pt"]), _flat(chunk["GenPart_eta"])
        gp_pdg, gp_status = _flat(chunk["GenPart_pdgId"]), _flat(chunk["GenPart_status"])
        gp_flags = _flat(chunk["GenPart_statusFlags"]).astype(np.int64)
        m_pt, m_iso = _flat(chunk["Muon_pt"]), _flat(chunk["Muon_pfRelIso04_all"])
        valid, gpos = _match(chunk["Muon_genPartIdx"], n_gp)
        is_mu = np.zeros(valid.size, dtype=bool)
        is_mu[valid] = np.abs(gp_pdg[gpos[valid]]) == 13
        g = gpos[is_mu]
        self._fill_response("mu", m_pt[is_mu] / gp_pt[g], gp_pt[g], gp_eta[g], self.muon_regions,
                            o["eta_profile_min_muon_pt_gev"])

        stable_mu = (np.abs(gp_pdg) == 13) & (gp_status == 1) & (np.abs(gp_eta) < o["muon_abs_eta_max"])
        gp_matched = np.zeros(gp_pt.size, dtype=bool)
        gp_matched[gpos[valid]] = True
        h["mu_eff"].fill(pt=gp_pt[stable_mu], matched=gp_matched[stable_mu])
        ev_of_gp = np.repeat(np.arange(n_ev), n_gp)
        n_genmu = np.bincount(ev_of_gp[stable_mu], minlength=n_ev)
        h["n_muon"].fill(np.minimum(ak.to_numpy(ak.num(chunk["Muon_pt"], axis=1)), o["max_muons"]))
        h["n_genmu"].fill(np.minimum(n_genmu, o["max_muons"]))

        prompt = np.zeros(valid.size, dtype=bool)
        prompt[valid] = (gp_flags[gpos[valid]] >> PROMPT_BIT) & 1 == 1
        origin = np.where(~valid, "unmatched", np.where(prompt, "prompt", "non-prompt"))
        iso = np.clip(m_iso, 0.0, np.nextafter(ISO_MAX, 0.0))  # overflow into the last bin
        h["iso"].fill(origin=origin, iso=iso)


def _profiles_by_region(h2: hist.Hist, regions: Sequence[str], min_entries: int) -> dict[str, stats.Profile]:
    return {r: stats.profile_from_hist(h2[{"region": r}], min_entries=min_entries) for r in regions}


def _efficiency(h: hist.Hist) -> stats.Efficiency:
    passed = h[{"matched": True}]
    total = h[{"matched": sum}]
    return stats.efficiency(passed, total)


def sample_plots(files: list[str], out_dir: str, sample: str, plots_cfg: Mapping[str, Any],
                 progress: bool = True) -> list[str]:
    """Sanity plots of one sample; returns the PNG paths and writes ``out_dir/summary.json``.

    ``plots_cfg`` is config ``plots.samples`` (required keys ``jet_pt_bins_gev``,
    ``muon_pt_bins_gev``, ``eta_bins``; and the other keys of ``plots.samples`` in config/README.md).
    """
    from tqdm.auto import tqdm

    opts = _opts(plots_cfg)
    files = [str(f) for f in files]
    total = sum(open_tree(f).num_entries for f in files)
    acc = SamplePlotAccumulator(opts)
    with tqdm(total=total, unit="evt", desc=f"plots {sample}", disable=not progress) as bar:
        for _, chunk in iterate_events(files, BRANCHES, step_size=int(opts["chunk_events"]),
                                       stage="sample plots"):
            acc.fill(chunk)
            bar.update(len(chunk["Jet_pt"]))
    log.info("sample plots of %s: %d events from %d file(s)", sample, acc.n_events, len(files))
    return _draw(acc, Path(out_dir), sample, files)


def _draw(acc: SamplePlotAccumulator, out: Path, sample: str, files: list[str]) -> list[str]:
    o, h = acc.opts, acc.h
    pdf = bool(o["pdf"])
    min_n = int(o["min_entries"])
    title = sample
    paths: list[str] = []
    kw = {"pdf": pdf, "legend_title": title}

    def region_labels(regions: Mapping[str, tuple[float, float]]) -> list[str]:
        return [_region_label(k, *v) for k, v in regions.items()]

    # ---- response and resolution --------------------------------------------------------
    jr = _profiles_by_region(h["jet_resp_pt"], list(acc.jet_regions), min_n)
    mr = _profiles_by_region(h["mu_resp_pt"], list(acc.muon_regions), min_n)
    je = stats.profile_from_hist(h["jet_resp_eta"], min_entries=min_n)
    me = stats.profile_from_hist(h["mu_resp_eta"], min_entries=min_n)
    jlab, mlab = region_labels(acc.jet_regions), region_labels(acc.muon_regions)
    jpt_cut = rf"{title}, gen $p_T > {o['eta_profile_min_jet_pt_gev']:g}$ GeV"
    mpt_cut = rf"{title}, gen $p_T > {o['eta_profile_min_muon_pt_gev']:g}$ GeV"
    specs = [
        ("jet_response_vs_genpt", list(jr.values()), jlab, "response", L_GENJET_PT, L_JET_RESP, True, title),
        ("jet_resolution_vs_genpt", list(jr.values()), jlab, "resolution", L_GENJET_PT, L_JET_RES, True, title),
        ("jet_response_vs_geneta", [je], ["jets"], "response", L_GENJET_ETA, L_JET_RESP, False, jpt_cut),
        ("jet_resolution_vs_geneta", [je], ["jets"], "resolution", L_GENJET_ETA, L_JET_RES, False, jpt_cut),
        ("muon_response_vs_genpt", list(mr.values()), mlab, "response", L_GENMU_PT, L_MU_RESP, True, title),
        ("muon_resolution_vs_genpt", list(mr.values()), mlab, "resolution", L_GENMU_PT, L_MU_RES, True, title),
        ("muon_response_vs_geneta", [me], ["muons"], "response", L_GENMU_ETA, L_MU_RESP, False, mpt_cut),
        ("muon_resolution_vs_geneta", [me], ["muons"], "resolution", L_GENMU_ETA, L_MU_RES, False, mpt_cut),
    ]
    for name, profs, labels, what, xl, yl, logx, ltitle in specs:
        paths.append(plotting.plot_profiles(
            profs, labels, what=what, xlabel=xl, ylabel=yl, logx=logx, pdf=pdf, legend_title=ltitle,
            hline=1.0 if what == "response" else None, path=out / f"{name}.png"))

    # response distributions (tails), per region, integrated over pT
    for name, h2, regions, xl, rebin in (
        ("jet_response_distribution", h["jet_resp_pt"], acc.jet_regions, L_JET_RESP, 5),
        ("muon_response_distribution", h["mu_resp_pt"], acc.muon_regions, L_MU_RESP, 5),
    ):
        hs = [h2[{"region": r, "pt": sum}][:: hist.rebin(rebin)] for r in regions]
        paths.append(_plot_fractions(hs, region_labels(regions), xl, hs[0].axes[0].widths[0],
                                     out / f"{name}.png", kw))

    # ---- efficiencies -------------------------------------------------------------------
    jeff = {r: _efficiency(h["jet_eff"][{"region": r}]) for r in acc.jet_regions}
    jpur = {r: _efficiency(h["jet_purity"][{"region": r}]) for r in acc.jet_regions}
    meff = _efficiency(h["mu_eff"])
    paths.append(plotting.plot_efficiencies(
        list(jeff.values()), jlab, xlabel=L_GENJET_PT, ylabel="Jet reconstruction efficiency", logx=True,
        path=out / "jet_efficiency_vs_genpt.png", **kw))
    paths.append(plotting.plot_efficiencies(
        list(jpur.values()), jlab, xlabel=r"Jet $p_T$ [GeV]", ylabel="Jet purity (gen-matched fraction)",
        logx=True, path=out / "jet_purity_vs_pt.png", **kw))
    paths.append(plotting.plot_efficiencies(
        [meff], [rf"stable gen $\mu$, $|\eta| < {o['muon_abs_eta_max']:g}$"], xlabel=L_GENMU_PT,
        ylabel="Muon reconstruction efficiency", logx=True, path=out / "muon_efficiency_vs_genpt.png", **kw))

    # ---- multiplicities -----------------------------------------------------------------
    paths.append(plotting.plot_hists_with_ratio(
        [h["n_genjet"], h["n_jet"]], ["Gen jets (nGenJet)", "Reco jets (nJet)"], 0,
        xlabel=f"Jets per event (last bin: $\\geq {o['max_jets']}$)", ylabel="Events",
        ratio_label="Reco / gen", path=out / "jet_multiplicity.png", **kw))
    paths.append(plotting.plot_hists_with_ratio(
        [h["n_genmu"], h["n_muon"]],
        [rf"Stable gen $\mu$, $|\eta| < {o['muon_abs_eta_max']:g}$", "Reco muons (nMuon)"], 0,
        xlabel=f"Muons per event (last bin: $\\geq {o['max_muons']}$)", ylabel="Events",
        ratio_label="Reco / gen", path=out / "muon_multiplicity.png", **kw))

    # ---- b tagging and isolation --------------------------------------------------------
    btag = [h["btag"][{"flavour": f}] for f in FLAVOURS]
    paths.append(_plot_fractions(
        btag, [f"{f} jets (hadronFlavour {c})" for f, c in FLAVOURS.items()],
        "DeepJet b-tag score (btagDeepFlavB)", 1.0 / 50, out / "btag_by_flavour.png",
        {**kw, "legend_title": rf"{title}, $|\eta| < {o['btag_abs_eta_max']:g}$"}))
    iso_labels = ["prompt (isPrompt)", "non-prompt", "not gen-matched"]
    iso = [h["iso"][{"origin": c}] for c in ("prompt", "non-prompt", "unmatched")]
    paths.append(_plot_fractions(iso, iso_labels, r"Muon $I^{rel}_{PF}$ ($\Delta R = 0.4$; last bin: overflow)",
                                 ISO_MAX / 40, out / "muon_isolation.png", kw))

    # ---- the numbers --------------------------------------------------------------------
    def integral(hh: hist.Hist) -> int:
        return int(round(float(hh.values().sum())))

    def mean_n(hh: hist.Hist) -> float | None:
        v = hh.values()
        # Integer axis: bin n spans [n, n + 1)
        return float(np.sum(v * hh.axes[0].edges[:-1]) / v.sum()) if v.sum() > 0 else None

    summary = {
        "sample": sample,
        "files": files,
        "n_events": acc.n_events,
        "definitions": __doc__.split("Definitions\n-----------\n", 1)[1].strip(),
        "counts": {
            "gen_jets_in_regions": integral(h["jet_eff"]),
            "gen_jets_matched": integral(h["jet_eff"][{"matched": True}]),
            "reco_jets_in_regions": integral(h["jet_purity"]),
            "reco_jets_matched": integral(h["jet_purity"][{"matched": True}]),
            "stable_gen_muons_in_acceptance": integral(h["mu_eff"]),
            "stable_gen_muons_matched": integral(h["mu_eff"][{"matched": True}]),
            "reco_muons": integral(h["iso"]),
            "reco_muons_by_origin": {c: integral(h["iso"][{"origin": c}])
                                     for c in ("prompt", "non-prompt", "unmatched")},
            "jets_by_flavour_btag_acceptance": {f: integral(h["btag"][{"flavour": f}]) for f in FLAVOURS},
        },
        "jet": {
            "eta_regions": acc.jet_regions,
            "response_vs_genpt": {r: p.to_dict() for r, p in jr.items()},
            "response_vs_geneta": je.to_dict(),
            "efficiency_vs_genpt": {r: e.to_dict() for r, e in jeff.items()},
            "purity_vs_pt": {r: e.to_dict() for r, e in jpur.items()},
        },
        "muon": {
            "eta_regions": acc.muon_regions,
            "response_vs_genpt": {r: p.to_dict() for r, p in mr.items()},
            "response_vs_geneta": me.to_dict(),
            "efficiency_vs_genpt": meff.to_dict(),
        },
        "multiplicity_mean": {
            "nJet": mean_n(h["n_jet"]), "nGenJet": mean_n(h["n_genjet"]),
            "nMuon": mean_n(h["n_muon"]), "n_stable_gen_muons": mean_n(h["n_genmu"]),
        },
        "plots": [Path(p).name for p in paths],
    }
    write_json(out / "summary.json", summary)
    return paths


def _plot_fractions(hs: list[hist.Hist], labels: list[str], xlabel: str, width: float, path: Path,
                    kw: Mapping[str, Any]) -> str:
    """Shapes normalised to unit sum (fraction of objects per bin), log y, stat bands."""
    normed = []
    labels = [f"{lab} (N = {int(round(float(hh.values(flow=True).sum())))})"
              for lab, hh in zip(labels, hs, strict=True)]
    for hh in hs:
        total = float(hh.values().sum())
        n = hh.copy()
        if total > 0:
            n = hist.Hist(hh.axes[0], storage=hist.storage.Weight())
            n.view().value = hh.values() / total
            n.view().variance = hh.values() / total**2
        normed.append(n)
    return plotting.plot_hists(normed, labels, xlabel=xlabel, ylabel=f"Fraction of objects / {width:g}",
                               logy=True, path=path, **kw)
