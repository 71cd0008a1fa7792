"""Plotting helpers shared by every stage: ``hist`` histograms drawn with mplhep's CMS style.

Conventions (so that every plot of the pipeline reads the same way):

- CMS style (``mplhep.style.CMS``) and the label "CMS Simulation Private work (13.6 TeV)"
  (:data:`LABEL`; override per call with ``label_kwargs``). The style is applied by the context
  :func:`style`, never at import: importing this module leaves matplotlib's ``rcParams`` alone.
  The public ``plot_*`` functions enter it themselves; code that draws on :func:`figure` /
  :func:`figure_with_ratio` or saves a returned figure wraps all of it, from the figure to
  :func:`save`, in ``with plotting.style():`` (rcParams are read when ticks and text are drawn).
- Every axis is labelled, with its unit in square brackets where it has one
  (``"Gen jet $p_T$ [GeV]"``); the plotting functions refuse an empty axis label.
- Statistical uncertainties are always drawn: bands for histograms, error bars for profiles,
  Clopper-Pearson intervals for efficiencies. Bins without entries are not drawn (NaN), never
  drawn as zero.
- Ratio panels show ``other / reference``; the grey band around 1 is the reference's own relative
  statistical uncertainty, the error bars the other histogram's.
- :func:`save` writes atomically (temporary file + rename), PNG at 150 dpi, optionally a PDF
  next to it, and closes the figure. Figures are made with the non-interactive Agg backend.

The numbers drawn here (profiles, efficiencies and their intervals) are computed by
:mod:`pipeline.stats`, which does not import matplotlib.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # do not switch the backend of an interactive session
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.io import atomic_output  # noqa: E402
from pipeline.stats import Efficiency, Profile, efficiency, profile  # noqa: E402

#: Experiment label of every plot: "CMS Simulation Private work (13.6 TeV)".
LABEL: dict[str, Any] = {"exp": "CMS", "text": "Private work", "data": False, "com": 13.6, "loc": 0}
DPI = 150
#: The mplhep style of every plot (applied by :func:`style`).
STYLE = "CMS"
RATIO_BAND = {"color": "0.6", "alpha": 0.4, "linewidth": 0}


# --------------------------------------------------------------------------------------------
# style, figures and saving
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def style() -> Iterator[None]:
    """The pipeline's plot style (mplhep's CMS style) for the block; rcParams restored after it.

    Wrap everything from creating a figure to :func:`save` in it (ticks and text read rcParams
    when they are drawn). Nesting is harmless. Usable as a decorator: ``@plotting.style()``.
    """
    with matplotlib.rc_context():
        hep.style.use(STYLE)
        yield


def _check_label(name: str, text: str | None) -> str:
    if not text or not str(text).strip():
        raise ValueError(f"{name} is required: label every axis (with its unit, e.g. '$p_T$ [GeV]')")
    return str(text)


def experiment_label(ax, label_kwargs: Mapping[str, Any] | None = None, **extra: Any) -> None:
    """Draw the experiment label (:data:`LABEL`, updated by ``label_kwargs``) on ``ax``.

    mplhep renders the whole figure to place the label, so :func:`figure` and
    :func:`figure_with_ratio` call this on the still-empty axes (cheap), and y axes use plain
    numbers without a ``x10^n`` offset text that could collide with the label.
    """
    kwargs = {"scilocator_adjust": False, **LABEL, **(label_kwargs or {}), **extra}
    exp = kwargs.pop("exp")
    hep.label.exp_label(exp=exp, ax=ax, **kwargs)


def _plain_y(ax) -> None:
    from matplotlib.ticker import ScalarFormatter

    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)


def figure(figsize: tuple[float, float] = (10, 9), label_kwargs: Mapping[str, Any] | None = None,
           label: bool = True):
    """A single-panel figure with the experiment label: ``(fig, ax)``."""
    fig, ax = plt.subplots(figsize=figsize)
    _plain_y(ax)
    if label:
        experiment_label(ax, label_kwargs)
    return fig, ax


def figure_with_ratio(figsize: tuple[float, float] = (10, 10), height_ratios: tuple[float, float] = (3, 1),
                      label_kwargs: Mapping[str, Any] | None = None, label: bool = True):
    """A main panel and a ratio panel below it, sharing x: ``(fig, ax_main, ax_ratio)``.

    The experiment label is drawn on the main panel. Its x tick labels are hidden; put the x
    label on ``ax_ratio``.
    """
    fig, (ax, rax) = plt.subplots(2, 1, figsize=figsize, sharex=True,
                                  gridspec_kw={"height_ratios": list(height_ratios), "hspace": 0.06})
    ax.tick_params(labelbottom=False)
    _plain_y(ax)
    if label:
        experiment_label(ax, label_kwargs)
    return fig, ax, rax


def save(fig, path: str | os.PathLike, pdf: bool = False, dpi: int = DPI) -> str:
    """Write ``fig`` to ``path`` (PNG, ``dpi``) atomically, and ``path`` with ``.pdf`` if ``pdf``.

    The figure is closed afterwards, also when writing fails. Returns ``str(path)``.
    """
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        if pdf:
            with atomic_output(path.with_suffix(".pdf")) as tmp:
                fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"Creator": None, "Producer": None,
                                                         "CreationDate": None})
    finally:
        plt.close(fig)
    return str(path)


def _finish(fig, path: str | os.PathLike | None, pdf: bool):
    return fig if path is None else save(fig, path, pdf=pdf)


def _legend(ax, title: str | None = None, ncol: int = 1, rescale: bool = True, **kwargs: Any) -> None:
    """A legend in the upper right that does not hide the data.

    With ``rescale``, the y range is extended upwards (linearly or in decades on a log axis) by the
    fraction of the axes height that the legend needs, estimated from its number of lines. This is
    deterministic and costs no extra rendering (``mplhep.yscale_legend`` redraws the figure up to
    ten times, which dominated the run time of a stage's plots).
    """
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    kwargs.setdefault("loc", "upper right")
    ax.legend(title=title, ncol=ncol, **kwargs)
    if not rescale:
        return
    lines = -(-len(handles) // ncol) + (1 if title else 0)
    frac = min(0.07 * lines + 0.04, 0.6)
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        llo, lhi = np.log10(lo), np.log10(hi)
        ax.set_ylim(lo, 10 ** (llo + (lhi - llo) / (1 - frac)))
    else:
        ax.set_ylim(lo, lo + (hi - lo) / (1 - frac))


def _no_entries(ax, text: str = "no entries") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


# --------------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------------
def _values_errors(h, density: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-range values, stat errors and edges of a 1-D hist (variances = counts if unweighted)."""
    values = np.asarray(h.values(), dtype=float)
    var = h.variances()
    var = values.copy() if var is None else np.asarray(var, dtype=float)
    edges = np.asarray(h.axes[0].edges, dtype=float)
    if _is_integer_axis(h.axes[0]):
        edges = edges - 0.5  # bin n drawn centred on the integer n
    if density:
        total = values.sum()
        norm = total * np.diff(edges) if total > 0 else np.ones_like(values)
        values, var = values / norm, var / norm**2
    return values, np.sqrt(np.clip(var, 0, None)), edges


def _is_integer_axis(axis) -> bool:
    import hist

    return isinstance(axis, hist.axis.Integer)


def _integer_ticks(ax, hists: Sequence) -> None:
    if hists and _is_integer_axis(hists[0].axes[0]):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_minor_locator(MaxNLocator(integer=True, nbins=50))


def _draw_hist(ax, values, errors, edges, label, color, band: bool = True) -> None:
    ax.stairs(values, edges, label=label, color=color, linewidth=2, baseline=None)
    if band:
        ax.stairs(values + errors, edges, baseline=values - errors, fill=True, color=color, alpha=0.25,
                  linewidth=0)


def _colors(n: int) -> list[str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    return [cycle[i % len(cycle)] for i in range(n)]


@style()
def plot_hists(hists: Sequence, labels: Sequence[str], *, xlabel: str, ylabel: str, density: bool = False,
               logy: bool = False, path: str | os.PathLike | None = None, legend_title: str | None = None,
               pdf: bool = False, label_kwargs: Mapping[str, Any] | None = None):
    """Overlay 1-D histograms with statistical error bands (no ratio panel).

    Returns the figure, or the written path when ``path`` is given.
    """
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    fig, ax = figure(label_kwargs=label_kwargs)
    any_entries = False
    drawn = []
    for h, label, color in zip(hists, labels, _colors(len(hists)), strict=True):
        v, e, edges = _values_errors(h, density)
        any_entries |= bool(np.any(v > 0))
        drawn.append(v)
        _draw_hist(ax, v, e, edges, label, color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _integer_ticks(ax, hists)
    _set_yscale(ax, logy, any_entries, drawn)
    _legend(ax, legend_title)
    if not any_entries:
        _no_entries(ax)
    return _finish(fig, path, pdf)


def _set_yscale(ax, logy: bool, any_entries: bool, values: Sequence[np.ndarray] = ()) -> None:
    """Linear from zero, or logarithmic from just below the smallest non-empty bin (empty bins and
    their error bands would otherwise drag the axis down to ~1e-18)."""
    if logy and any_entries:
        ax.set_yscale("log")
        flat = np.concatenate([np.ravel(v) for v in values]) if len(values) else np.array([])
        positive = flat[np.isfinite(flat) & (flat > 0)]
        if positive.size:
            ax.set_ylim(positive.min() / 3.0, positive.max() * 3.0)
    else:
        ax.set_ylim(bottom=0)


@style()
def plot_hists_with_ratio(hists: Sequence, labels: Sequence[str], reference_index: int = 0, xlabel: str = "",
                          ylabel: str = "", density: bool = False, path: str | os.PathLike | None = None, *,
                          logy: bool = False, ratio_label: str | None = None,
                          ratio_range: tuple[float, float] | None = None, legend_title: str | None = None,
                          pdf: bool = False, label_kwargs: Mapping[str, Any] | None = None):
    """Overlay 1-D histograms (stat error bands) with a ratio panel ``other / reference``.

    ``hists[reference_index]`` is the reference (e.g. full simulation, or the generator level).
    With ``density`` every histogram is normalised to unit area over its in-range bins. In the
    ratio panel the grey band is the reference's relative stat uncertainty; error bars are the
    other histogram's. Bins where the reference is empty are not drawn. ``ratio_range`` defaults
    to a range around 1 that contains the well-measured ratios (within [0, 2]). Returns the
    figure, or the written path when ``path`` is given. Integer axes (multiplicities) are drawn
    with bin ``n`` centred on ``n``.
    """
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    if not 0 <= reference_index < len(hists):
        raise ValueError(f"reference_index {reference_index} out of range for {len(hists)} histograms")
    fig, ax, rax = figure_with_ratio(label_kwargs=label_kwargs)
    colors = _colors(len(hists))
    drawn = [_values_errors(h, density) for h in hists]
    any_entries = False
    for (v, e, edges), label, color in zip(drawn, labels, colors, strict=True):
        any_entries |= bool(np.any(v > 0))
        _draw_hist(ax, v, e, edges, label, color)
    ax.set_ylabel(ylabel)
    _set_yscale(ax, logy, any_entries, [v for v, _, _ in drawn])
    _legend(ax, legend_title)
    if not any_entries:
        _no_entries(ax)

    ref_v, ref_e, ref_edges = drawn[reference_index]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref_v > 0, ref_e / ref_v, np.nan)
    rax.stairs(1 + rel, ref_edges, baseline=1 - rel, fill=True, **RATIO_BAND,
               label=f"{labels[reference_index]} stat. unc.")
    rax.axhline(1.0, color="0.3", linewidth=1, linestyle="--")
    finite: list[np.ndarray] = []
    for i, ((v, e, edges), color) in enumerate(zip(drawn, colors, strict=True)):
        if i == reference_index:
            continue
        if len(edges) != len(ref_edges) or not np.allclose(edges, ref_edges):
            raise ValueError(f"histogram '{labels[i]}' has other bins than the reference '{labels[reference_index]}'")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(ref_v > 0, v / ref_v, np.nan)
            re = np.where(ref_v > 0, e / ref_v, np.nan)
        centers = 0.5 * (edges[1:] + edges[:-1])
        rax.errorbar(centers, r, yerr=re, xerr=0.5 * np.diff(edges), fmt="o", color=color, markersize=5,
                     linewidth=1.5)
        # auto range from well-measured points only, so that one empty-ish bin cannot set it
        good = np.isfinite(r) & (re < 0.25)
        finite.append(r[good] if good.any() else r[np.isfinite(r)])
    if ratio_range is None:
        vals = np.concatenate(finite) if finite else np.array([])
        if vals.size:
            half = min(max(np.max(np.abs(vals - 1)) * 1.15, 0.15), 1.0)
            ratio_range = (max(1 - half, 0.0), 1 + half)
        else:
            ratio_range = (0.5, 1.5)
    rax.set_ylim(*ratio_range)
    ref_label = labels[reference_index]
    rax.set_ylabel(ratio_label or f"Ratio to\n{ref_label}", fontsize="small")
    rax.set_xlabel(xlabel)
    _integer_ticks(rax, hists)
    return _finish(fig, path, pdf)


# --------------------------------------------------------------------------------------------
# profiles: response and resolution (computed by pipeline.stats)
# --------------------------------------------------------------------------------------------
@style()
def plot_profiles(profiles: Sequence[Profile], labels: Sequence[str], *, what: str = "response", xlabel: str,
                  ylabel: str, path: str | os.PathLike | None = None, logx: bool = False,
                  hline: float | None = None, ylim: tuple[float, float] | None = None,
                  legend_title: str | None = None, pdf: bool = False,
                  label_kwargs: Mapping[str, Any] | None = None):
    """Draw profiles as points with error bars (x error bar = bin width).

    ``what``: ``"response"`` (centre: median or mean), ``"width"`` (absolute width) or
    ``"resolution"`` (width / centre). Empty bins (NaN) are not drawn. Returns the figure, or the
    written path when ``path`` is given.
    """
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    getters = {
        "response": lambda p: (p.center, p.center_err),
        "width": lambda p: (p.width, p.width_err),
        "resolution": lambda p: (p.resolution, p.resolution_err),
    }
    if what not in getters:
        raise ValueError(f"what must be one of {sorted(getters)}, not {what!r}")
    fig, ax = figure(label_kwargs=label_kwargs)
    markers = ["o", "s", "^", "D", "v", "P"]
    any_points = False
    for i, (p, label, color) in enumerate(zip(profiles, labels, _colors(len(profiles)), strict=True)):
        y, ye = getters[what](p)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        any_points = True
        centers = 0.5 * (p.edges[1:] + p.edges[:-1])
        if logx:
            centers = np.sqrt(p.edges[1:] * p.edges[:-1])
        xerr = np.vstack([centers - p.edges[:-1], p.edges[1:] - centers])
        ax.errorbar(centers[ok], y[ok], yerr=np.nan_to_num(ye[ok]), xerr=xerr[:, ok], fmt=markers[i % len(markers)],
                    color=color, label=label, markersize=6, linewidth=1.5, capsize=0)
    if hline is not None:
        ax.axhline(hline, color="0.4", linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
    if profiles:
        ax.set_xlim(profiles[0].edges[0], profiles[0].edges[-1])
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif what != "response":
        ax.set_ylim(bottom=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, legend_title)
    if not any_points:
        _no_entries(ax, "no bin with enough entries")
    return _finish(fig, path, pdf)


def plot_profile(x, y, bins, *, stat: str = "quantile", what: str = "response", label: str | None = None,
                 min_entries: int = 10, **kwargs: Any):
    """Profile of ``y`` versus ``x`` from arrays (:func:`profile`), drawn by :func:`plot_profiles`."""
    p = profile(x, y, bins, stat=stat, min_entries=min_entries)
    return plot_profiles([p], [label or ""], what=what, **kwargs)


def _plain_log_ticks(ax) -> None:
    """Log x axis with plain numbers (20, 50, 100, 200) rather than 10^n only."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------
# efficiencies with Clopper-Pearson intervals (computed by pipeline.stats)
# --------------------------------------------------------------------------------------------
@style()
def plot_efficiencies(effs: Sequence[Efficiency], labels: Sequence[str], *, xlabel: str,
                      ylabel: str = "Efficiency", path: str | os.PathLike | None = None, logx: bool = False,
                      ylim: tuple[float, float] = (0.0, 1.5), legend_title: str | None = None,
                      pdf: bool = False, label_kwargs: Mapping[str, Any] | None = None):
    """Draw efficiencies with Clopper-Pearson error bars; bins with no entries are not drawn.

    The default y range (0 to 1.5) leaves the space above 100 % to the legend.
    """
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    fig, ax = figure(label_kwargs=label_kwargs)
    markers = ["o", "s", "^", "D", "v", "P"]
    any_points = False
    for i, (eff, label, color) in enumerate(zip(effs, labels, _colors(len(effs)), strict=True)):
        e = eff.edges
        centers = np.sqrt(e[1:] * e[:-1]) if logx else 0.5 * (e[1:] + e[:-1])
        v = eff.value
        lo, hi = eff.interval
        ok = np.isfinite(v)
        if not ok.any():
            continue
        any_points = True
        ax.errorbar(centers[ok], v[ok], yerr=np.vstack([v - lo, hi - v])[:, ok],
                    xerr=np.vstack([centers - e[:-1], e[1:] - centers])[:, ok], fmt=markers[i % len(markers)],
                    color=color, label=label, markersize=6, linewidth=1.5)
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
    if effs:
        ax.set_xlim(effs[0].edges[0], effs[0].edges[-1])
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, legend_title, rescale=False, loc="upper right")
    if not any_points:
        _no_entries(ax)
    return _finish(fig, path, pdf)


def plot_efficiency(passed, total, bins=None, *, label: str | None = None, **kwargs: Any):
    """Efficiency of ``passed`` over ``total`` (x arrays with ``bins``, or 1-D hists) with CP errors."""
    return plot_efficiencies([efficiency(passed, total, bins)], [label or ""], **kwargs)
