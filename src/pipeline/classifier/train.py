"""Training of one DisCo classifier (rule ``train_classifier``, one job per lambda).

Inputs: the skims of every signal/background sample and their roles (:func:`.data.load_population`). The network
is trained on the train split, early-stopped on the validation loss (the weights of the best
validation epoch are kept) and written as a TorchScript :class:`.model.Scorer`, so evaluation and
the analysis load it with ``torch.jit.load`` alone.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pipeline import io
from pipeline.classifier.data import Dataset, feature_names, load_population
from pipeline.classifier.disco import lambda_tag
from pipeline.classifier.model import DiscoModule
from pipeline.seeds import int_seed

log = logging.getLogger(__name__)


def _tensors(d: Dataset, balanced: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(d.x), torch.from_numpy(d.label.astype(np.int64)), torch.from_numpy(balanced),
            torch.from_numpy(d.weight.astype(np.float32)), torch.from_numpy(d.m_mumu.astype(np.float32)))


def _callbacks(patience: int):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    class _KeepBest(pl.Callback):
        """Keep the scorer's weights of the epoch with the lowest validation loss (in memory)."""

        def __init__(self):
            self.best, self.state, self.epoch = float("inf"), None, -1

        def on_validation_epoch_end(self, trainer, module):
            v = trainer.callback_metrics.get("val_loss")
            if v is not None and float(v) < self.best:
                self.best, self.epoch = float(v), trainer.current_epoch
                self.state = copy.deepcopy(module.scorer.state_dict())

    class _EpochLog(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            e = trainer.current_epoch
            if e % 10 == 0 or e + 1 == trainer.max_epochs:
                m = {k: round(float(v), 5) for k, v in sorted(trainer.callback_metrics.items())}
                log.info("epoch %d: %s", e + 1, m)

    keep = _KeepBest()
    return keep, [EarlyStopping(monitor="val_loss", patience=int(patience), mode="min"), keep, _EpochLog()]


def train_classifier(skims: Mapping[str, str], roles: Mapping[str, str], lam: float, out_scorer: str,
                     ccfg: Mapping, seed: int, tracked=None, progress: bool = False,
                     work_dir: str | None = None) -> dict[str, Any]:
    """Train the classifier of DisCo weight ``lam`` on the skims (``sample -> path``, ``roles``:
    ``sample -> signal/background``) with the ``classifier`` config block ``ccfg``; write the
    TorchScript scorer; return a summary. ``tracked``: the MLflow run the Lightning metrics go to."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.tracking import lightning_logger

    names = feature_names(ccfg)
    tag = lambda_tag(lam)
    seed = int(seed)
    torch.set_num_threads(int(ccfg["threads"]))
    pl.seed_everything(int_seed(seed, "train_classifier", tag), workers=True, verbose=False)
    t0 = time.perf_counter()
    data = load_population(skims, roles, ccfg)
    train, val = data["train"], data["val"]
    module = DiscoModule(len(names), list(ccfg["hidden"]), lam, float(ccfg["lr"]), float(ccfg["weight_decay"]),
                         float(ccfg["dropout"]))
    module.scorer.fit_scaling(train.x)
    bs = int(ccfg["batch_size"])
    gen = torch.Generator().manual_seed(int_seed(seed, "train_classifier", tag, "shuffle"))
    # drop a last batch too small for a stable dCor (it would be a noisy gradient step)
    train_dl = DataLoader(TensorDataset(*_tensors(train, train.class_balanced_weight())), batch_size=bs,
                          shuffle=True, generator=gen, drop_last=len(train) > bs and len(train) % bs < bs // 4)
    val_dl = DataLoader(TensorDataset(*_tensors(val, val.class_balanced_weight())), batch_size=bs)
    keep, callbacks = _callbacks(int(ccfg["patience"]))
    trainer = pl.Trainer(
        max_epochs=int(ccfg["max_epochs"]), accelerator="cpu", devices=1,
        logger=lightning_logger(tracked) if tracked is not None else False,
        enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, deterministic=True, default_root_dir=work_dir, log_every_n_steps=1,
        callbacks=callbacks,
    )
    trainer.fit(module, train_dl, val_dl)
    scorer = module.scorer.eval()
    if keep.state is not None:
        scorer.load_state_dict(keep.state)
    with io.atomic_output(out_scorer) as tmp:
        torch.jit.save(torch.jit.script(scorer), str(tmp))
    summary = {
        "lambda": float(lam),
        "features": names,
        "epochs_run": int(trainer.current_epoch),
        "best_epoch": int(keep.epoch) + 1,
        "best_val_loss": keep.best,
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "n_train": {"signal": int((train.label == 1).sum()), "background": int((train.label == 0).sum())},
        "n_val": {"signal": int((val.label == 1).sum()), "background": int((val.label == 0).sum())},
        "train_time_s": time.perf_counter() - t0,
    }
    log.info("train_classifier lambda=%s: best epoch %d of %d, val loss %.5f, %.1f s", tag, summary["best_epoch"],
             summary["epochs_run"], keep.best, summary["train_time_s"])
    return summary

