"""The trigger network: a small ReLU MLP trained with Lightning on the L1-like inputs.

Quantisation is *post-training* (documented in README "Trigger firmware"): the float network is
trained here; :mod:`pipeline.trigger.firmware` quantises weights, biases and activations to
``ap_fixed`` types and scans their width.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import io
from pipeline.errors import ConfigError, EmptySelectionError, InputFileError
from pipeline.seeds import int_seed, rng
from pipeline.trigger import inputs as tin

log = logging.getLogger(__name__)


def model_cfg(tcfg: Mapping, name: str) -> dict:
    models = tcfg["models"]
    if name not in models:
        raise ConfigError(f"trigger.models has no model '{name}' (configured: {sorted(models)})")
    return dict(models[name])


def build_network(n_inputs: int, hidden: list[int]) -> nn.Sequential:
    """dense1, relu1, ..., output: the layer names hls4ml and the Verilog generator see."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = n_inputs
    for i, h in enumerate(hidden):
        layers[f"dense{i + 1}"] = nn.Linear(prev, int(h))
        layers[f"relu{i + 1}"] = nn.ReLU()
        prev = int(h)
    layers["output"] = nn.Linear(prev, 1)
    return nn.Sequential(layers)


def dense_layers(net: nn.Sequential) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in net.named_children() if isinstance(m, nn.Linear)]


def _lightning_module():
    import lightning.pytorch as pl

    class TriggerNet(pl.LightningModule):
        """Weighted binary cross-entropy on the logit of :func:`build_network`."""

        def __init__(self, n_inputs: int, hidden: list[int], lr: float, weight_decay: float):
            super().__init__()
            self.save_hyperparameters()
            self.net = build_network(n_inputs, hidden)

        def forward(self, x):
            return self.net(x).squeeze(-1)

        def _loss(self, batch):
            x, y, w = batch
            loss = nn.functional.binary_cross_entropy_with_logits(self(x), y, reduction="none")
            return (loss * w).sum() / w.sum()

        def training_step(self, batch, _i):
            loss = self._loss(batch)
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, _i):
            self.log("val_loss", self._loss(batch), on_step=False, on_epoch=True, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    return TriggerNet


def class_balanced_weights(weight: np.ndarray, is_signal: np.ndarray) -> np.ndarray:
    """Per-event training weights: cross-section weights, each class summing to half the events."""
    w = np.abs(np.asarray(weight, dtype=np.float64))
    out = np.zeros_like(w)
    for cls in (True, False):
        m = is_signal == cls
        if not m.any() or w[m].sum() <= 0:
            raise EmptySelectionError(f"trigger training: no {'signal' if cls else 'background'} events with weight > 0")
        out[m] = w[m] / w[m].sum() * (len(w) / 2)
    return out


def train_model(name: str, inputs_path: str, out_model: str, tcfg: Mapping, seed: int, tracked=None,
                progress: bool = False, work_dir: str | None = None) -> dict:
    """Train model ``name`` of ``trigger.models`` on the training split; write the checkpoint.

    ``tcfg`` is the config block ``trigger``; ``seed`` the master seed of the config."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    mcfg = model_cfg(tcfg, name)
    seed = int(seed)
    torch.set_num_threads(int(tcfg["threads"]))
    pl.seed_everything(int_seed(seed, "train_trigger", name), workers=True, verbose=False)
    torch.use_deterministic_algorithms(True)
    gen = rng(seed, "train_trigger", name)

    table = tin.load_inputs(inputs_path, tcfg)
    train = table[~table["is_test"].to_numpy()]
    if len(train) < 10:
        raise EmptySelectionError(f"{inputs_path}: {len(train)} training events (outside the test split); need >= 10")
    x = tin.network_inputs(train, tcfg).astype(np.float32)
    y = train["is_signal"].to_numpy().astype(np.float32)
    w = class_balanced_weights(train["weight"].to_numpy(), y.astype(bool)).astype(np.float32)
    perm = gen.permutation(len(x))
    n_val = max(1, int(round(float(mcfg["val_fraction"]) * len(x))))
    val, tr = perm[:n_val], perm[n_val:]
    tensors = [torch.from_numpy(a) for a in (x, y, w)]
    tg = torch.Generator().manual_seed(int(gen.integers(2**31)))
    bs = int(mcfg["batch_size"])
    train_loader = DataLoader(TensorDataset(*(t[tr] for t in tensors)), batch_size=bs, shuffle=True, generator=tg,
                              drop_last=len(tr) > bs)
    val_loader = DataLoader(TensorDataset(*(t[val] for t in tensors)), batch_size=4 * bs)

    hidden = [int(h) for h in mcfg["hidden"]]
    module = _lightning_module()(x.shape[1], hidden, float(mcfg["lr"]), float(mcfg["weight_decay"]))
    from pipeline.tracking import lightning_logger

    trainer = pl.Trainer(max_epochs=int(mcfg["epochs"]), accelerator="cpu", devices=1,
                         logger=lightning_logger(tracked) if tracked is not None else False,
                         enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                         num_sanity_val_steps=0, deterministic=True, default_root_dir=work_dir, log_every_n_steps=20)
    t0 = time.perf_counter()
    trainer.fit(module, train_loader, val_loader)
    train_s = time.perf_counter() - t0
    net = module.net.eval()
    checkpoint = {
        "name": name,
        "hidden": hidden,
        "features": tin.feature_names(tcfg),
        "input_scales": tin.input_scales(tcfg, tin.feature_names(tcfg)).tolist(),
        "state_dict": net.state_dict(),
    }
    with io.atomic_output(out_model) as tmp:
        torch.save(checkpoint, tmp)

    test = table[table["is_test"].to_numpy()]
    metrics = {
        "n_train": int(len(tr)),
        "n_val": int(len(val)),
        "n_test": int(len(test)),
        "train_seconds": train_s,
        "final_train_loss": float(trainer.callback_metrics.get("train_loss", float("nan"))),
        "final_val_loss": float(trainer.callback_metrics.get("val_loss", float("nan"))),
    }
    if len(test):
        score = float_scores(net, tin.network_inputs(test, tcfg))
        metrics["auc_float_test"] = weighted_auc(score, test["is_signal"].to_numpy(), test["weight"].to_numpy())
    log.info("train_trigger %s: %s", name, metrics)
    return metrics


def load_model(path: str) -> tuple[nn.Sequential, dict]:
    """The network (eval mode) and the checkpoint dict of :func:`train_model`."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{path}: trigger model checkpoint does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        net = build_network(len(ckpt["features"]), ckpt["hidden"])
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, EOFError, OSError) as exc:
        raise InputFileError(f"{path}: not a trigger model checkpoint ({exc})") from None
    return net.eval(), ckpt


def float_scores(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(np.asarray(x, dtype=np.float32))).squeeze(-1).double().numpy()


def weighted_auc(score: np.ndarray, is_signal: np.ndarray, weight: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(is_signal, bool), score, sample_weight=np.abs(weight)))


def efficiency_at_background(score: np.ndarray, is_signal: np.ndarray, weight: np.ndarray,
                             target_bkg_eff: float) -> dict:
    """Threshold ``score >= t`` with the largest background efficiency <= target (weighted);
    returns the threshold, the signal and background efficiencies there."""
    s = np.asarray(score, dtype=np.float64)
    sig = np.asarray(is_signal, bool)
    w = np.abs(np.asarray(weight, dtype=np.float64))
    thresholds = np.unique(s)[::-1]  # descending
    wb = w[~sig]
    sb = s[~sig]
    order = np.argsort(-sb, kind="stable")
    sorted_scores, cum = sb[order], np.cumsum(wb[order]) / wb.sum()
    # background efficiency of score >= t for each threshold
    idx = np.searchsorted(-sorted_scores, -thresholds, side="right") - 1
    eff_b = np.where(idx >= 0, cum[np.clip(idx, 0, None)], 0.0)
    ok = np.nonzero(eff_b <= target_bkg_eff + 1e-12)[0]
    t = thresholds[ok[-1]] if len(ok) else np.inf
    ws = w[sig]
    return {
        "threshold": float(t) if np.isfinite(t) else None,
        "signal_efficiency": float(ws[s[sig] >= t].sum() / ws.sum()),
        "background_efficiency": float(wb[sb >= t].sum() / wb.sum()),
    }
