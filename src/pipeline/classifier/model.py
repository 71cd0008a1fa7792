"""The classifier network: a scorer that owns its input handling, and its Lightning module.

:class:`Scorer` takes the RAW event columns of :data:`pipeline.features.EVENT_COLUMNS` (float32,
shape (N, F), NaN for absent objects such as a missing second jet) and returns the score in
[0, 1], shape (N,). Non-finite inputs are replaced by the training mean of their column, then
every column is standardised with the training mean and standard deviation; both live in buffers,
so a TorchScript export (:mod:`.export`) carries them and needs no training code.

:class:`DiscoModule` trains it with ``loss = weighted BCE + lambda * dCor^2(m_mumu, score)``, the
DisCo term computed on the background events of each batch with their physical weights
(:func:`pipeline.classifier.disco.distance_corr_sq`, weights normalised to mean 1 in the batch).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from pipeline.classifier.disco import distance_corr_sq


class Scorer(nn.Module):
    """MLP on standardised raw event columns, NaN handling and scaling inside (see module doc)."""

    def __init__(self, n_features: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def fit_scaling(self, x: np.ndarray) -> None:
        """Mean and standard deviation of every column over its finite values (training split)."""
        x = np.asarray(x, dtype=np.float64)
        finite = np.isfinite(x)
        n = np.maximum(finite.sum(0), 1)
        mean = np.where(finite, x, 0.0).sum(0) / n
        var = np.where(finite, (x - mean) ** 2, 0.0).sum(0) / n
        std = np.sqrt(var)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid output, shape (N,)."""
        x = torch.where(torch.isfinite(x), x, self.mean.expand_as(x))
        return self.net((x - self.mean) / self.scale).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score in [0, 1] of each row of raw event columns, shape (N,)."""
        return torch.sigmoid(self.logit(x))


class DiscoModule(pl.LightningModule):
    """Weighted BCE + lambda * dCor^2(m_mumu, score) on the background of each batch.

    Batches are ``(x, label, balanced_weight, physical_weight, m_mumu)``.
    """

    def __init__(self, n_features: int, hidden: list[int], lam: float, lr: float, weight_decay: float,
                 dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.scorer = Scorer(n_features, list(hidden), dropout)
        self.lam = float(lam)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        x, label, w_bal, w_phys, m = batch
        logit = self.scorer.logit(x)
        bce = nn.functional.binary_cross_entropy_with_logits(logit, label.to(logit.dtype), reduction="none")
        bce = (bce * w_bal).sum() / w_bal.sum()
        bkg = label == 0
        if int(bkg.sum()) >= 2:
            dcor2 = distance_corr_sq(m[bkg], torch.sigmoid(logit[bkg]), w_phys[bkg])
        else:
            dcor2 = logit.new_zeros(())
        return {"loss": bce + self.lam * dcor2, "bce": bce, "dcor2": dcor2}

    def training_step(self, batch, batch_idx):
        out = self.losses(batch)
        n = len(batch[0])
        for k, v in out.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=n)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self.losses(batch)
        n = len(batch[0])
        for k, v in out.items():
            self.log(f"val_{k}", v, on_step=False, on_epoch=True, batch_size=n, prog_bar=k == "loss")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
