"""Conditional normalizing flows shared by the generative models (FlashSim objects, calorimeter
showers).

:class:`ConditionalFlow`
    A zuko neural spline *coupling* flow (``NSF(..., passes=2)``; the fully autoregressive default
    samples about 8x slower) for p(x | c), wrapped with the standardisation of its features and
    conditions (buffers, saved with the weights). Splines act on [-5, 5], hence the
    standardisation. Durkan et al., "Neural Spline Flows", arXiv:1906.04032.

:class:`SplitCouplingFlow`
    The same rational-quadratic spline coupling flow written as split couplings (Dinh et al.,
    arXiv:1605.08803): each transform leaves a random half of the features as they are and
    moves the other half by splines whose parameters a network computes from the first half and
    the condition. Sampling evaluates each network once and the splines of half the features;
    zuko's ``passes=2`` coupling evaluates its network twice and splines on every feature, about
    3x the cost per shower of a 112-voxel calorimeter flow. ``ConditionalFlow(...,
    coupling="split")`` uses it.
"""

from __future__ import annotations

import math
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


class _SplineCoupling(nn.Module):
    """x_b -> RQS(x_b; theta(x_a, c)), x_a unchanged; ``idx_a``/``idx_b`` split the features."""

    def __init__(self, idx_a: np.ndarray, idx_b: np.ndarray, context: int, bins: int, hidden: Sequence[int]):
        super().__init__()
        self.register_buffer("idx_a", torch.as_tensor(idx_a, dtype=torch.long))
        self.register_buffer("idx_b", torch.as_tensor(idx_b, dtype=torch.long))
        self.bins = int(bins)
        sizes = [len(idx_a) + context, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], len(idx_b) * (3 * self.bins - 1)))
        self.net = nn.Sequential(*layers)

    def _spline(self, x: torch.Tensor, c: torch.Tensor):
        from zuko.transforms import MonotonicRQSTransform

        k = self.bins
        theta = self.net(torch.cat([x[:, self.idx_a], c], dim=1)).view(len(x), len(self.idx_b), 3 * k - 1)
        return MonotonicRQSTransform(theta[..., :k], theta[..., k:2 * k], theta[..., 2 * k:])

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_b, ladj = self._spline(x, c).call_and_ladj(x[:, self.idx_b])
        return x.index_copy(1, self.idx_b, y_b), ladj.sum(1)

    def inverse(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return y.index_copy(1, self.idx_b, self._spline(y, c).inv(y[:, self.idx_b]))


class SplitCouplingFlow(nn.Module):
    """A stack of :class:`_SplineCoupling` on a standard normal: ``log_prob(x, c)``, ``inverse(z, c)``.
    The halves are drawn per transform from a fixed-seed permutation (the same model every time)."""

    def __init__(self, features: int, context: int, transforms: int, bins: int, hidden: Sequence[int]):
        super().__init__()
        order = np.random.default_rng(features * 1000 + transforms)
        half = features // 2
        layers = []
        for t in range(transforms):
            if t % 2 == 0:  # a fresh random split; the next transform moves the other half
                perm = order.permutation(features)
                split = (np.sort(perm[:half]), np.sort(perm[half:]))
            else:
                split = split[::-1]
            layers.append(_SplineCoupling(*split, context, bins, hidden))
        self.layers = nn.ModuleList(layers)

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ladj = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for layer in self.layers:
            x, l = layer(x, c)
            ladj = ladj + l
        return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi) + ladj

    def inverse(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z, c)
        return z


class ConditionalFlow(nn.Module):
    """p(x | c) by a neural spline coupling flow on standardised x and c: zuko's NSF (``coupling
    = "zuko"``, passes=2) or :class:`SplitCouplingFlow` (``"split"``)."""

    def __init__(self, features: int, context: int, transforms: int = 4, bins: int = 8,
                 hidden: Sequence[int] = (64, 64), coupling: str = "zuko"):
        super().__init__()
        self.x_std = Standardiser(features)
        self.c_std = Standardiser(context)
        self.coupling = coupling
        if coupling == "split":
            self.flow = SplitCouplingFlow(features, context, transforms, bins, hidden)
        else:
            import zuko

            self.flow = zuko.flows.NSF(features, context, transforms=transforms, bins=bins,
                                       hidden_features=list(hidden), passes=2)

    def _inverse(self, z: torch.Tensor, c_std: torch.Tensor) -> torch.Tensor:
        if self.coupling == "split":
            return self.flow.inverse(z, c_std)
        return self.flow(c_std).transform.inv(z)

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """log p of the *standardised* x (the loss; a constant Jacobian apart)."""
        if self.coupling == "split":
            return self.flow.log_prob(self.x_std(x), self.c_std(c))
        return self.flow(self.c_std(c)).log_prob(self.x_std(x))

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None, chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
        """One x per row of c; noise from ``generator``. Rows are processed ``chunk`` at a time
        (large batches are slower per row on a CPU once they leave the cache)."""
        z = torch.randn(c.shape[0], self.x_std.mean.numel(), generator=generator, device=c.device, dtype=c.dtype)
        out = [self.x_std.inverse(self._inverse(z[i: i + chunk], self.c_std(c[i: i + chunk])))
               for i in range(0, c.shape[0], chunk)]
        return torch.cat(out) if out else z

    def rsample(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x for the noise z (standard normal, one row per row of c), differentiable in the flow's
        parameters (adversarial training through the flow)."""
        return self.x_std.inverse(self._inverse(z, self.c_std(c)))

