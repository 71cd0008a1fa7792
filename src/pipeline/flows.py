"""Conditional normalizing flows shared by the generative models (FlashSim objects, calorimeter
showers).

:class:`ConditionalFlow`
    A zuko neural spline *coupling* flow (``NSF(..., passes=2)``; the fully autoregressive default
    samples about 8x slower) for p(x | c), wrapped with the standardisation of its features and
    conditions (buffers, saved with the weights). Splines act on [-5, 5], hence the
    standardisation. Durkan et al., "Neural Spline Flows", arXiv:1906.04015.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

SAMPLE_CHUNK = 16384  # rows per flow evaluation when sampling


class Standardiser(nn.Module):
    """x -> (x - mean) / std with the statistics stored as buffers."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def fit(self, x: np.ndarray) -> Standardiser:
        x = torch.as_tensor(x, dtype=torch.float32)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


class ConditionalFlow(nn.Module):
    """p(x | c) by a zuko NSF coupling flow on standardised x and c."""

    def __init__(self, features: int, context: int, transforms: int = 4, bins: int = 8,
                 hidden: Sequence[int] = (64, 64)):
        super().__init__()
        import zuko

        self.x_std = Standardiser(features)
        self.c_std = Standardiser(context)
        self.flow = zuko.flows.NSF(features, context, transforms=transforms, bins=bins,
                                   hidden_features=list(hidden), passes=2)

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """log p of the *standardised* x (the loss; a constant Jacobian apart)."""
        return self.flow(self.c_std(c)).log_prob(self.x_std(x))

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None, chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
        """One x per row of c; noise from ``generator``. Rows are processed ``chunk`` at a time
        (large batches are slower per row on a CPU once they leave the cache)."""
        z = torch.randn(c.shape[0], self.x_std.mean.numel(), generator=generator, device=c.device, dtype=c.dtype)
        out = [self.x_std.inverse(self.flow(self.c_std(c[i: i + chunk])).transform.inv(z[i: i + chunk]))
               for i in range(0, c.shape[0], chunk)]
        return torch.cat(out) if out else z

    def rsample(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x for the noise z (standard normal, one row per row of c), differentiable in the flow's
        parameters (adversarial training through the flow)."""
        return self.x_std.inverse(self.flow(self.c_std(c)).transform.inv(z))

