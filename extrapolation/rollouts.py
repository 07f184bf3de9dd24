"""Extrapolation rollouts, batched over videos: tangent space (paper Alg. 1), linear (Alg. 2), latent (Alg. 3).

All rollouts take two clean frames u0, u1 (B, C, H, W) and return (B, steps + 2, C, H, W): the two given
CLEAN frames followed by ``steps`` generated frames. (The paper's frame list starts with the noisy x0, x1;
we return u0, u1 so the output starts like the ground truth video.) Generated frames are not clipped to
[0, 1]: the algorithms never clip, and clipping would change the next step's velocity; clip for display only.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .tangent import METHODS, Denoiser, autograd_enabled, randn_like_batch, tangent_basis, tangent_filter

# Tangent steps: the eigen-projection of Alg. 1 with any `tangent_basis` solver, or the eigenvector-free filter.
STEP_METHODS = METHODS + ("filter",)


class RolloutInfo(NamedTuple):
    """Diagnostics of a `tangent_rollout`."""

    eigenvalues: Tensor  # (B, steps, k): top-k eigenvalues at x_{i-1} for each step
    applications: list[int]  # operator applications per image, per step
    iterations: list[int]


def _noise(like: Tensor, sigma: float, generator) -> Tensor:
    return sigma * randn_like_batch(like.shape, like, generator)


def _child_generators(generator):
    """Generators for the solver's start vectors, seeded from `generator` (one per image for a sequence), so
    the noise draws do not depend on the solver."""
    if generator is None:
        return None
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
    out = []
    for g in gens:
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
        out.append(torch.Generator(g.device).manual_seed(seed))
    return out[0] if isinstance(generator, torch.Generator) else out


def _per_video_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


@autograd_enabled
def tangent_rollout(
    denoise: Denoiser,
    u0: Tensor,
    u1: Tensor,
    steps: int,
    eta: float,
    sigma: float,
    k: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    method: str = "block",
    *,
    track_iters: int | None = None,
    power: int = 2,
    return_info: bool = False,
    **solver_kwargs,
):
    """Tangent-space extrapolation (paper Alg. 1), batched over videos.

    x_0 = u0 + eps_0, x_1 = u1 + eps_1; each step: V = top-k eigenvectors of J_D(x_{i-1}) (`tangent_basis`,
    warm-started from the previous step's V), v = x_{i-1} - x_{i-2}, p = V^T V v rescaled to ||v|| (per video),
    u_i = D(x_{i-1} + eta p), x_i = u_i + eps_i. Returns (B, steps+2, C, H, W) = [u0, u1, u_2, ...] (clean given
    frames first, see module doc; no clipping). ``method="filter"`` replaces V V^T v by the eigenvector-free
    A^power v (`tangent_filter`; k is then unused). Noise comes from ``generator`` (same seed -> same frames;
    a sequence gives each video its own stream, so a video's frames do not depend on its batch);
    the solver's random start vectors come from generators seeded from it, so the noise draws do not
    depend on the solver. ``track_iters``: solve the first step to the solver's tolerance, then cap every later
    step at this many iterations, warm-started from the previous step's whole block (subspace tracking: the
    tangent space moves little per frame). With ``return_info`` also returns a `RolloutInfo`.
    """
    if track_iters is not None and track_iters < 1:
        raise ValueError(f"track_iters must be a positive number of iterations or None, got {track_iters}")
    if method not in STEP_METHODS:
        raise ValueError(f"method must be one of {STEP_METHODS}, got {method!r}")
    u0, u1 = u0.detach(), u1.detach()
    solver_gen = _child_generators(generator)
    x_prev = u0 + _noise(u0, sigma, generator)
    x_cur = u1 + _noise(u1, sigma, generator)
    frames, eigs, apps, iters = [u0, u1], [], [], []
    warm = None
    tracked_kwargs = solver_kwargs if track_iters is None else dict(solver_kwargs, max_iters=track_iters)
    for i in range(steps):
        v = (x_cur - x_prev).flatten(1)
        if method == "filter":
            p, n_apps = tangent_filter(denoise, x_cur, v, power, return_info=True, **solver_kwargs)
            info = (u0.new_zeros(u0.shape[0], 0), n_apps, power)
        else:
            basis, info = tangent_basis(
                denoise, x_cur, k, method, init=warm, generator=solver_gen, return_info=True,
                **(solver_kwargs if i == 0 else tracked_kwargs),
            )
            warm = basis if info.block is None else info.block
            p = (basis.transpose(1, 2) @ (basis @ v.unsqueeze(-1))).squeeze(-1)
        pn = p.norm(dim=1, keepdim=True)
        # p = 0 only if v is normal to the tangent space: then there is no tangent direction to follow.
        p = torch.where(pn > 0, p * v.norm(dim=1, keepdim=True) / pn.clamp_min(torch.finfo(p.dtype).tiny), p)
        with torch.no_grad():
            u = denoise(x_cur + eta * p.view_as(x_cur)).detach()
        frames.append(u)
        x_prev, x_cur = x_cur, u + _noise(u, sigma, generator)
        eigs.append(info[0])
        apps.append(info[1])
        iters.append(info[2])
    out = torch.stack(frames, dim=1)
    if return_info:
        ev = torch.stack(eigs, 1) if eigs else u0.new_zeros(u0.shape[0], 0, 0 if method == "filter" else k)
        return out, RolloutInfo(ev, apps, iters)
    return out


@torch.no_grad()
def linear_rollout(
    denoise: Denoiser,
    u0: Tensor,
    u1: Tensor,
    steps: int,
    eta: float,
    sigma: float,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Linear extrapolation in noisy space, then denoise (paper Alg. 2, the baseline), batched over videos.

    x_i = D(x_{i-1} + eta (x_{i-1} - x_{i-2})) + eps_i. Returns (B, steps+2, C, H, W) = [u0, u1, u_2, ...]
    (clean given frames first; no clipping).
    """
    x_prev = u0 + _noise(u0, sigma, generator)
    x_cur = u1 + _noise(u1, sigma, generator)
    frames = [u0, u1]
    for _ in range(steps):
        u = denoise(x_cur + eta * (x_cur - x_prev))
        frames.append(u)
        x_prev, x_cur = x_cur, u + _noise(u, sigma, generator)
    return torch.stack(frames, dim=1)


@torch.no_grad()
def latent_rollout(
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    u0: Tensor,
    u1: Tensor,
    steps: int,
    eta: float,
    *,
    reencode: bool = True,
) -> Tensor:
    """Linear extrapolation in a latent space (paper Alg. 3, the VAE baseline), batched over videos.

    z_i from z_{i-1} + eta (z_{i-1} - z_{i-2}), u_i = decode(.). Alg. 3 leaves the next latent undefined; as
    in Alg. 2 (where x_i is rebuilt from the frame u_i) we take z_i = encode(u_i) (``reencode=True``);
    ``reencode=False`` keeps z_i = z_{i-1} + eta v_i (a straight line in latent space). Returns
    (B, steps+2, C, H, W) = [u0, u1, u_2, ...] (no clipping).
    """
    z_prev, z_cur = encode(u0), encode(u1)
    frames = [u0, u1]
    for _ in range(steps):
        z_v = z_cur + eta * (z_cur - z_prev)
        u = decode(z_v)
        frames.append(u.reshape(u0.shape).to(u0.dtype))
        z_prev, z_cur = z_cur, (encode(u) if reencode else z_v)
    return torch.stack(frames, dim=1)
