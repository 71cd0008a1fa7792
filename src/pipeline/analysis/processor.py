"""The Coffea processor of the VBF H -> mu mu analysis: one processor for every sample, full or flash.

Selection (CMS VBF H -> mu mu):

- objects: :func:`pipeline.features.select_objects` with the config's ``skim:`` block (muons pT >
  20 GeV, |eta| < 2.4, pfRelIso04_all < 0.25, medium ID; jets pT > 25 GeV, |eta| < 4.7, jet ID,
  Delta R > 0.4 from the selected muons), event columns from :func:`pipeline.features.event_features`
- events: the muon part of :func:`pipeline.features.preselection` (two muons, opposite charge),
  then ``analysis.regions`` window in m_mumu (lowest to highest edge), two jets, leading jet pT >
  ``vbf.lead_jet_pt_min_gev``, subleading > ``vbf.sublead_jet_pt_min_gev``, m_jj >
  ``vbf.mjj_min_gev``, Delta eta_jj > ``vbf.deta_jj_min``
- regions: ``analysis.regions`` (name -> [lo, hi) in m_mumu): signal region 115-135 GeV, sidebands
  110-115 and 135-150 GeV

Output (an accumulatable dict, merged by ``processor.Runner``)::

    {"hists":   {variable: hist.Hist(region, variable) with Weight storage},
     "cutflow": {cut: {"events": n, "sumw": sum w, "sumw2": sum w^2}},   # in selection order
     "yields":  {region: {"events": n, "sumw": sum w, "sumw2": sum w^2,
                          "sumw2_events": sum over event numbers of (sum of their w)^2}},
     "bootstrap": {fit variable: hist.Hist(region, replica, variable)}}   # if analysis.bootstrap.replicas

Bootstrap replicas (``analysis.bootstrap.replicas``): the fit variable's histogram refilled with
Poisson(1) weights per *event number* (:func:`pipeline.seeds.event_poisson1`, salted by the
master seed, the sample and the replica): generator events resampled with replacement, identically
in the full and in the flash simulation of the same events (and for the k flash copies of one), so
that the spread of a full-vs-flash difference over the replicas is its statistical uncertainty
with the correlation of the shared generator events taken into account.

Statistical errors: FlashSim writes k copies of each generator event (same ``event`` number,
weight genWeight / k, adjacent in the file); they are not independent, so the yields' errors use
``sumw2_events`` (copies summed before squaring; equal to ``sumw2`` for full simulation).
Histogram variances are per entry (``Weight`` storage).

Weights are ``genWeight * norm[dataset]`` with ``norm = xsec * 1000 * luminosity_fb / sum genWeight``
(:func:`pipeline.normalisation.sample_normalisation`); flash events carry ``genWeight / k``, so the same
formula normalises them. Histograms include the DisCo classifier score when a model is given: a
TorchScript module (``torch.jit.load``) taking the raw event columns named by its ``model.json``
``features`` (NaN for absent objects) and returning scores in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
import warnings

import awkward as ak
import numpy as np

from pipeline import features
from pipeline.errors import ConfigError, InputFileError
from pipeline.seeds import event_poisson1

# The pipeline's NanoAOD has no Electron, Photon, Tau or FsrPhoton collections: NanoAODSchema warns
# once per missing cross-reference target, which says nothing about the analysis.
warnings.filterwarnings("ignore", message="Missing cross-reference index", category=RuntimeWarning)

#: Event columns histogrammed by default (name of a features.EVENT_COLUMNS column, or "score").
SCORE = "score"

#: The VBF-category cut keys of ``analysis.vbf``.
VBF_KEYS = ("lead_jet_pt_min_gev", "sublead_jet_pt_min_gev", "mjj_min_gev", "deta_jj_min")


def _cfg(block: Mapping, key: str, path: str):
    try:
        return block[key]
    except (KeyError, TypeError):
        raise ConfigError(f"config key '{path}.{key}' is missing") from None


def regions(analysis_cfg: Mapping) -> dict[str, tuple[float, float]]:
    """``analysis.regions`` as ``{name: (lo, hi)}`` in m_mumu [GeV], checked."""
    out = {}
    for name, edges in _cfg(analysis_cfg, "regions", "analysis").items():
        if len(edges) != 2 or not float(edges[0]) < float(edges[1]):
            raise ConfigError(f"analysis.regions.{name} is {edges}; expected [lo, hi] with lo < hi [GeV]")
        out[name] = (float(edges[0]), float(edges[1]))
    if "signal" not in out:
        raise ConfigError("analysis.regions must define 'signal' (the signal region in m_mumu)")
    return out


def model_features(model_json: str | Path) -> list[str]:
    """The ``features`` list of the classifier's ``model.json`` (names of EVENT_COLUMNS)."""
    import json

    try:
        meta = json.loads(Path(model_json).read_text())
        names = list(meta["features"])
    except FileNotFoundError:
        raise InputFileError(f"{model_json}: classifier description not found") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{model_json}: expected a JSON object with a 'features' list ({exc})") from None
    bad = [n for n in names if n not in features.EVENT_COLUMNS]
    if bad:
        raise InputFileError(f"{model_json}: features {bad} are not event columns (pipeline.features.EVENT_COLUMNS)")
    return names


_MODELS: dict[str, object] = {}  # TorchScript modules per path, loaded once per worker process


def _load_model(path: str, threads: int):
    import torch

    if path not in _MODELS:
        torch.set_num_threads(int(threads))
        try:
            model = torch.jit.load(path, map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputFileError(f"{path}: not a TorchScript classifier ({exc})") from None
        model.eval()
        _MODELS[path] = model
    return _MODELS[path]


def classifier_scores(model_path: str, names: Sequence[str], columns: Mapping[str, np.ndarray],
                      threads: int = 1) -> np.ndarray:
    """Scores in [0, 1] of the TorchScript classifier for the events of ``columns``."""
    import torch

    n = len(next(iter(columns.values())))
    if n == 0:
        return np.zeros(0)
    x = np.stack([np.asarray(columns[c], dtype=np.float32) for c in names], axis=1)
    with torch.no_grad():
        s = _load_model(str(model_path), threads)(torch.from_numpy(x))
    return s.detach().numpy().astype(np.float64).reshape(-1)


def histogram_axes(analysis_cfg: Mapping) -> dict[str, tuple[int, float, float]]:
    """``analysis.histograms`` as ``{variable: (bins, lo, hi)}``."""
    out = {}
    for name, spec in _cfg(analysis_cfg, "histograms", "analysis").items():
        if name != SCORE and name not in features.EVENT_COLUMNS:
            raise ConfigError(f"analysis.histograms.{name}: not an event column (pipeline.features.EVENT_COLUMNS) "
                              f"nor '{SCORE}'")
        out[name] = (int(spec["bins"]), float(spec["lo"]), float(spec["hi"]))
    return out


def axis_label(name: str) -> str:
    """Axis label of a histogrammed variable (unit in brackets)."""
    return "DisCo classifier score" if name == SCORE else features.axis_label(name)


def new_histograms(analysis_cfg: Mapping, with_score: bool) -> dict:
    """Empty ``hist.Hist`` (region x variable, Weight storage) per ``analysis.histograms`` entry."""
    import hist

    names = list(regions(analysis_cfg))
    out = {}
    for var, (bins, lo, hi) in histogram_axes(analysis_cfg).items():
        if var == SCORE and not with_score:
            continue
        out[var] = hist.Hist(
            hist.axis.StrCategory(names, name="region", label="region"),
            hist.axis.Regular(bins, lo, hi, name=var, label=axis_label(var)),
            storage=hist.storage.Weight(),
        )
    return out


def bootstrap_histogram(analysis_cfg: Mapping, variable: str, replicas: int):
    """Empty ``hist.Hist`` (region x replica x ``variable``, Weight storage) of the bootstrap."""
    import hist

    bins, lo, hi = histogram_axes(analysis_cfg)[variable]
    return hist.Hist(
        hist.axis.StrCategory(list(regions(analysis_cfg)), name="region", label="region"),
        hist.axis.Integer(0, int(replicas), name="replica", label="bootstrap replica", underflow=False, overflow=False),
        hist.axis.Regular(bins, lo, hi, name=variable, label=axis_label(variable)),
        storage=hist.storage.Weight(),
    )


def selection(cols: Mapping[str, np.ndarray], skim_cfg: Mapping, analysis_cfg: Mapping) -> list[tuple[str, np.ndarray]]:
    """Ordered ``(cut name, cumulative mask)`` of the VBF H -> mu mu selection (see module doc)."""
    vbf = _cfg(analysis_cfg, "vbf", "analysis")
    for key in VBF_KEYS:
        _cfg(vbf, key, "analysis.vbf")
    edges = regions(analysis_cfg)
    lo = min(e[0] for e in edges.values())
    hi = max(e[1] for e in edges.values())
    n = len(cols["m_mumu"])
    cuts = [("all", np.ones(n, dtype=bool))]
    # the muon cuts of the skim preselection (its own m_mumu window is replaced by the regions')
    cuts += [(name, mask) for name, _, mask in features.preselection(cols, skim_cfg)[:-1]]
    mask = cuts[-1][1]
    with np.errstate(invalid="ignore"):
        for name, cut in (
            (f"mmumu_{lo:g}_{hi:g}", (cols["m_mumu"] >= lo) & (cols["m_mumu"] < hi)),
            ("two_jets", cols["n_jets"] >= 2),
            ("lead_jet_pt", cols["j1_pt"] > vbf["lead_jet_pt_min_gev"]),
            ("sublead_jet_pt", cols["j2_pt"] > vbf["sublead_jet_pt_min_gev"]),
            ("mjj", cols["m_jj"] > vbf["mjj_min_gev"]),
            ("deta_jj", cols["delta_eta_jj"] > vbf["deta_jj_min"]),
        ):
            mask = mask & np.asarray(cut, dtype=bool)
            cuts.append((name, mask))
    return cuts


def _sums(w: np.ndarray, event_ids: np.ndarray | None = None) -> dict:
    """Entries, sum of weights, sum of squared weights; with ``event_ids``, also ``sumw2_events``:
    the squared weights summed per event number (entries sharing one, the k FlashSim copies of a
    generator event, are one statistically independent event)."""
    out = {"events": int(len(w)), "sumw": float(np.sum(w)), "sumw2": float(np.sum(w * w))}
    if event_ids is not None:
        _, inverse = np.unique(event_ids, return_inverse=True)
        per_event = np.bincount(inverse, weights=w)
        out["sumw2_events"] = float(np.sum(per_event * per_event))
    return out


def process_columns(cols: Mapping[str, np.ndarray], weights: np.ndarray, skim_cfg: Mapping, analysis_cfg: Mapping,
                    scores_fn=None, event_ids: np.ndarray | None = None,
                    bootstrap_salts: Sequence[int] = ()) -> dict:
    """Selection, histograms, cutflow and yields of one chunk given its event columns.

    ``cols`` holds :data:`pipeline.features.EVENT_COLUMNS` (numpy, one entry per event),
    ``weights`` the event weights; ``scores_fn(columns_of_selected_events) -> scores`` adds the
    classifier score (None: no score histogram); ``event_ids`` (the ``event`` branch) adds the
    per-event-number variance ``sumw2_events`` to the yields; ``bootstrap_salts`` (one per
    replica, :func:`pipeline.seeds.salt64`; needs ``event_ids``) the bootstrap histogram of
    the fit variable (module docstring). Used by :class:`VBFHmumuProcessor` and by the skim-level
    benchmark (skims hold the same columns).
    """
    cuts = selection(cols, skim_cfg, analysis_cfg)
    out = {"hists": new_histograms(analysis_cfg, scores_fn is not None), "cutflow": {}, "yields": {}}
    for name, mask in cuts:
        out["cutflow"][name] = _sums(weights[mask])
    sel = cuts[-1][1]
    scols = {k: np.asarray(v)[sel] for k, v in cols.items()}
    w = weights[sel]
    ids = None if event_ids is None else np.asarray(event_ids)[sel]
    if scores_fn is not None:
        scols[SCORE] = scores_fn(scols)
    boot = None
    if len(bootstrap_salts):
        if ids is None:
            raise ValueError("bootstrap replicas need the event numbers (event_ids)")
        bvar = _cfg(_cfg(analysis_cfg, "fit", "analysis"), "variable", "analysis.fit")
        if bvar not in out["hists"]:
            raise ConfigError(f"analysis.fit.variable is {bvar!r} but this analysis has no such histogram "
                              "(not in analysis.histograms, or the score without a classifier model)")
        boot = bootstrap_histogram(analysis_cfg, bvar, len(bootstrap_salts))
        out["bootstrap"] = {bvar: boot}
    for region, (lo, hi) in regions(analysis_cfg).items():
        in_region = (scols["m_mumu"] >= lo) & (scols["m_mumu"] < hi)
        out["yields"][region] = _sums(w[in_region], None if ids is None else ids[in_region])
        for var, h in out["hists"].items():
            h.fill(region=region, **{var: scols[var][in_region]}, weight=w[in_region])
        if boot is not None and in_region.any():
            n = int(in_region.sum())
            p = np.stack([event_poisson1(ids[in_region], salt) for salt in bootstrap_salts])
            boot.fill(region=region, replica=np.repeat(np.arange(len(bootstrap_salts)), n),
                      **{bvar: np.tile(scols[bvar][in_region], len(bootstrap_salts))},
                      weight=(p * w[in_region]).ravel())
    return out


try:  # coffea is a dependency; the import is guarded so that the pure helpers above import fast
    from coffea import processor as _coffea_processor

    _ProcessorABC = _coffea_processor.ProcessorABC
except ImportError:  # pragma: no cover
    _ProcessorABC = object


class VBFHmumuProcessor(_ProcessorABC):
    """Coffea processor of the VBF H -> mu mu analysis (see the module docstring).

    ``norms``: ``{dataset: xsec * 1000 * lumi / sum genWeight}``; ``model_path`` / ``model_features``:
    the TorchScript classifier and its input columns, or None (no score); ``bootstrap_salts``:
    ``{dataset: one salt per bootstrap replica}`` (None or empty: no bootstrap histogram).
    """

    def __init__(self, skim_cfg: Mapping, analysis_cfg: Mapping, norms: Mapping[str, float],
                 model_path: str | None = None, model_feature_names: Sequence[str] | None = None,
                 threads: int = 1, bootstrap_salts: Mapping[str, Sequence[int]] | None = None):
        self.skim_cfg = dict(skim_cfg)
        self.analysis_cfg = dict(analysis_cfg)
        self.norms = {k: float(v) for k, v in norms.items()}
        self.model_path = None if model_path is None else str(model_path)
        self.model_feature_names = list(model_feature_names or [])
        if self.model_path is not None and not self.model_feature_names:
            raise ConfigError("a classifier model needs its feature names (model.json 'features')")
        self.threads = int(threads)
        self.bootstrap_salts = {k: [int(x) for x in v] for k, v in (bootstrap_salts or {}).items()}
        regions(self.analysis_cfg)  # config errors before any chunk runs
        histogram_axes(self.analysis_cfg)

    def _scores(self, columns):
        return classifier_scores(self.model_path, self.model_feature_names, columns, self.threads)

    def process(self, events):
        dataset = events.metadata["dataset"]
        muons = events.Muon
        jets = events.Jet
        sel_mu, sel_jet = features.select_objects(muons, jets, self.skim_cfg)
        cols = features.event_features(sel_mu, sel_jet, events.MET.pt, events.MET.phi, self.skim_cfg)
        weights = ak.to_numpy(events.genWeight).astype(np.float64) * self.norms[dataset]
        return process_columns(cols, weights, self.skim_cfg, self.analysis_cfg,
                               self._scores if self.model_path else None, ak.to_numpy(events.event),
                               self.bootstrap_salts.get(dataset, ()))

    def postprocess(self, accumulator):
        return accumulator
