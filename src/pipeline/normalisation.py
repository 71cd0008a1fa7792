"""Luminosity normalisation of a sample: cross section, sum of generator weights, weight per event.

``weight = genWeight * norm`` with ``norm = xsec_pb * 1000 * luminosity_fb / sum_genWeight``, where
``sum_genWeight`` covers every event of every file before any cut (per file the ``Runs`` tree's
``genEventSumw`` when present, else the sum of its ``genWeight`` branch) and ``xsec_pb`` is
``samples.<sample>.xsec_pb`` if set, else the ``Runs`` trees' (sum-of-weights weighted mean).

Used by the skim (:func:`pipeline.skim.skim_sample`, which sums the weights it reads anyway) and by
the Coffea analysis (:func:`sample_normalisation`, for full and flash samples).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline import io, nanoaod
from pipeline.errors import ConfigError, InputFileError

GENWEIGHT = nanoaod.flat_branch(nanoaod.EVENT_WEIGHT, "genWeight")


def read_runs(path: str) -> dict:
    """The ``Runs`` contract fields of a file (``{}`` if it has no ``Runs`` tree); one clear error
    if the tree is unreadable."""
    try:
        return io.read_runs(path) or {}
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: 'Runs' tree unreadable, truncated or corrupt? ({exc})") from None


def cross_section(sample: str, sample_cfg: Mapping, files: list[str], runs: dict) -> tuple[float | None, str]:
    """xsec [pb] from the config, or None (to be averaged from the Runs trees); its source."""
    key = f"samples.{sample}.xsec_pb"
    xsec = sample_cfg.get("xsec_pb")
    if xsec is not None:
        if not float(xsec) > 0:
            raise ConfigError(f"{key} is {xsec}; expected a cross-section > 0 [pb]")
        return float(xsec), f"config {key}"
    lacking = [f for f in files if runs[f].get("xsec_pb") is None]
    if lacking:
        raise ConfigError(
            f"{key} is not set and {lacking[0]} has no 'Runs' tree with xsec_pb; "
            f"set {key} (cross-section in pb) for sample '{sample}'"
        )
    return None, "Runs tree xsec_pb (sum-of-weights weighted mean over files)"


def sample_normalisation(files: list[str], sample: str, sample_cfg: Mapping, luminosity_fb: float) -> dict:
    """Luminosity normalisation of a sample, as :func:`pipeline.skim.skim_sample` computes it,
    without a skim.

    ``norm = xsec_pb * 1000 * luminosity_fb / sum_genWeight`` (so ``weight = genWeight * norm``);
    ``sum_genWeight`` sums every file's ``Runs`` ``genEventSumw``, or its ``genWeight`` branch where
    the file has none; ``xsec_pb`` is ``sample_cfg['xsec_pb']``, else the ``Runs`` trees'
    (sum-of-weights weighted mean). Used by the Coffea analysis for full and flash samples (flash
    events carry ``genWeight / k`` and the input's ``Runs`` tree, so the sums agree).
    Returns ``{"norm", "xsec_pb", "xsec_source", "sum_genWeight"}``.
    """
    files = [str(f) for f in files]
    if not files:
        raise InputFileError(f"sample '{sample}': no input files")
    for f in files:
        io.open_tree(f).file.close()  # existence, ROOT magic, Events tree: one clear error
    runs = {f: read_runs(f) for f in files}
    xsec, source = cross_section(sample, sample_cfg, files, runs)
    sumws = []
    for f in files:
        if runs[f].get("genEventSumw") is not None:
            sumws.append(float(runs[f]["genEventSumw"]))
        else:
            tree = io.open_tree(f)
            io.check_branches(tree, [GENWEIGHT], f, f"normalisation of sample '{sample}'")
            sumws.append(float(np.sum(tree[GENWEIGHT].array(library="np"), dtype=np.float64)))
            del tree
    ws = np.asarray(sumws)
    sumw = float(ws.sum())
    if xsec is None:
        xs = np.array([runs[f]["xsec_pb"] for f in files], dtype=float)
        xsec = float(np.average(xs, weights=ws)) if sumw > 0 else float(xs.mean())
    if not sumw > 0:
        raise InputFileError(f"sample '{sample}': sum of genWeight is {sumw} over {len(files)} files; expected > 0")
    return {"norm": xsec * 1000.0 * float(luminosity_fb) / sumw, "xsec_pb": xsec, "xsec_source": source,
            "sum_genWeight": sumw}
