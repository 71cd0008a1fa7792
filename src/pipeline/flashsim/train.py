"""Training of the FlashSim model of one object type (rule ``train_flow``).

Inputs: the training table of the object, its fake table and its event table (one row per event
read with its GenJet and fake multiplicities: the events without any fake are in no other table,
and the fake multiplicity needs them), all written by :func:`pipeline.flashsim.tables.training_table`.
Events of the validation split (:func:`pipeline.seeds.is_holdout`) are dropped from all three
before anything is fitted. Output: one file (:class:`pipeline.flashsim.model.FlashSimModel`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import io
from pipeline.errors import ConfigError, EmptySelectionError
from pipeline.flashsim import preprocessing as pp
from pipeline.flashsim.model import FakeModule, FakeMultiplicity, FlashSimModel, ObjectModule
from pipeline.seeds import int_seed, is_holdout, rng

log = logging.getLogger(__name__)


def _epoch_logger():
    """A Lightning callback that logs each epoch's losses and duration to the rule's log."""
    import lightning.pytorch as pl

    class _EpochLog(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            losses = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(trainer.callback_metrics.items()))
            log.info("epoch %d/%d (%.1f s): %s", trainer.current_epoch + 1, trainer.max_epochs,
                     time.perf_counter() - self._t0, losses)

    return _EpochLog()


def _trainer(epochs: int, tracked, progress: bool, root: str | None):
    import lightning.pytorch as pl

    from pipeline.tracking import lightning_logger

    return pl.Trainer(
        max_epochs=int(epochs),
        accelerator="auto",
        devices=1,
        logger=lightning_logger(tracked) if tracked is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        default_root_dir=root,
        log_every_n_steps=50,
        gradient_clip_val=5.0,
        callbacks=[_epoch_logger()],
    )


def _loaders(tensors: tuple[torch.Tensor, ...], batch_size: int, val_fraction: float, gen: np.random.Generator,
             repeats: np.ndarray | None = None, redraw_x=None):
    """Seeded train/validation loaders. ``repeats`` (per row): how many times a training row is
    used per epoch (:func:`_oversampling`); the validation rows are used once. ``redraw_x(rows)``:
    the first tensor for the repeated rows with fresh dequantisation noise, so that the copies of a
    row are not the same point (which a flow learns by heart)."""
    from torch.utils.data import DataLoader, TensorDataset

    n = len(tensors[0])
    perm = gen.permutation(n)
    n_val = max(1, int(round(val_fraction * n))) if n > 10 else 0
    val, tr = perm[:n_val], perm[n_val:]
    if repeats is not None:
        tr = np.repeat(tr, repeats[tr])
    tg = torch.Generator().manual_seed(int(gen.integers(2**31)))
    train_tensors = [t[tr] for t in tensors]
    if repeats is not None and redraw_x is not None:
        train_tensors[0] = redraw_x(tr)
    train = DataLoader(TensorDataset(*train_tensors), batch_size=batch_size, shuffle=True, generator=tg,
                       drop_last=len(tr) > batch_size)
    valid = DataLoader(TensorDataset(*(t[val] for t in tensors)), batch_size=4 * batch_size) if n_val else None
    return train, valid


def _oversampling(obj: str, table: pd.DataFrame, factors: Mapping[str, int]) -> np.ndarray | None:
    """Per row, how often it is trained on: the product of ``factors[column]`` over the boolean
    condition columns that are true for it (``flashsim.<obj>.oversample``). Reweighting in
    condition space leaves the learnt p(x | c) unchanged and gives rare conditions (e.g. muons
    from hadron decays, 5 % of the rows but the whole isolation tail) more of the flow's capacity."""
    if not factors:
        return None
    reps = np.ones(len(table), dtype=np.int64)
    for column, factor in factors.items():
        if column not in pp.CONDITION_COLUMNS[obj]:
            raise ConfigError(f"flashsim.{obj}.oversample: '{column}' is not a condition column of {obj} "
                              f"(one of {list(pp.CONDITION_COLUMNS[obj])})")
        values = table[column].to_numpy()
        if values.dtype != bool:
            raise ConfigError(f"flashsim.{obj}.oversample: '{column}' is not a boolean column (dtype {values.dtype})")
        reps[values] *= int(factor)
    return reps


def _column_range(x: np.ndarray) -> list[list[float]] | None:
    """Per model column [min, max] of the training values: generated values are clipped to it (a
    flow is the identity outside its splines, so a rare draw far out decodes to e.g. an isolation
    of 2000)."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return None
    return [[float(lo), float(hi)] for lo, hi in zip(x.min(0), x.max(0), strict=True)]


def _categorical(obj: str, names) -> dict[int, int]:
    """``{target index: number of classes}`` of ``flashsim.<obj>.categorical``."""
    allowed = pp.INTEGER_TARGETS[obj]
    out = {}
    for name in names:
        if name not in allowed:
            raise ConfigError(f"flashsim.{obj}.categorical: '{name}' is not an integer target of {obj} "
                              f"(one of {sorted(allowed)})")
        out[pp.TARGETS[obj].index(name)] = allowed[name]
    return out


def train_object(
    obj: str,
    table_path: str,
    fakes_path: str,
    events_path: str,
    out_model: str,
    fcfg: Mapping,
    seed: int,
    acceptance: Mapping,
    detector: Mapping,
    tracked=None,
    progress: bool = False,
    work_dir: str | None = None,
) -> dict[str, Any]:
    """Train efficiency net + flow + fake model of ``obj`` and write ``out_model``; return metrics.

    ``table_path``, ``fakes_path``, ``events_path``: the three tables of
    :func:`pipeline.flashsim.tables.training_table`; ``fcfg``: the ``flashsim`` config block;
    ``acceptance``: ``training_tables.<obj>`` and ``detector``: the ``detector`` block (both
    stored in the model for generation); ``tracked``: an MLflow run for the per-epoch losses.
    """
    import lightning.pytorch as pl

    fcfg = dict(fcfg)
    ocfg = fcfg[obj]
    holdout = float(fcfg["holdout_fraction"])
    seed = int(seed)
    gen = rng(seed, "train_flow", obj)
    pl.seed_everything(int_seed(seed, "train_flow", obj), workers=True, verbose=False)
    torch.set_num_threads(fcfg["threads"])
    t0 = time.perf_counter()

    # ---- matched objects and efficiency ---------------------------------------------------
    cols = list(dict.fromkeys([*pp.CONDITION_COLUMNS[obj], "is_reconstructed", "event",
                               *(c for c in _target_columns(obj))]))
    table = io.read_parquet(table_path, cols, what=f"train_flow {obj}")
    keep = ~is_holdout(table["event"].to_numpy(), holdout)
    table = table[keep].reset_index(drop=True)
    if ocfg.get("max_rows") and len(table) > ocfg["max_rows"]:
        table = table.iloc[np.sort(gen.choice(len(table), int(ocfg["max_rows"]), replace=False))].reset_index(drop=True)
    if len(table) == 0:
        raise EmptySelectionError(f"train_flow {obj}: no training rows outside the held-out split")
    reco = table["is_reconstructed"].to_numpy().astype(bool)
    c = pp.encode_conditions(obj, table)
    repeats = _oversampling(obj, table, ocfg.get("oversample") or {})
    x = np.zeros((len(table), len(pp.TARGETS[obj])), dtype=np.float32)
    x[reco] = pp.encode_targets(obj, table[reco], gen)
    if not np.isfinite(x).all() or not np.isfinite(c).all():
        bad = ~np.isfinite(x).all(1) | ~np.isfinite(c).all(1)
        log.warning("train_flow %s: dropping %d rows with non-finite encoded values", obj, int(bad.sum()))
        x, c, reco = x[~bad], c[~bad], reco[~bad]
        repeats = None if repeats is None else repeats[~bad]
        table = table[~bad].reset_index(drop=True)

    def redraw_x(rows: np.ndarray) -> torch.Tensor:
        xr = np.zeros((len(rows), x.shape[1]), dtype=np.float32)
        sel = reco[rows]
        xr[sel] = pp.encode_targets(obj, table.iloc[rows[sel]], gen)
        return torch.from_numpy(np.nan_to_num(xr))

    module = ObjectModule(len(pp.TARGETS[obj]), len(pp.CONDITIONS[obj]), flow=dict(ocfg["flow"]),
                          efficiency_hidden=list(ocfg["efficiency_hidden"]), lr=float(ocfg["lr"]),
                          categorical=_categorical(obj, ocfg.get("categorical") or []),
                          categorical_hidden=list(ocfg.get("categorical_hidden") or [64, 64]))
    with torch.no_grad():  # start the efficiency net at the mean efficiency
        frac = float(np.clip(reco.mean(), 1e-4, 1 - 1e-4))
        module.efficiency.net[-1].bias.fill_(float(np.log(frac / (1 - frac))))
    module.fit_standardisation(x[reco], c)
    tensors = (torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(reco))
    train_dl, val_dl = _loaders(tensors, int(ocfg["batch_size"]), float(fcfg["val_fraction"]), gen, repeats,
                                redraw_x)
    trainer = _trainer(ocfg["epochs"], tracked, progress, work_dir)
    trainer.fit(module, train_dl, val_dl)
    metrics = {f"{k}": float(v) for k, v in trainer.callback_metrics.items()}
    t_main = time.perf_counter() - t0

    # ---- fakes ----------------------------------------------------------------------------
    fakes = io.read_parquet(fakes_path, [*pp.FAKE_CONDITION_COLUMNS, "event", *_fake_target_columns(obj)],
                            what=f"train_flow {obj} fakes")
    fakes = fakes[~is_holdout(fakes["event"].to_numpy(), holdout)].reset_index(drop=True)
    events = io.read_parquet(events_path, ["event", "n_genjets", "n_fakes"], what=f"train_flow {obj} events")
    events = events[~is_holdout(events["event"].to_numpy(), holdout)]
    n_fakes = events["n_fakes"].to_numpy().astype(np.int64)
    multiplicity = FakeMultiplicity.fit(events["n_genjets"].to_numpy().astype(np.int64), n_fakes)
    fake_module, fake_pool, fake_range = None, None, None
    min_fakes = int(fcfg["fakes"]["min_rows"])
    if len(fakes) >= min_fakes:
        if fcfg["fakes"].get("max_rows") and len(fakes) > fcfg["fakes"]["max_rows"]:
            fakes = fakes.iloc[np.sort(gen.choice(len(fakes), int(fcfg["fakes"]["max_rows"]), replace=False))]
        fx = pp.encode_fake_targets(obj, fakes, gen)
        fc = pp.encode_fake_conditions(fakes)
        ok = np.isfinite(fx).all(1) & np.isfinite(fc).all(1)
        fx, fc = fx[ok], fc[ok]
        fake_range = _column_range(fx)
        fake_module = FakeModule(fx.shape[1], fc.shape[1], flow=dict(fcfg["fakes"]["flow"]), lr=float(fcfg["fakes"]["lr"]))
        fake_module.flow.x_std.fit(fx)
        fake_module.flow.c_std.fit(fc)
        ftrain, fval = _loaders((torch.from_numpy(fx), torch.from_numpy(fc)), int(fcfg["fakes"]["batch_size"]),
                                float(fcfg["val_fraction"]), gen)
        ftrainer = _trainer(fcfg["fakes"]["epochs"], tracked, progress, work_dir)
        ftrainer.fit(fake_module, ftrain, fval)
        metrics.update({k: float(v) for k, v in ftrainer.callback_metrics.items()})
    else:
        log.warning("train_flow %s: only %d fake rows (< flashsim.fakes.min_rows = %d): fakes are drawn from "
                    "them with replacement instead of a flow", obj, len(fakes), min_fakes)
        if len(fakes):
            fake_pool = pp.encode_fake_targets(obj, fakes, gen)
            fake_pool = fake_pool[np.isfinite(fake_pool).all(1)]

    meta = {
        "targets": list(pp.TARGETS[obj]),
        "conditions": list(pp.CONDITIONS[obj]),
        "fake_targets": list(pp.FAKE_TARGETS[obj]),
        "fake_conditions": list(pp.FAKE_CONDITIONS),
        "acceptance": dict(acceptance),
        "btag_abs_eta_max": float(detector["btag"]["abs_eta_max"]),
        "reco_pt_min_gev": float(detector[obj]["pt_min_gev"]),
        "holdout_fraction": holdout,
        "seed": seed,
        "target_range": _column_range(x[reco]),
        "fake_target_range": fake_range,
    }
    model = FlashSimModel(obj, module, fake_module, multiplicity, meta, fake_pool)
    model.save(out_model)

    eff_pred = model.efficiency(c)
    metrics.update({
        "n_train_rows": float(len(x)),
        "n_reconstructed_rows": float(reco.sum()),
        "n_fake_rows": float(len(fakes)),
        "efficiency_truth": float(reco.mean()),
        "efficiency_model": float(eff_pred.mean()),
        "fakes_per_event_truth": float(n_fakes.mean()),
        "train_time_s": time.perf_counter() - t0,
        "train_time_main_s": t_main,
    })
    log.info("train_flow %s: %s", obj, metrics)
    return metrics


def _target_columns(obj: str) -> list[str]:
    base = ["gen_pt", "gen_eta", "gen_phi", "reco_pt", "reco_eta", "reco_phi"]
    if obj == "jets":
        return [*base, "gen_mass", "reco_mass", "reco_btagDeepFlavB", "reco_qgl", "reco_nConstituents", "reco_jetId"]
    return [*base, "gen_charge", "reco_charge", "reco_pfRelIso04_all", "reco_mediumId", "reco_tightId", "reco_dxy",
            "reco_dz", "reco_ip3d"]


def _fake_target_columns(obj: str) -> list[str]:
    return [c for c in _target_columns(obj) if c.startswith("reco_")]
