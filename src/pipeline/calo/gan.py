"""An energy- and particle-conditioned generator of calorimeter showers, trained with a WGAN-GP critic.

Condition (:class:`Conditioner`): standardised ln E_incident and a one-hot particle type.
``gan.generator`` chooses the generator (:func:`build_generator`):

- ``flow`` (the default): :class:`~pipeline.calo.flow.ShowerFlow`, a two-stage conditional
  neural spline flow (layer energies, then voxel fractions per layer; see :mod:`pipeline.calo.flow`),
  trained as a Flow-GAN (Grover et al., arXiv:1705.08868): its loss is the negative
  log-likelihood of the training showers plus ``adversarial_weight`` times the critic's
  adversarial loss. With ``adversarial_weight: 0`` (the default) the critic is not trained and
  the flow is a maximum-likelihood model; its generator uses Adam with a one-cycle learning-rate
  schedule and gradient clipping.
- ``mlp``: :class:`Generator`, an MLP that maps (noise, condition) to three heads whose product
  is the shower, so the energy scale is built in rather than learnt voxel by voxel:

  - the total-energy ratio u = E_total / E_incident, as exp(m + s * head) with (m, s) the
    training data's mean and width of ln u (the energy scale is right from the first step);
  - the layer fractions E_l / E_total (softmax over layers);
  - the voxel fractions inside each layer (softmax per layer), optionally over the voxels that
    per-voxel stochastic gates switch on (``voxel_gates``): hard 0/1 in the forward pass, a
    relaxed Bernoulli in the backward pass, for the sparse, spotty showers of low energies that
    a softmax alone cannot make;

  shower = E_incident * u * f_layer * f_voxel [MeV], then the detector's zero suppression
  (voxels below ``threshold_mev`` read zero, as in the training data). Trained by the critic
  (adversarial weight 1) and the MMD terms alone.

Critic (:class:`CaloGAN`): an MLP on the condition, log10(voxel / E_incident + 1e-5) and
differentiable high-level features (:class:`~pipeline.calo.features.TorchFeatures`: ln u, layer
fractions, centres and widths per layer), each standardised with the training data's statistics.
Trained with the WGAN-GP loss (Gulrajani et al., arXiv:1704.00028): gradient penalty on
interpolates of the critic's inputs, plus a small drift term epsilon * E[C(real)^2] (Karras et
al., arXiv:1710.10196) that keeps the critic's output near zero; ``n_critic`` critic steps per
generator step.

With ``mmd_weight > 0`` the generator's loss adds ``mmd_weight`` times the squared maximum mean
discrepancy between the real and generated (condition, high-level features) of the batch, plus
``mmd_voxel_weight`` times that of (condition, voxels), plus ``mmd_marginal_weight`` times the
mean over features of the MMD of (condition, one feature) (Li et al., arXiv:1502.02761): a
low-variance signal on the distributions that the validation checks, which shortens the training
on a CPU from hours to minutes.

The trap: the critic must not see anything the generator cannot reproduce (e.g. exact zeros
without the threshold), or it wins by that alone and the generator learns nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch import nn

from pipeline.calo.features import TorchFeatures
from pipeline.calo.geometry import Geometry

VOXEL_FLOOR = 1e-5


def mlp(sizes: Sequence[int], out: int, slope: float = 0.2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    layers.append(nn.Linear(sizes[-1], out))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """(noise, condition, E_incident [MeV]) -> shower (B, n_voxels) [MeV]."""

    def __init__(self, layer_sizes: Sequence[int], cond_dim: int, latent_dim: int, hidden: Sequence[int],
                 log_ratio_mean: float, log_ratio_std: float, threshold_mev: float, gates: bool = True,
                 gate_temperature: float = 0.5):
        super().__init__()
        self.layer_sizes = list(int(n) for n in layer_sizes)
        self.latent_dim = int(latent_dim)
        n_layers, n_vox = len(self.layer_sizes), sum(self.layer_sizes)
        self.body = mlp([latent_dim + cond_dim, *hidden], hidden[-1])
        self.act = nn.LeakyReLU(0.2)
        self.gates = bool(gates)
        self.head = nn.Linear(hidden[-1], 1 + n_layers + n_vox * (2 if self.gates else 1))
        if self.gates:  # start with nearly every voxel on: the softmax alone, then learn to switch off
            with torch.no_grad():
                self.head.bias[1 + n_layers + n_vox:] = 3.0
        layer_of = np.repeat(np.arange(n_layers), self.layer_sizes)
        self.register_buffer("layer_of", torch.from_numpy(layer_of).long())
        self.register_buffer("ratio", torch.tensor([log_ratio_mean, log_ratio_std], dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(float(threshold_mev)))
        self.gate_temperature = float(gate_temperature)

    def forward(self, z: torch.Tensor, cond: torch.Tensor, incident: torch.Tensor) -> torch.Tensor:
        h = self.head(self.act(self.body(torch.cat([z, cond], dim=1))))
        n_layers = len(self.layer_sizes)
        log_u = self.ratio[0] + self.ratio[1] * h[:, 0]
        f_layer = torch.softmax(h[:, 1:1 + n_layers], dim=1)
        n_vox = sum(self.layer_sizes)
        logits = h[:, 1 + n_layers:1 + n_layers + n_vox]
        if self.gates:
            mask = self._gate(h[:, 1 + n_layers + n_vox:])
            parts = torch.split(logits, self.layer_sizes, dim=1)
            masks = torch.split(mask, self.layer_sizes, dim=1)
            f_vox = torch.cat([_masked_softmax(p, m) for p, m in zip(parts, masks)], dim=1)
        else:
            parts = torch.split(logits, self.layer_sizes, dim=1)
            f_vox = torch.cat([torch.softmax(p, dim=1) for p in parts], dim=1)
        shower = (incident * torch.exp(log_u)).unsqueeze(1) * f_layer[:, self.layer_of] * f_vox
        return shower * (shower >= self.threshold)


    def _gate(self, gate_logits: torch.Tensor) -> torch.Tensor:
        """Hard 0/1 voxel gates: a straight-through relaxed Bernoulli (binary Concrete, Maddison et
        al., arXiv:1611.00712) in training, a Bernoulli draw from the same noise otherwise."""
        u = torch.rand_like(gate_logits).clamp(1e-6, 1 - 1e-6)
        noisy = gate_logits + torch.log(u) - torch.log1p(-u)
        hard = (noisy > 0).to(gate_logits.dtype)
        if not torch.is_grad_enabled():
            return hard
        soft = torch.sigmoid(noisy / self.gate_temperature)
        return hard + soft - soft.detach()


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the voxels that the mask keeps; all zeros where it keeps none."""
    ex = torch.exp(logits - logits.max(dim=1, keepdim=True).values) * mask
    return ex / (ex.sum(dim=1, keepdim=True) + 1e-20)


def build_generator(kind: str, layer_sizes, cond_dim: int, stats: Mapping, hp: Mapping):
    """The generator network of ``kind`` (``flow`` or ``mlp``) with the hyperparameters ``hp``
    (a gan config block or a saved model's payload)."""
    if kind == "flow":
        from pipeline.calo.flow import ShowerFlow

        fcfg = hp["flow"]
        return ShowerFlow(layer_sizes, cond_dim, stats["threshold_mev"], fcfg["energy"], fcfg["voxels"],
                          fcfg["dequantisation_decades"], fcfg["dequantisation_gap_decades"])
    return Generator(layer_sizes, cond_dim, hp["latent_dim"], hp["hidden"], stats["log_ratio_mean"],
                     stats["log_ratio_std"], stats["threshold_mev"], gates=hp["voxel_gates"])


class Conditioner(nn.Module):
    """E_incident [MeV] and particle index -> condition vector (standardised ln E, one-hot)."""

    def __init__(self, log_e_mean: float, log_e_std: float, n_particles: int):
        super().__init__()
        self.n_particles = int(n_particles)
        self.register_buffer("log_e", torch.tensor([log_e_mean, log_e_std], dtype=torch.float32))

    @property
    def dim(self) -> int:
        return 1 + self.n_particles

    def forward(self, incident: torch.Tensor, particle: torch.Tensor) -> torch.Tensor:
        le = ((torch.log(incident) - self.log_e[0]) / self.log_e[1]).unsqueeze(1)
        return torch.cat([le, nn.functional.one_hot(particle, self.n_particles).float()], dim=1)


def mmd2(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = (0.05, 0.2, 1.0, 4.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy of two samples (B, D) with a sum of Gaussian kernels of
    widths ``scales`` (in units of the mean squared distance per dimension)."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2) / x.shape[1]
    k = sum(torch.exp(-d2 / (2 * s)) for s in scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def conditional_marginal_mmd2(cond_real: torch.Tensor, f_real: torch.Tensor, cond_fake: torch.Tensor,
                              f_fake: torch.Tensor, scales: Sequence[float] = (0.02, 0.1, 0.5, 2.0)) -> torch.Tensor:
    """Mean over features k of the squared MMD of (condition, feature k): every feature's
    distribution, and how it changes with energy and particle, matched one at a time (low
    dimension: sharp enough for a 1 % resolution at high energy)."""
    c = torch.cat([cond_real, cond_fake])
    f = torch.cat([f_real, f_fake])
    d2c = torch.cdist(c, c).pow(2)
    d2 = d2c.unsqueeze(0) + (f.T.unsqueeze(2) - f.T.unsqueeze(1)).pow(2)  # (K, 2B, 2B)
    k = sum(torch.exp(-d2 / (2 * s)) for s in scales)
    n = len(f_real)
    per = k[:, :n, :n].mean((1, 2)) + k[:, n:, n:].mean((1, 2)) - 2 * k[:, :n, n:].mean((1, 2))
    return per.mean()


class CaloGAN(L.LightningModule):
    """WGAN-GP training (manual optimisation: ``n_critic`` critic steps per generator step).

    ``hparams["generator"]`` chooses the generator: ``mlp`` (:class:`Generator`, trained by the
    critic and the MMD terms alone) or ``flow`` (:class:`~pipeline.calo.flow.ShowerFlow`, a
    Flow-GAN in the sense of Grover et al., arXiv:1705.08868: the generator's loss is its negative
    log-likelihood plus ``adversarial_weight`` times the critic's adversarial loss, so the
    likelihood gives the coverage and the critic sharpens what it sees; with weight 0 the critic
    is not trained and the flow is a maximum-likelihood model).
    """

    def __init__(self, geometry_layers: Sequence[int], stats: dict, hparams: dict, geometry: Geometry):
        super().__init__()
        self.save_hyperparameters(ignore=["geometry"])
        self.automatic_optimization = False
        hp = hparams
        self.kind = hp["generator"]
        self.cond = Conditioner(stats["log_e_mean"], stats["log_e_std"], stats["n_particles"])
        self.generator = build_generator(self.kind, geometry_layers, self.cond.dim, stats, hp)
        self.features = TorchFeatures(geometry)
        n_vox = sum(geometry_layers)
        self.register_buffer("vox_stats", torch.tensor(np.stack([stats["vox_mean"], stats["vox_std"]]), dtype=torch.float32))
        self.register_buffer("feat_stats", torch.tensor(np.stack([stats["feat_mean"], stats["feat_std"]]), dtype=torch.float32))
        self.critic = mlp([n_vox + self.features.n_features + self.cond.dim, *hp["critic_hidden"]], 1)
        perms = geometry.symmetry_permutations() if hp["augment_symmetries"] else np.arange(n_vox)[None, :]
        self.register_buffer("symmetry_perms", torch.from_numpy(perms).long())

    @property
    def adversarial_weight(self) -> float:
        return 1.0 if self.kind == "mlp" else float(self.hparams.hparams["adversarial_weight"])

    def fake(self, cond: torch.Tensor, incident: torch.Tensor) -> torch.Tensor:
        if self.kind == "flow":
            return self.generator(cond, incident)
        z = torch.randn(len(cond), self.generator.latent_dim, device=self.device)
        return self.generator(z, cond, incident)

    # representation seen by the critic
    def represent(self, showers: torch.Tensor, incident: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        vox = torch.log10(showers / incident.unsqueeze(1) + VOXEL_FLOOR)
        vox = (vox - self.vox_stats[0]) / self.vox_stats[1]
        feat = (self.features(showers, incident) - self.feat_stats[0]) / self.feat_stats[1]
        return torch.cat([vox, feat, cond], dim=1)

    def _move_features(self) -> None:
        for name in ("lm", "r", "x", "y"):
            t = getattr(self.features, name)
            if t.device != self.device:
                setattr(self.features, name, t.to(self.device))

    def training_step(self, batch, batch_idx):
        self._move_features()
        incident, particle, real = batch
        if len(self.symmetry_perms) > 1:  # each shower as one of its azimuthal images
            pick = torch.randint(len(self.symmetry_perms), (len(real),), device=real.device)
            real = real.gather(1, self.symmetry_perms[pick])
        opt_g, opt_c = self.optimizers()
        hp = self.hparams.hparams
        cond = self.cond(incident, particle)
        adv = self.adversarial_weight
        x_real = None
        if adv > 0:
            with torch.no_grad():
                fake = self.fake(cond, incident)
            x_real = self.represent(real, incident, cond)
            x_fake = self.represent(fake, incident, cond)
            c_real, c_fake = self.critic(x_real), self.critic(x_fake)
            eps = torch.rand(len(real), 1, device=self.device)
            x_mix = (eps * x_real + (1 - eps) * x_fake).requires_grad_(True)
            grad = torch.autograd.grad(self.critic(x_mix).sum(), x_mix, create_graph=True)[0]
            gp = ((grad.norm(dim=1) - 1) ** 2).mean()
            wdist = c_real.mean() - c_fake.mean()
            loss_c = -wdist + hp["gp_lambda"] * gp + 1e-3 * (c_real**2).mean()
            opt_c.zero_grad(set_to_none=True)
            self.manual_backward(loss_c)
            opt_c.step()
            self.log_dict({"critic_loss": loss_c.detach(), "wasserstein": wdist.detach(), "gradient_penalty": gp.detach()},
                          on_step=False, on_epoch=True, prog_bar=True)
        if batch_idx % hp["n_critic"] == 0:
            loss_g = torch.zeros((), device=self.device)
            if self.kind == "flow":
                nll_energy, nll_voxels = self.generator.nll(real, incident, cond)
                loss_g = nll_energy + nll_voxels
                self.log_dict({"nll_energy": nll_energy.detach(), "nll_voxels": nll_voxels.detach()},
                              on_step=False, on_epoch=True, prog_bar=True)
            if adv > 0 or hp["mmd_weight"] > 0:
                fake = self.fake(cond, incident)
                x_fake = self.represent(fake, incident, cond)
                if x_real is None:
                    x_real = self.represent(real, incident, cond)
            if adv > 0:
                loss_g = loss_g - adv * self.critic(x_fake).mean()
            if hp["mmd_weight"] > 0:
                # moment matching of the joint (condition, high-level features) distribution:
                # a stable signal on what the validation checks, next to the critic's
                n_vox, n_cond = self.vox_stats.shape[1], cond.shape[1]
                x_real = x_real.detach()
                loss_mmd = mmd2(x_real[:, n_vox:], x_fake[:, n_vox:])
                if hp["mmd_marginal_weight"] > 0:
                    m = min(len(x_real), 128)  # (K, 2m, 2m) kernels: cost grows as m^2
                    loss_mmd = loss_mmd + hp["mmd_marginal_weight"] * conditional_marginal_mmd2(
                        cond[:m], x_real[:m, n_vox:-n_cond], cond[:m], x_fake[:m, n_vox:-n_cond])
                if hp["mmd_voxel_weight"] > 0:
                    vox_cond = torch.cat([torch.arange(n_vox), torch.arange(len(x_real[0]) - n_cond, len(x_real[0]))])
                    loss_mmd = loss_mmd + hp["mmd_voxel_weight"] * mmd2(x_real[:, vox_cond], x_fake[:, vox_cond])
                loss_g = loss_g + hp["mmd_weight"] * loss_mmd
                self.log("mmd", loss_mmd.detach(), on_step=False, on_epoch=True)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            if self.kind == "flow":
                self.clip_gradients(opt_g, gradient_clip_val=5.0, gradient_clip_algorithm="norm")
            opt_g.step()
            sched = self.lr_schedulers()
            if sched is not None:
                sched.step()
            self.log("generator_loss", loss_g.detach(), on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams.hparams
        opt_c = torch.optim.Adam(self.critic.parameters(), lr=hp["lr_critic"], betas=(0.5, 0.9))
        if self.kind == "flow":
            # maximum likelihood wants the usual Adam moments and a one-cycle schedule
            opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp["lr_generator"])
            epochs = max(int(self.trainer.max_epochs), 1)
            per_epoch = -(-int(self.trainer.estimated_stepping_batches) // epochs)  # batches per epoch
            steps = epochs * -(-per_epoch // int(hp["n_critic"]))  # generator steps
            sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, max_lr=hp["lr_generator"], total_steps=steps + 1)
            return [opt_g, opt_c], [sched]
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp["lr_generator"], betas=(0.5, 0.9))
        return [opt_g, opt_c]
