"""Paper Fig. 3 in miniature: extrapolate around a circle in R^N with its exact MMSE denoiser (Alg. 1 vs Alg. 2).

The denoiser is ``extrapolation.circle.CircleDenoiser``. Run: python examples/circle_manifold.py [out.png]
"""
from __future__ import annotations

import math
import sys

import torch

from extrapolation import EigenProjection, linear_rollout, tangent_rollout
from extrapolation.circle import CircleDenoiser


def run(steps=40, eta=0.3, sigma=0.05, k=1, seed=0, n=64):
    den = CircleDenoiser(n=n, sigma=sigma)
    u0, u1 = den.point(0.0), den.point(0.1)
    tan, _ = tangent_rollout(den, u0, u1, steps, eta, sigma, EigenProjection(k=k), torch.Generator().manual_seed(seed))
    lin, _ = linear_rollout(den, u0, u1, steps, eta, sigma, generator=torch.Generator().manual_seed(seed))
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
