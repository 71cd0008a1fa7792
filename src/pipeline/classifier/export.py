"""Export of the chosen classifier for the analysis (rule ``export_classifier``).

Contract (the Coffea analysis relies on it exactly):

``results/models/classifier/model.pt``
    A TorchScript module (``torch.jit.save``). ``forward`` takes a float32 tensor of shape (N, F)
    holding the RAW event columns, as :func:`pipeline.features.event_features` and the skim produce
    them (NaN for absent objects, e.g. a missing second jet), in the order of ``features`` in
    model.json, and returns float32 scores in [0, 1] of shape (N,). NaN handling and
    standardisation are inside the module; ``torch.jit.load`` alone is enough to use it.
``results/models/classifier/model.json``
    ``features`` (list of :data:`pipeline.features.EVENT_COLUMNS` names), ``lambda``,
    ``threshold_eff50`` (score cut keeping 50 % of the signal on the test split; ``score >
    threshold`` passes), ``auc``, ``r50``, ``inv_jsd``, ``inv_jsd_floor``, ``population``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.classifier.data import feature_names
from pipeline.classifier.naming import lambda_tag
from pipeline.errors import InputFileError, MissingColumnError


def export_model(scorers: Mapping[str, str], metrics_path: str, ccfg: Mapping, out_model: str,
                 out_json: str) -> dict[str, Any]:
    """Copy the scorer (``lambda tag -> file``) of ``chosen_lambda`` of the ``classifier`` config
    block ``ccfg`` to ``out_model`` and write ``out_json``."""
    tag = lambda_tag(ccfg["chosen_lambda"])
    metrics = json.loads(Path(metrics_path).read_text())["lambdas"]
    if tag not in metrics or tag not in scorers:
        raise InputFileError(f"{metrics_path}: no evaluation of the chosen lambda {tag}")
    m = metrics[tag]
    meta = {
        "features": feature_names(ccfg),
        "lambda": float(ccfg["chosen_lambda"]),
        "threshold_eff50": m["threshold_eff50"],
        **{k: m[k] for k in ("auc", "r50", "inv_jsd", "inv_jsd_floor", "dcor_weighted_sq")},
        "population": dict(ccfg["population"]),
        "input": "float32 (N, F) raw event columns in the order of 'features', NaN for absent objects",
        "output": "float32 (N,) score in [0, 1]; signal-like is high",
    }
    with io.atomic_output(out_model) as tmp:
        shutil.copyfile(scorers[tag], tmp)
    io.write_json(out_json, meta)
    return meta


class LoadedScorer:
    """A TorchScript scorer with its model.json: ``scorer(table)`` scores a DataFrame / mapping of
    columns (missing column: one clear error), ``scorer.module`` is the raw TorchScript module."""

    def __init__(self, module, meta: dict[str, Any], path: str):
        self.module, self.meta, self.path = module, meta, path
        self.features: list[str] = list(meta["features"])
        self.threshold_eff50: float = float(meta["threshold_eff50"])

    def __call__(self, columns) -> np.ndarray:
        import torch

        missing = [f for f in self.features if f not in columns]
        if missing:
            raise MissingColumnError(f"classifier {self.path}: input has no column {', '.join(map(repr, missing))}")
        x = np.stack([np.asarray(columns[f], dtype=np.float32) for f in self.features], axis=1)
        with torch.no_grad():
            return self.module(torch.from_numpy(x)).numpy()


def load_scorer(path: str) -> LoadedScorer:
    """Load ``model.pt`` and the ``model.json`` beside it (same stem)."""
    import torch

    path = Path(path)
    meta_path = path.with_suffix(".json")
    for p in (path, meta_path):
        if not p.exists():
            raise InputFileError(f"{p}: file does not exist (classifier export)")
    module = torch.jit.load(str(path)).eval()
    return LoadedScorer(module, json.loads(meta_path.read_text()), str(path))

