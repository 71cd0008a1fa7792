"""Entry points of the calorimeter rules: reference showers, GAN training, generation.

Every shower file comes with its binning XML (:mod:`pipeline.calo.geometry`); a sample of
``calo.samples`` is either built in (the reference simulation writes both) or a CaloChallenge
file with its binning (``file`` and ``binning``), used unchanged. One GAN is trained on the
training split (all but the last ``test_fraction``) of every sample, conditioned on incident
energy and particle type; all samples must share one binning.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.calo.data import Showers, read_showers, split_indices, write_showers
from pipeline.calo.geometry import Geometry, check_consistent, particles_index
from pipeline.errors import ConfigError, InputFileError
from pipeline.io import atomic_output, write_json
from pipeline.seeds import int_seed, rng

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def reference_geometry(calo_cfg: Mapping, particle: str) -> Geometry:
    name = calo_cfg["geometry"]  # a key of calo.geometries (pipeline.config.validate_config)
    return Geometry.from_config(calo_cfg["geometries"][name], particle, key=f"calo.geometries.{name}")


def produce_reference(sample: str, calo_cfg: Mapping, seed: int, out_h5: str, out_xml: str) -> dict:
    """Simulate ``calo.samples[sample].n_showers`` showers; write the HDF5 file and its binning."""
    from pipeline.calo.showersim import reference_sample

    scfg = calo_cfg["samples"][sample]
    geometry = reference_geometry(calo_cfg, scfg["particle"])
    t0 = time.perf_counter()
    e, s = reference_sample(int(scfg["n_showers"]), scfg["particle"], geometry, calo_cfg, rng(seed, "calo_reference", sample))
    dt = time.perf_counter() - t0
    write_showers(out_h5, e, s, attrs={"particle": scfg["particle"], "generator": "pipeline reference (GFlash-like)"})
    geometry.to_xml(out_xml)
    log.info("%s: %d %s showers, %s, %.2f ms/shower", sample, len(e), scfg["particle"], geometry.describe(),
             dt / len(e) * 1e3)
    return {"n_showers": len(e), "reference_ms_per_shower": dt / len(e) * 1e3,
            "mean_e_ratio": float(np.mean(s.sum(1) / e))}


def load_sample(h5: str, xml: str, particle: str) -> Showers:
    return read_showers(h5, Geometry.from_xml(xml, particle))


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _stats(train: Mapping[str, Showers], pidx: Mapping[str, int], particles: Mapping[str, str],
           geometry: Geometry) -> dict:
    """Standardisation constants of the GAN from the training data."""
    import torch

    from pipeline.calo.features import TorchFeatures
    from pipeline.calo.gan import VOXEL_FLOOR

    inc = np.concatenate([s.incident_energies for s in train.values()]).astype(np.float64)
    sh = np.concatenate([s.showers for s in train.values()]).astype(np.float64)
    ratio = sh.sum(1) / inc
    log_ratio = np.log(np.clip(ratio, 1e-6, None))
    positive = sh[sh > 0]
    vox = np.log10(sh / inc[:, None] + VOXEL_FLOOR)
    feats = TorchFeatures(geometry)(torch.from_numpy(sh.astype(np.float32)), torch.from_numpy(inc.astype(np.float32))).numpy()
    return {
        "log_e_mean": float(np.log(inc).mean()), "log_e_std": float(np.log(inc).std() + 1e-6),
        "log_ratio_mean": float(log_ratio.mean()), "log_ratio_std": float(log_ratio.std() + 1e-6),
        # zero suppression of the data: the smallest non-zero voxel (0 if none)
        "threshold_mev": float(positive.min() * 0.999) if positive.size else 0.0,
        "vox_mean": vox.mean(0), "vox_std": vox.std(0) + 1e-3,
        "feat_mean": feats.mean(0), "feat_std": feats.std(0) + 1e-3,
        "n_particles": len(pidx),
    }


def _epoch_log_callback():
    import lightning as L

    class EpochLog(L.Callback):
        """One line per epoch in the rule's log: the epoch-averaged losses."""

        def on_train_epoch_end(self, trainer, pl_module):
            m = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
            log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs, m)

    return EpochLog()


def train_gan(samples: Mapping[str, tuple[str, str, str]], calo_cfg: Mapping, seed: int, out_model: str,
              ckpt_dir: str, tracked=None, threads: int = 1, max_epochs: int | None = None) -> dict:
    """Train the GAN on ``{sample: (h5, xml, particle)}``; write the generator to ``out_model``.

    ``tracked`` (a :class:`pipeline.tracking.TrackedRun`) receives per-epoch losses and final
    metrics. Checkpoints (every ``checkpoint_every_n_epochs`` and the last) go to ``ckpt_dir``.
    """
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pipeline.calo.gan import CaloGAN

    torch.set_num_threads(max(int(threads), 1))
    hp = dict(calo_cfg["gan"])
    epochs = int(max_epochs if max_epochs is not None else hp["epochs"])
    data = {name: load_sample(h5, xml, particle) for name, (h5, xml, particle) in samples.items()}
    geometry = check_consistent({n: s.geometry for n, s in data.items()})
    particles = {name: p for name, (_, _, p) in samples.items()}
    pidx = particles_index(particles.values())
    train = {}
    for name, s in data.items():
        tr, _ = split_indices(len(s), float(calo_cfg["test_fraction"]))
        train[name] = s.subset(tr)
    stats = _stats(train, pidx, particles, geometry)
    inc = np.concatenate([s.incident_energies for s in train.values()]).astype(np.float32)
    part = np.concatenate([np.full(len(s), pidx[particles[n]]) for n, s in train.items()]).astype(np.int64)
    sh = np.concatenate([s.showers for s in train.values()]).astype(np.float32)
    log.info("GAN training on %d showers (%s), %s", len(inc),
             ", ".join(f"{n}: {len(s)}" for n, s in train.items()), geometry.describe())

    L.seed_everything(int_seed(seed, "calo_gan"), workers=True, verbose=False)
    layer_sizes = [la.n_voxels for la in geometry.layers]
    model = CaloGAN(layer_sizes, stats, hp, geometry)
    if model.kind == "flow":
        model.generator.fit_standardisation(
            torch.from_numpy(sh), torch.from_numpy(inc), model.cond(torch.from_numpy(inc), torch.from_numpy(part)),
            generator=torch.Generator().manual_seed(int_seed(seed, "calo_gan", "standardisation")))
    ds = torch.utils.data.TensorDataset(torch.from_numpy(inc), torch.from_numpy(part), torch.from_numpy(sh))
    gen = torch.Generator().manual_seed(int_seed(seed, "calo_gan", "loader"))
    loader = torch.utils.data.DataLoader(ds, batch_size=int(hp["batch_size"]), shuffle=True, drop_last=len(ds) > hp["batch_size"],
                                         generator=gen, num_workers=0)
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="gan-{epoch:03d}", every_n_epochs=int(hp["checkpoint_every_n_epochs"]),
                           save_top_k=-1, save_last=True)
    logger = None
    if tracked is not None:
        from pipeline.tracking import lightning_logger

        logger = lightning_logger(tracked)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger if logger else False,
                        callbacks=[ckpt, _epoch_log_callback()], default_root_dir=ckpt_dir, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True, log_every_n_steps=10)
    t0 = time.perf_counter()
    trainer.fit(model, loader)
    train_s = time.perf_counter() - t0
    payload = {
        "generator": model.kind,
        "state_dict": model.generator.state_dict(),
        "conditioner": model.cond.state_dict(),
        "layer_sizes": layer_sizes,
        "latent_dim": int(hp["latent_dim"]),
        "hidden": list(hp["hidden"]),
        "voxel_gates": bool(hp["voxel_gates"]),
        "flow": hp["flow"],
        "stats": {k: v for k, v in stats.items() if not isinstance(v, np.ndarray)},
        "particles": pidx,
        "samples": {n: particles[n] for n in samples},
    }
    with atomic_output(out_model) as tmp:
        torch.save(payload, tmp)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update({"train_seconds": train_s, "train_showers": float(len(inc)), "epochs": float(epochs)})
    if tracked is not None:
        tracked.log_metrics(metrics)
        tracked.log_artifact(out_model, artifact_path="model")
    log.info("GAN trained in %.0f s: %s", train_s, metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------
class ShowerGenerator:
    """The trained generator, ready to sample showers for given energies and particles."""

    def __init__(self, model_path: str | os.PathLike):
        import torch

        from pipeline.calo.gan import Conditioner, build_generator

        path = Path(model_path)
        if not path.exists():
            raise InputFileError(f"{path}: GAN model file does not exist")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise InputFileError(f"{path}: not a readable GAN model ({exc})") from None
        st = payload["stats"]
        self.particles: dict[str, int] = payload["particles"]
        self.cond = Conditioner(st["log_e_mean"], st["log_e_std"], st["n_particles"])
        self.cond.load_state_dict(payload["conditioner"])
        self.kind = payload.get("generator", "mlp")
        self.generator = build_generator(self.kind, payload["layer_sizes"], self.cond.dim, st, payload)
        self.generator.load_state_dict(payload["state_dict"])
        self.generator.eval()
        self.n_voxels = sum(payload["layer_sizes"])

    @classmethod
    def untrained(cls, calo_cfg: Mapping, geometry: Geometry, particles=("electron", "photon")) -> ShowerGenerator:
        """A generator of the configured kind and size with fresh weights (the benchmark's
        stand-in where no trained model exists: the cost does not depend on the weights)."""
        from pipeline.calo.gan import Conditioner, build_generator

        self = cls.__new__(cls)
        self.particles = {p: i for i, p in enumerate(particles)}
        self.cond = Conditioner(float(np.log(3e4)), 2.0, len(particles))
        self.kind = calo_cfg["gan"]["generator"]
        stats = {"log_ratio_mean": -0.03, "log_ratio_std": 0.05, "threshold_mev": 3.0}
        sizes = [la.n_voxels for la in geometry.layers]
        self.generator = build_generator(self.kind, sizes, self.cond.dim, stats, dict(calo_cfg["gan"])).eval()
        self.n_voxels = geometry.n_voxels
        return self

    def to(self, device) -> ShowerGenerator:
        self.generator.to(device)
        self.cond.to(device)
        return self

    def sample_tensor(self, incident, particle_index, generator=None):
        """Showers (B, V) [MeV] for incident energies (B,) [MeV] and particle indices (B,), as a
        tensor on their device; noise from ``generator`` (None: the global stream)."""
        import torch

        cond = self.cond(incident, particle_index)
        if self.kind == "flow":
            return self.generator(cond, incident, generator=generator)
        z = torch.randn(len(incident), self.generator.latent_dim, generator=generator, device=incident.device)
        return self.generator(z, cond, incident)

    def __call__(self, incident_mev: np.ndarray, particle: str, seed: int, batch: int = 10_000) -> np.ndarray:
        import torch

        if particle not in self.particles:
            raise ConfigError(f"calo: the GAN was not trained on particle '{particle}' (only {', '.join(self.particles)})")
        g = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int_seed(int(seed), "gates"))  # the voxel gates draw from the global stream
        inc = torch.as_tensor(np.asarray(incident_mev, dtype=np.float32).reshape(-1))
        out = np.empty((len(inc), self.n_voxels), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(inc), batch):
                e = inc[start:start + batch]
                p = torch.full((len(e),), self.particles[particle], dtype=torch.long)
                out[start:start + len(e)] = self.sample_tensor(e, p, generator=g).numpy()
        return out


def generate(model_path: str, ref_h5: str, ref_xml: str, particle: str, calo_cfg: Mapping, seed: int, sample: str,
             out_h5: str, out_xml: str, threads: int = 1) -> dict:
    """Generate one shower per held-out reference shower (same incident energies)."""
    import shutil

    import torch

    torch.set_num_threads(max(int(threads), 1))
    ref = load_sample(ref_h5, ref_xml, particle)
    _, te = split_indices(len(ref), float(calo_cfg["test_fraction"]))
    inc = ref.incident_energies[te]
    gen = ShowerGenerator(model_path)
    if gen.n_voxels != ref.geometry.n_voxels:
        raise InputFileError(f"{model_path}: the GAN makes {gen.n_voxels} voxels, {ref_xml} has {ref.geometry.n_voxels}")
    t0 = time.perf_counter()
    showers = gen(inc, particle, int_seed(seed, "calo_generate", sample))
    dt = time.perf_counter() - t0
    write_showers(out_h5, inc, showers, attrs={"particle": particle, "generator": "pipeline calo GAN"})
    with atomic_output(out_xml) as tmp:
        shutil.copyfile(ref_xml, tmp)
    return {"n_showers": len(inc), "gan_ms_per_shower": dt / max(len(inc), 1) * 1e3}


def write_metrics(path: str, metrics: Mapping) -> None:
    write_json(path, {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()})
