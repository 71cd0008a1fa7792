"""Material for ``snakemake --report``: metrics tables rendered as HTML, plot galleries per stage.

Snakemake's report embeds files marked with ``report(...)`` in the rules. The metrics JSONs of
the stages (FlashSim validation, calorimeter validation, classifier, analysis yields and fit) are
rendered here into small self-contained HTML tables (:func:`metrics_tables`); plots that other
stages write beside their declared outputs are gathered into one folder per stage
(:func:`collect_plots`), which the report rule declares as a ``report(directory(...))``.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import InputFileError
from pipeline.io import atomic_output

_STYLE = ("<style>body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
          "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right} th{background:#eee}"
          "td:first-child,th:first-child{text-align:left} caption{font-weight:bold;margin:6px}</style>")


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return f"[{len(v)} values]"
    return html.escape(str(v))


def _flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def _page(title: str, body: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}" \
           f"</head><body>{body}</body></html>\n"


def _table(caption: str, header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def key_value_table(title: str, metrics: Mapping) -> str:
    """An HTML page with one row per (flattened) metric."""
    rows = [[k, v] for k, v in _flatten(metrics).items()]
    return _page(title, _table(title, ["metric", "value"], rows))


def yields_table(yields: Mapping) -> str:
    """The yields.json table: sample, region, full, flash (yield +- error), pull."""
    rows = []
    for sample, regs in yields.items():
        for region, v in regs.items():
            (yf, ef), (yg, eg) = v["full"], v["flash"]
            err = (ef**2 + eg**2) ** 0.5
            pe = v.get("difference_error_paired")
            rows.append([sample, region, f"{yf:.4g} ± {ef:.2g}", f"{yg:.4g} ± {eg:.2g}",
                         (yg - yf) / err if err > 0 else 0.0,
                         "" if pe is None else f"{pe:.2g}", "" if not pe else (yg - yf) / pe])
    return _page("Yields", _table("Yields per sample and region (luminosity-normalised, stat. errors; σ paired: "
                                  "bootstrap over the shared generator events)",
                                  ["sample", "region", "full", "flash", "(flash-full)/σ", "σ paired",
                                   "(flash-full)/σ paired"], rows))


def fit_table(fit: Mapping) -> str:
    """The fit.json table: one column per simulation, then the cross fits."""
    keys = ["expected_significance", "expected_significance_stat_only", "p0", "mu_uncertainty",
            "signal_yield", "background_yield", "background_mc_stat_error"]
    over = fit.get("flash_oversampled") or {}
    rows = [[k, fit["full"].get(k), fit["flash"].get(k), over.get(k)] for k in keys]
    rows.append(["significance relative to full", 0.0, fit.get("significance_relative_difference"),
                 over.get("significance_relative_difference")])
    body = _table(f"pyhf closure: templates of {fit.get('variable')} in the signal region "
                  f"({fit.get('bins_used')} bins); flash at the full simulation's MC statistics, and with "
                  f"its own ({fit.get('flash_copies', 1)} copies per gen event)",
                  ["quantity", "full", "flash", "flash (oversampled MC stat.)"], rows)
    boot = fit.get("bootstrap")
    if boot:
        brows = [[name.replace("_relative_difference", "").replace("_", " "), boot[name]["mean"], boot[name]["std"],
                  boot[name]["q16"], boot[name]["q84"]]
                 for name in ("significance_relative_difference", "stat_only_significance_relative_difference",
                              "background_yield_relative_difference")]
        body += "<br>" + _table(f"flash/full - 1 over {boot['used']} of {boot['replicas']} bootstrap replicas "
                                "(generator events resampled, the same in both simulations): the spread is the "
                                "statistical uncertainty of the nominal difference",
                                ["quantity", "mean", "std", "16 %", "84 %"], brows)
    cross = [[name, c["mu"], c["mu_uncertainty"]] for name, c in fit.get("cross", {}).items()]
    body += "<br>" + _table("Cross fits to the other simulation's Asimov data (expected mu = 1)",
                            ["fit", "mu", "uncertainty"], cross)
    return _page("Fit", body)


RENDERERS = {"yields": yields_table, "fit": fit_table}


def metrics_tables(metrics: Mapping[str, str], out_dir: str) -> list[str]:
    """Render ``{name: metrics JSON path}`` into ``out_dir/<name>.html``; return the written paths.

    ``yields`` and ``fit`` get their own layout; anything else a flattened metric/value table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in metrics.items():
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputFileError(f"{path}: metrics file of '{name}' not found") from None
        except ValueError as exc:
            raise InputFileError(f"{path}: not JSON ({exc})") from None
        page = RENDERERS[name](data) if name in RENDERERS else key_value_table(name, data)
        target = out / f"{name}.html"
        with atomic_output(target) as tmp:
            Path(tmp).write_text(page)
        written.append(str(target))
    return written


def collect_plots(sources: Mapping[str, str], out_dir: str, pattern: str = "*.png") -> int:
    """Copy the plots ``pattern`` of each ``{label: source folder}`` to ``out_dir/<label>/``.

    Returns the number of files copied; a source folder without plots is an error (the stage
    that should have written them did not)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for label, src in sources.items():
        files = sorted(Path(src).glob(pattern))
        if not files:
            raise InputFileError(f"{src}: no plots ({pattern}) for the report section '{label}'")
        dest = out / label
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / f.name)
            n += 1
    return n
