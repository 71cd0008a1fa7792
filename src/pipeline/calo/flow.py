"""A two-stage conditional normalizing flow for calorimeter showers, the generator of the Flow-GAN.

In the manner of CaloFlow (Krause & Shih, arXiv:2106.05285), the shower is factorised as

    p(shower | E_inc, particle) = p(E_1..E_L | E_inc, particle) * p(voxel fractions | E_1..E_L, E_inc, particle)

- **energy flow**: the layer energies given the condition (standardised ln E_incident and the
  one-hot particle type, :class:`~pipeline.calo.gan.Conditioner`), as x1_0 = ln(E_total / E_incident)
  and the stick-breaking fractions x1_l = logit(E_l / sum_{j>=l} E_j), l < L - 1 (CaloFlow's
  u_i): the total energy and its resolution are one dimension of their own (a 1 % resolution at
  high energy is in reach), the longitudinal profile the others;
- **voxel flow**: the voxel fractions inside each layer, x2_i = logit(alpha + (1 - 2 alpha) e_i / E_l),
  given the condition and x1; at sampling every layer's fractions are renormalised to its E_l.

Both are neural spline coupling flows (:class:`pipeline.flows.ConditionalFlow`; ``coupling:
split`` for the voxel flow: half the spline evaluations per sample of zuko's two-pass
coupling), so sampling costs a few matrix products per shower.

**Zero suppression.** The detector reads zero below its threshold t: a voxel reading zero only
says that its energy was in [0, t). Training dequantises each such voxel to a fresh draw,
log-uniform in [t 10^-(g+d), t 10^-g) (d = ``dequantisation_decades``, g =
``dequantisation_gap_decades``), and sampling maps every voxel below t back to zero: the flow
learns which voxels fall below the threshold, and the sparsity per layer follows. A gap of g
decades keeps the dequantised energy of a layer negligible against its real energy (16 empty
voxels at 10^-3 t add 0.05 MeV to a layer, not the 10 MeV that draws just below t would), so the
energy flow models the layer energies the detector reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.flows import ConditionalFlow

ALPHA = 1e-6  # logit regulariser of the voxel fractions


class ShowerFlow(nn.Module):
    """(condition, E_incident [MeV]) -> shower (B, n_voxels) [MeV], and its log-likelihood."""

    def __init__(self, layer_sizes: Sequence[int], cond_dim: int, threshold_mev: float, energy_flow: Mapping,
                 voxel_flow: Mapping, dequantisation_decades: float, dequantisation_gap_decades: float):
        super().__init__()
        self.layer_sizes = [int(n) for n in layer_sizes]
        self.n_layers, self.n_voxels = len(self.layer_sizes), sum(self.layer_sizes)
        self.energy = ConditionalFlow(self.n_layers, cond_dim, **_flow_kwargs(energy_flow))
        self.voxels = ConditionalFlow(self.n_voxels, cond_dim + self.n_layers, **_flow_kwargs(voxel_flow))
        self.register_buffer("threshold", torch.tensor(float(threshold_mev)))
        self.dequantisation_decades = float(dequantisation_decades)
        self.dequantisation_gap_decades = float(dequantisation_gap_decades)
        lm = np.zeros((self.n_voxels, self.n_layers), dtype=np.float32)
        lm[np.arange(self.n_voxels), np.repeat(np.arange(self.n_layers), self.layer_sizes)] = 1.0
        self.register_buffer("layer_matrix", torch.from_numpy(lm))

    # ---------------------------------------------------------------------------------------
    # representation
    # ---------------------------------------------------------------------------------------
    def dequantise(self, showers: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Voxels reading zero get an energy log-uniform in [t 10^-(g+d), t 10^-g)."""
        u = torch.rand(showers.shape, generator=generator, device=showers.device, dtype=showers.dtype)
        fill = self.threshold * torch.pow(10.0, -self.dequantisation_gap_decades - self.dequantisation_decades * u)
        return torch.where(showers > 0, showers, fill)

    def encode(self, showers: torch.Tensor, incident: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised showers [MeV] -> (x1 (B, L), x2 (B, V))."""
        e_layer = showers @ self.layer_matrix
        # sum_{j>i} E_j for every layer i (the last: 0)
        after = torch.flip(torch.cumsum(torch.flip(e_layer, [1]), 1), [1]) - e_layer
        x1 = torch.cat([torch.log(e_layer.sum(1) / incident).unsqueeze(1),
                        torch.log(e_layer[:, :-1]) - torch.log(after[:, :-1])], dim=1)
        frac = showers / (e_layer @ self.layer_matrix.T)
        f = ALPHA + (1 - 2 * ALPHA) * frac
        return x1, torch.log(f) - torch.log1p(-f)

    def decode(self, x1: torch.Tensor, x2: torch.Tensor, incident: torch.Tensor) -> torch.Tensor:
        """(x1, x2) -> showers [MeV], layer energies from x1, zero suppression applied."""
        e_layer = self.layer_energies(x1, incident)
        f = ((torch.sigmoid(x2) - ALPHA) / (1 - 2 * ALPHA)).clamp_min(0.0)
        f = f / (f @ self.layer_matrix @ self.layer_matrix.T).clamp_min(1e-30)
        showers = f * (e_layer @ self.layer_matrix.T)
        return showers * (showers >= self.threshold)

    def layer_energies(self, x1: torch.Tensor, incident: torch.Tensor) -> torch.Tensor:
        """x1 (total-energy ratio, stick-breaking logits) -> E_l [MeV] (B, L)."""
        total = torch.exp(x1[:, 0]) * incident
        log_u, log_1mu = -nn.functional.softplus(-x1[:, 1:]), -nn.functional.softplus(x1[:, 1:])
        # the share left for layer l: prod_{j<l} (1 - u_j)
        log_left = torch.cat([torch.zeros_like(x1[:, :1]), torch.cumsum(log_1mu, 1)], dim=1)
        log_share = log_left + torch.cat([log_u, torch.zeros_like(x1[:, :1])], dim=1)
        return torch.exp(log_share) * total.unsqueeze(1)

    @torch.no_grad()
    def fit_standardisation(self, showers: torch.Tensor, incident: torch.Tensor, cond: torch.Tensor,
                            generator: torch.Generator | None = None) -> None:
        """Mean and width of x1, x2 and the conditions on (one dequantisation of) the training data."""
        x1, x2 = self.encode(self.dequantise(showers, generator), incident)
        self.energy.x_std.fit(x1)
        self.energy.c_std.fit(cond)
        self.voxels.x_std.fit(x2)
        self.voxels.c_std.fit(torch.cat([cond, x1], dim=1))

    # ---------------------------------------------------------------------------------------
    # likelihood and sampling
    # ---------------------------------------------------------------------------------------
    def nll(self, showers: torch.Tensor, incident: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean negative log-likelihood per shower of the energy and the voxel flow (standardised
        coordinates) of freshly dequantised showers."""
        x1, x2 = self.encode(self.dequantise(showers), incident)
        return -self.energy.log_prob(x1, cond).mean(), -self.voxels.log_prob(x2, torch.cat([cond, x1], 1)).mean()

    def forward(self, cond: torch.Tensor, incident: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Showers for the conditions; differentiable in the flows' parameters."""
        z1 = torch.randn(len(cond), self.n_layers, generator=generator, device=cond.device)
        z2 = torch.randn(len(cond), self.n_voxels, generator=generator, device=cond.device)
        x1 = self.energy.rsample(cond, z1)
        x2 = self.voxels.rsample(torch.cat([cond, x1], 1), z2)
        return self.decode(x1, x2, incident)


def _flow_kwargs(cfg: Mapping) -> dict:
    return {"transforms": int(cfg["transforms"]), "bins": int(cfg["bins"]), "hidden": list(cfg["hidden"]),
            "coupling": cfg["coupling"]}
