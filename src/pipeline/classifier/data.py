"""Inputs of the classifiers: which skims, which events, which columns, which split.

Population (``classifier.population``): skim-preselected events with
``mmumu_min_gev < m_mumu < mmumu_max_gev`` and at least ``min_jets`` selected jets, from every
sample whose ``role`` is ``signal`` or ``background`` (built-in or external). Float features of
absent objects (a second jet) stay NaN here; the scorer fills them (:mod:`.model`).

Split: a hash of the event number (:func:`pipeline.seeds.is_holdout`, the same
splitmix64 hash as the FlashSim hold-out) below ``split.test_fraction`` is the test split, below
``test_fraction + val_fraction`` the validation split, the rest is trained on. The same event
number is in the same split in every sample and every run.

Weights: ``weight`` of the skim is the physical weight (cross section x luminosity). The training
weight rescales each class to the same total (signal and background weigh equally in the BCE),
with mean 1 over the training events; the DisCo term uses the physical background weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import features, io
from pipeline.errors import ConfigError, EmptySelectionError
from pipeline.seeds import is_holdout

log = logging.getLogger(__name__)

#: The variable that is fitted afterwards: never an input, always the DisCo partner of the score.
DECORRELATED = "m_mumu"
#: Skim columns read besides the features.
BOOKKEEPING = ("event", "weight", "sample", "n_jets")
SPLITS = ("train", "val", "test")


def feature_names(ccfg: Mapping) -> list[str]:
    """``classifier.features``, checked: known event columns, no duplicates, never m_mumu."""
    names = list(ccfg["features"])
    unknown = [n for n in names if n not in features.EVENT_COLUMNS]
    if unknown:
        raise ConfigError(f"classifier.features: {', '.join(map(repr, unknown))} not in "
                          "pipeline.features.EVENT_COLUMNS")
    if DECORRELATED in names:
        raise ConfigError(f"classifier.features: {DECORRELATED!r} is the decorrelated (fitted) variable and "
                          "must not be an input")
    if len(set(names)) != len(names):
        raise ConfigError("classifier.features: a column is listed twice")
    return names


def classifier_samples(cfg: Mapping) -> dict[str, str]:
    """sample -> role for every sample with role signal or background."""
    out = {s: c["role"] for s, c in cfg["samples"].items() if c["role"] in ("signal", "background")}
    roles = set(out.values())
    if roles != {"signal", "background"}:
        raise ConfigError("samples: the classifiers need at least one sample with role signal and one with "
                          f"role background (have: {', '.join(sorted(roles)) or 'none'})")
    return out


def split_of(event: np.ndarray, test_fraction: float, val_fraction: float) -> np.ndarray:
    """"train" / "val" / "test" per event number (hash split, see the module docstring)."""
    test = is_holdout(event, test_fraction)
    val = is_holdout(event, test_fraction + val_fraction) & ~test
    return np.where(test, "test", np.where(val, "val", "train"))


@dataclass
class Dataset:
    """One split of the population: raw features (float32, NaN for absent objects), label,
    physical weight, m_mumu, sample name."""

    x: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    m_mumu: np.ndarray
    sample: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.x[mask], self.label[mask], self.weight[mask], self.m_mumu[mask], self.sample[mask])

    def class_balanced_weight(self) -> np.ndarray:
        """Weights with equal signal and background totals and mean 1."""
        w = self.weight.astype(np.float64).copy()
        for lab in (0, 1):
            m = self.label == lab
            total = w[m].sum()
            if total <= 0:
                raise EmptySelectionError(f"classifier: the {'signal' if lab else 'background'} events of a split "
                                          "have no positive total weight")
            w[m] *= 0.5 * len(w) / total
        return w.astype(np.float32)


def load_population(skims: Mapping[str, str], roles: Mapping[str, str], ccfg: Mapping) -> dict[str, Dataset]:
    """Read the skims (``sample -> path``) and return the population, split into train/val/test.

    A skim without a needed column raises :class:`pipeline.errors.MissingColumnError` naming the
    column and the file.
    """
    names = feature_names(ccfg)
    pop = ccfg["population"]
    columns = list(dict.fromkeys([*names, DECORRELATED, *BOOKKEEPING]))
    parts = []
    for sample, path in skims.items():
        if sample not in roles:
            raise ConfigError(f"classifier: sample {sample!r} has no role signal/background")
        df = io.read_parquet(path, columns, what=f"the classifier (classifier.features / population, sample {sample})")
        keep = ((df[DECORRELATED] > pop["mmumu_min_gev"]) & (df[DECORRELATED] < pop["mmumu_max_gev"])
                & (df["n_jets"] >= pop["min_jets"]))
        df = df[keep.to_numpy()]
        log.info("classifier population: %s (%s) %d events", sample, roles[sample], len(df))
        parts.append(pd.DataFrame({
            **{n: df[n].to_numpy(np.float32) for n in names},
            DECORRELATED: df[DECORRELATED].to_numpy(np.float32),
            "event": df["event"].to_numpy(np.uint64),
            "weight": df["weight"].to_numpy(np.float64),
            "sample": np.asarray(df["sample"].astype(str).to_numpy(), dtype=object) if len(df) else
            np.array([], dtype=object),
            "label": np.full(len(df), 1 if roles[sample] == "signal" else 0, dtype=np.int8),
        }))
    data = pd.concat(parts, ignore_index=True)
    split = split_of(data["event"].to_numpy(), float(ccfg["split"]["test_fraction"]),
                     float(ccfg["split"]["val_fraction"]))
    full = Dataset(data[names].to_numpy(np.float32), data["label"].to_numpy(np.int8),
                   data["weight"].to_numpy(np.float64), data[DECORRELATED].to_numpy(np.float32),
                   data["sample"].to_numpy(object))
    out = {s: full.subset(split == s) for s in SPLITS}
    for s, d in out.items():
        n_sig, n_bkg = int((d.label == 1).sum()), int((d.label == 0).sum())
        log.info("classifier %s split: %d signal, %d background events", s, n_sig, n_bkg)
        if n_sig == 0 or n_bkg == 0:
            raise EmptySelectionError(
                f"classifier: the {s} split has {n_sig} signal and {n_bkg} background events in the population "
                f"({pop['mmumu_min_gev']} < m_mumu < {pop['mmumu_max_gev']} GeV, n_jets >= {pop['min_jets']}); "
                "more events or a wider classifier.population are needed")
    return out
