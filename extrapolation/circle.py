"""A known manifold with its exact denoiser: a circle in R^n (the paper's Fig. 3), for checking Alg. 1-4.

The prior is uniform on M points spread densely on a unit circle in a random plane of R^n; the MMSE denoiser
under N(0, sigma^2 I) noise is the softmax-weighted mean of the points. Its Jacobian is Cov(u|x)/sigma^2:
eigenvalue ~1 along the circle, ~0 across. Pure PyTorch; ``examples/circle_manifold.py`` plots rollouts on it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class CircleDenoiser:
    """Exact MMSE denoiser of a uniform prior on points of a circle in R^n; images are (B, 1, 1, n)."""

    def __init__(self, n=64, points=2000, sigma=0.05, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.plane = torch.linalg.qr(torch.randn(n, 2, generator=g, dtype=dtype)).Q.T  # (2, n) orthonormal
        theta = torch.linspace(0, 2 * math.pi, points + 1, dtype=dtype)[:-1]
        # Off-centre, like images: at the origin x would be exactly normal to the tangent (Alg. 4 starts at v_0 = x).
        self.center = 0.5 * torch.randn(n, generator=g, dtype=dtype) / math.sqrt(n)
        self.center -= self.plane.T @ (self.plane @ self.center)
        self.points = self.center + torch.stack([theta.cos(), theta.sin()], -1) @ self.plane  # (M, n)
        self.sigma, self.n = sigma, n

    def __call__(self, x):
        flat = x.reshape(x.shape[0], -1)
        # Explicit squared distances: cdist has no forward-mode AD.
        d2 = (flat * flat).sum(-1, keepdim=True) - 2 * flat @ self.points.T + (self.points * self.points).sum(-1)
        logits = -d2 / (2 * self.sigma**2)
        return (logits.softmax(-1) @ self.points).reshape(x.shape)

    def point(self, angle):
        a = torch.as_tensor(angle, dtype=self.points.dtype).reshape(-1)
        return (self.center + torch.stack([a.cos(), a.sin()], -1) @ self.plane).reshape(-1, 1, 1, self.n)

    def angle_radius(self, frames):
        """Unwrapped angle (rad), in-plane radius and off-plane distance of frames (..., 1, 1, n)."""
        f = frames.reshape(*frames.shape[:-3], self.n) - self.center
        c = f @ self.plane.T  # in-plane coordinates
        ang = torch.atan2(c[..., 1], c[..., 0])
        ang = torch.from_numpy(np.unwrap(ang.numpy(), axis=-1))
        off_plane = (f - c @ self.plane).norm(dim=-1)
        return ang, c.norm(dim=-1), off_plane
