"""Paper Fig. 3 in miniature: extrapolate around a circle in R^N with its exact MMSE denoiser (Alg. 1 vs Alg. 2).

The prior is uniform on M points spread densely on a unit circle in a random plane of R^N; the MMSE denoiser
under N(0, sigma^2 I) noise is the softmax-weighted mean of the points. Its Jacobian is Cov(u|x)/sigma^2:
eigenvalue ~1 along the circle, ~0 across. Run: python examples/circle_manifold.py [out.png]
"""
from __future__ import annotations

import math
import sys

import torch

from extrapolation import linear_rollout, tangent_rollout


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
        ang = torch.from_numpy(__import__("numpy").unwrap(ang.numpy(), axis=-1))
        off_plane = (f - c @ self.plane).norm(dim=-1)
        return ang, c.norm(dim=-1), off_plane


def run(steps=40, eta=0.3, sigma=0.05, k=1, seed=0, n=64):
    den = CircleDenoiser(n=n, sigma=sigma)
    u0, u1 = den.point(0.0), den.point(0.1)
    tan = tangent_rollout(den, u0, u1, steps, eta, sigma, k, generator=torch.Generator().manual_seed(seed))
    lin = linear_rollout(den, u0, u1, steps, eta, sigma, generator=torch.Generator().manual_seed(seed))
    return den, tan[0], lin[0]


def main(out="circle_manifold.png"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    den, tan, lin = run()
    fig, ax = plt.subplots(figsize=(5, 5))
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(t.cos(), t.sin(), color="0.8", lw=4, label="manifold")
    for name, fr, col in [("tangent (Alg. 1)", tan, "C0"), ("linear (Alg. 2)", lin, "C3")]:
        c = (fr.reshape(fr.shape[0], -1) - den.center) @ den.plane.T
        ang, rad, off = den.angle_radius(fr)
        print(f"{name}: covers {math.degrees(ang[-1] - ang[0]):.0f} deg, radius {rad.min():.3f}-{rad.max():.3f}")
        ax.plot(c[:, 0], c[:, 1], ".-", color=col, label=name)
    ax.plot([1.0, math.cos(0.1)], [0.0, math.sin(0.1)], "k*", ms=12, label="u0, u1")
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Extrapolation on a circle in R^64, exact MMSE denoiser")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
