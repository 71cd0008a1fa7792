"""The FlashSim networks and their one-file checkpoint.

:class:`~pipeline.flows.ConditionalFlow`
    p(reco | gen, context): the zuko neural spline coupling flow of :mod:`pipeline.flows`.

:class:`EfficiencyNet`
    An MLP giving P(reconstructed | gen, context) on the same standardised conditions.

:class:`CategoricalNet`
    The integer targets named in ``flashsim.<obj>.categorical`` (e.g. the muon ID ordinal) are not
    in the flow: an MLP gives P(class | gen, context, continuous reco variables) for each (softmax,
    cross-entropy). A spline flow on a dequantised integer (``k + u``) smears its steps: the muon
    ID flags came out 0.5 % too efficient that way; a classifier is calibrated by its loss.

:class:`ObjectModule` (Lightning)
    Trains both at once: loss = NLL of the flow on the reconstructed rows + BCE of the efficiency
    net on all rows (the two share no weights; one data pass trains both).

:class:`FakeModule` (Lightning)
    A flow for fake objects (no gen partner) conditioned on the event context.

:class:`FakeMultiplicity`
    P(number of fakes | number of GenJets): a smoothed histogram, which is what the reference
    simulation's pileup jets need (their number does not depend on anything else of the event).

:class:`FlashSimModel`
    Everything for one object in one file (:meth:`save`, :meth:`load`); :meth:`sample` and
    :meth:`sample_fakes` take a ``torch.Generator`` so that the same seed gives the same objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover
    import pytorch_lightning as pl

from pipeline.errors import InputFileError
from pipeline.flows import ConditionalFlow

CHECKPOINT_FORMAT = "pipeline.flashsim/1"


def _mlp(inputs: int, hidden: Sequence[int], outputs: int) -> nn.Sequential:
    """Linear + SiLU per hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    n = inputs
    for h in hidden:
        layers += [nn.Linear(n, h), nn.SiLU()]
        n = h
    layers.append(nn.Linear(n, outputs))
    return nn.Sequential(*layers)


class EfficiencyNet(nn.Module):
    """logit P(reconstructed | c)."""

    def __init__(self, context: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = _mlp(context, hidden, 1)

    def forward(self, c_std: torch.Tensor) -> torch.Tensor:
        return self.net(c_std).squeeze(-1)


class CategoricalNet(nn.Module):
    """Logits of each categorical target (concatenated heads) given standardised (c, x_continuous)."""

    def __init__(self, inputs: int, classes: Sequence[int], hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.classes = [int(k) for k in classes]
        self.net = _mlp(inputs, hidden, sum(self.classes))

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(self.net(z), self.classes, dim=-1))


class ObjectModule(pl.LightningModule):
    """Flow (reconstructed rows) + efficiency net (all rows) + categorical net, trained together.

    Batches are ``(x, c, reconstructed)``; x of rows that are not reconstructed is ignored.
    ``categorical``: ``{feature index: number of classes}`` of dequantised integer features
    (``class + u``) modelled by :class:`CategoricalNet` instead of the flow (which then has the
    other features only). :meth:`sample` returns all features in the order of x, a categorical
    one as ``class + 0.5``.
    """

    def __init__(self, features: int, context: int, flow: Mapping[str, Any], efficiency_hidden: Sequence[int],
                 lr: float = 1e-3, weight_decay: float = 0.0, categorical: Mapping[int, int] | None = None,
                 categorical_hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.save_hyperparameters()
        cat = {int(i): int(k) for i, k in (categorical or {}).items()}
        self.cat_idx = sorted(cat)
        self.cont_idx = [i for i in range(features) if i not in cat]
        self.flow = ConditionalFlow(len(self.cont_idx), context, **flow)
        self.efficiency = EfficiencyNet(context, efficiency_hidden)
        self.categorical = (CategoricalNet(context + len(self.cont_idx), [cat[i] for i in self.cat_idx],
                                           categorical_hidden) if cat else None)

    def fit_standardisation(self, x_reco: np.ndarray, c: np.ndarray) -> None:
        """Feature statistics from the reconstructed rows, condition statistics from all rows."""
        self.flow.x_std.fit(np.asarray(x_reco)[:, self.cont_idx])
        self.flow.c_std.fit(c)

    def _cat_logits(self, x_cont: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
        return self.categorical(torch.cat([self.flow.c_std(c), self.flow.x_std(x_cont)], dim=-1))

    def nll(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Per-row -log p(x | c): flow on the continuous features + cross-entropy of the categorical ones."""
        x_cont = x[:, self.cont_idx]
        out = -self.flow.log_prob(x_cont, c)
        if self.categorical is not None:
            for i, logits in zip(self.cat_idx, self._cat_logits(x_cont, c), strict=True):
                target = torch.floor(x[:, i]).long().clamp(0, logits.shape[-1] - 1)
                out = out + nn.functional.cross_entropy(logits, target, reduction="none")
        return out

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x_cont = self.flow.sample(c, generator)
        x = torch.empty(len(c), len(self.cont_idx) + len(self.cat_idx), dtype=x_cont.dtype)
        x[:, self.cont_idx] = x_cont
        if self.categorical is not None and len(c):
            for i, logits in zip(self.cat_idx, self._cat_logits(x_cont, c), strict=True):
                cls = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
                x[:, i] = cls.to(x.dtype) + 0.5
        return x

    def _losses(self, batch):
        x, c, reco = batch
        logits = self.efficiency(self.flow.c_std(c))
        bce = nn.functional.binary_cross_entropy_with_logits(logits, reco.float())
        nll = self.nll(x[reco], c[reco]).mean() if reco.any() else logits.sum() * 0
        return nll, bce

    def training_step(self, batch, batch_idx):
        nll, bce = self._losses(batch)
        self.log_dict({"train_nll": nll, "train_bce": bce}, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return nll + bce

    def validation_step(self, batch, batch_idx):
        nll, bce = self._losses(batch)
        self.log_dict({"val_nll": nll, "val_bce": bce, "val_loss": nll + bce}, on_step=False, on_epoch=True,
                      batch_size=len(batch[0]))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return [opt], [sched]


class FakeModule(pl.LightningModule):
    """Flow of fake-object properties given the event context. Batches are ``(x, c)``."""

    def __init__(self, features: int, context: int, flow: Mapping[str, Any], lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.flow = ConditionalFlow(features, context, **flow)

    def training_step(self, batch, batch_idx):
        nll = -self.flow.log_prob(*batch).mean()
        self.log("fake_train_nll", nll, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return nll

    def validation_step(self, batch, batch_idx):
        self.log("fake_val_nll", -self.flow.log_prob(*batch).mean(), on_step=False, on_epoch=True,
                 batch_size=len(batch[0]))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return [opt], [sched]


class FakeMultiplicity:
    """P(n_fakes | n_genjets), a histogram per n_genjets (clipped at ``max_genjets``), each row
    smoothed towards the inclusive distribution with ``prior`` pseudo-events."""

    def __init__(self, probs: np.ndarray):
        self.probs = np.asarray(probs, dtype=np.float64)

    @classmethod
    def fit(cls, n_genjets: np.ndarray, n_fakes: np.ndarray, max_genjets: int = 20, prior: float = 5.0):
        g = np.clip(np.asarray(n_genjets, dtype=np.int64), 0, max_genjets)
        f = np.asarray(n_fakes, dtype=np.int64)
        counts = np.zeros((max_genjets + 1, int(f.max(initial=0)) + 1))
        np.add.at(counts, (g, f), 1.0)
        incl = counts.sum(0) / max(counts.sum(), 1.0)
        probs = (counts + prior * incl) / (counts.sum(1, keepdims=True) + prior)
        return cls(probs)

    def sample(self, n_genjets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = np.clip(np.asarray(n_genjets, dtype=np.int64), 0, len(self.probs) - 1)
        cdf = np.cumsum(self.probs, axis=1)
        u = rng.uniform(size=len(g))
        return (u[:, None] > cdf[g]).sum(1).clip(0, self.probs.shape[1] - 1).astype(np.int64)

    def mean(self) -> np.ndarray:
        return self.probs @ np.arange(self.probs.shape[1])


def _clip(x: np.ndarray, ranges) -> np.ndarray:
    """Generated model columns clipped to their training range (``meta['target_range']``)."""
    if ranges is None or not len(x):
        return x
    r = np.asarray(ranges, dtype=np.float32)
    return np.clip(x, r[:, 0], r[:, 1])


def _check_encoding(path: Path, state: Mapping) -> None:
    """A checkpoint is only usable with the encoding it was trained with (model columns and
    conditions of :mod:`pipeline.flashsim.preprocessing`)."""
    from pipeline.flashsim import preprocessing as pp

    obj, meta = state.get("object"), state.get("meta") or {}
    if obj not in pp.TARGETS:
        raise InputFileError(f"{path}: FlashSim model of unknown object {obj!r} (expected one of {sorted(pp.TARGETS)})")
    for key, now in (("targets", pp.TARGETS[obj]), ("conditions", pp.CONDITIONS[obj])):
        if list(meta.get(key, [])) != list(now):
            raise InputFileError(f"{path}: FlashSim {obj} model was trained with {key} {list(meta.get(key, []))}, "
                                 f"this version encodes {list(now)}; retrain it (snakemake results/models/flashsim/{obj}.pt)")


class FlashSimModel:
    """Everything FlashSim needs for one object type: efficiency, flow, fakes, their settings."""

    def __init__(self, obj: str, module: ObjectModule, fake: FakeModule | None, multiplicity: FakeMultiplicity,
                 meta: Mapping[str, Any], fake_pool: np.ndarray | None = None):
        """``fake_pool``: encoded fake objects drawn with replacement when there were too few fakes
        to train ``fake`` (an empirical model instead of a flow)."""
        self.obj = obj
        self.fake_pool = None if fake_pool is None else np.asarray(fake_pool, dtype=np.float32)
        self.module = module.eval()
        self.fake = fake.eval() if fake is not None else None
        self.multiplicity = multiplicity
        self.meta = dict(meta)

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """One file (``torch.save`` of plain tensors and dicts), written atomically."""
        from pipeline.io import atomic_output

        state = {
            "format": CHECKPOINT_FORMAT,
            "object": self.obj,
            "module": {"hparams": dict(self.module.hparams), "state_dict": self.module.state_dict()},
            "fake": None if self.fake is None else {"hparams": dict(self.fake.hparams),
                                                    "state_dict": self.fake.state_dict()},
            "multiplicity": torch.as_tensor(self.multiplicity.probs),
            "fake_pool": None if self.fake_pool is None else torch.as_tensor(self.fake_pool),
            "meta": self.meta,
        }
        with atomic_output(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str = "cpu") -> FlashSimModel:
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"{path}: FlashSim model does not exist")
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise InputFileError(f"{path}: not a FlashSim model ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise InputFileError(f"{path}: not a FlashSim model (expected format {CHECKPOINT_FORMAT})")
        module = ObjectModule(**state["module"]["hparams"])
        module.load_state_dict(state["module"]["state_dict"])
        fake = None
        if state["fake"] is not None:
            fake = FakeModule(**state["fake"]["hparams"])
            fake.load_state_dict(state["fake"]["state_dict"])
        _check_encoding(path, state)
        pool = state.get("fake_pool")
        return cls(state["object"], module, fake, FakeMultiplicity(state["multiplicity"].numpy()), state["meta"],
                   None if pool is None else pool.numpy())

    # ---- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def efficiency(self, c: np.ndarray) -> np.ndarray:
        ct = torch.as_tensor(c, dtype=torch.float32)
        return torch.sigmoid(self.module.efficiency(self.module.flow.c_std(ct))).numpy()

    @torch.no_grad()
    def sample(self, c: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if len(c) == 0:
            return np.zeros((0, self.module.hparams.features), dtype=np.float32)
        return _clip(self.module.sample(torch.as_tensor(c, dtype=torch.float32), generator).numpy(),
                     self.meta.get("target_range"))

    @property
    def has_fakes(self) -> bool:
        """Whether :meth:`sample_fakes` can draw fakes (a flow, or a non-empty pool)."""
        return self.fake is not None or (self.fake_pool is not None and len(self.fake_pool) > 0)

    @torch.no_grad()
    def sample_fakes(self, c: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if self.fake is None:
            pool = self.fake_pool
            if pool is None or len(pool) == 0 or len(c) == 0:
                return np.zeros((0, len(self.meta["fake_targets"])), dtype=np.float32)
            pick = torch.randint(len(pool), (len(c),), generator=generator).numpy()
            return pool[pick]
        if len(c) == 0:
            return np.zeros((0, self.fake.hparams.features), dtype=np.float32)
        return _clip(self.fake.flow.sample(torch.as_tensor(c, dtype=torch.float32), generator).numpy(),
                     self.meta.get("fake_target_range"))
