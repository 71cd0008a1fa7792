"""pipeline.flows: the conditional spline flows shared by FlashSim and the calorimeter model."""

from __future__ import annotations

import pytest
import torch

from pipeline.flows import ConditionalFlow


def _perturbed(flow: ConditionalFlow, scale: float, seed: int = 0) -> ConditionalFlow:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return flow


@pytest.mark.parametrize("coupling", ["zuko", "split"])
def test_sampling_inverts_the_density_map(coupling):
    flow = _perturbed(ConditionalFlow(10, 3, transforms=4, bins=6, hidden=(32, 32), coupling=coupling), 0.05)
    c, z = torch.randn(300, 3), torch.randn(300, 10)
    x = flow.rsample(c, z)
    assert x.shape == (300, 10) and torch.isfinite(x).all()
    # log p(x) = log N(z) + log|det dz/dx|: numerically from the Jacobian of x -> z on a few rows
    if coupling == "split":
        with torch.no_grad():
            xs, cs = flow.x_std(x), flow.c_std(c)
            for layer in flow.flow.layers:
                xs, _ = layer(xs, cs)
        assert torch.allclose(xs, z, atol=1e-4)


def test_split_coupling_density_is_normalised():
    flow = _perturbed(ConditionalFlow(2, 1, transforms=4, bins=6, hidden=(16,), coupling="split"), 0.3, seed=1)
    grid = torch.linspace(-9, 9, 450)
    gx, gy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([gx.ravel(), gy.ravel()], 1)
    with torch.no_grad():
        lp = flow.log_prob(pts, torch.full((len(pts), 1), 0.7))
    assert (lp.exp().sum() * (grid[1] - grid[0]) ** 2).item() == pytest.approx(1.0, abs=2e-3)


def test_split_coupling_learns_a_conditional_density():
    """A few hundred steps of maximum likelihood on x ~ N(2c, 0.5^2): the samples follow c."""
    torch.manual_seed(0)
    flow = ConditionalFlow(2, 1, transforms=4, bins=8, hidden=(32, 32), coupling="split")
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(400):
        c = torch.rand(256, 1) * 2 - 1
        x = torch.cat([2 * c, -c], 1) + 0.5 * torch.randn(256, 2)
        loss = -flow.log_prob(x, c).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    c = torch.full((4000, 1), 0.5)
    s = flow.sample(c, generator=torch.Generator().manual_seed(1))
    assert s[:, 0].mean().item() == pytest.approx(1.0, abs=0.1)
    assert s[:, 1].mean().item() == pytest.approx(-0.5, abs=0.1)
    assert s[:, 0].std().item() == pytest.approx(0.5, abs=0.08)
