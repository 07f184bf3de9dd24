"""Extrapolation rollouts, batched over videos: tangent space (paper Alg. 1), linear (Alg. 2), latent (Alg. 3) and
Alg. 1 with its pace taken from the two given frames.

All rollouts take two clean frames u0, u1 (B, C, H, W) and return (B, steps + 2, C, H, W): the two given
CLEAN frames followed by ``steps`` generated frames. (The paper's frame list starts with the noisy x0, x1;
we return u0, u1 so the output starts like the ground truth video.) Generated frames are not clipped to
[0, 1]: the algorithms never clip, and clipping would change the next step's velocity; clip for display only.

A rollout *diverges* at the first generated frame that is not finite or leaves [-DIVERGED_ABOVE, DIVERGED_ABOVE]
(`Divergence`): that frame and every later one of the video are NaN in the output, `RolloutInfo.diverged` holds
the frame index, and the video continues internally from its last sane frame, so the other videos of the batch
(and a batched eigen-solver) never see a non-finite value.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .tangent import Denoiser, StepInfo, TangentStep, autograd_enabled, randn_like_batch

DIVERGED_ABOVE = 1e3  # |pixel| beyond this on [0, 1] images: the rollout has left any sane range
VELOCITIES = ("transport", "clean", "noisy")  # what a paced step projects (`paced_rollout`)


class RolloutInfo(NamedTuple):
    """Diagnostics of a rollout."""

    diverged: Tensor  # (B,) int64: frame index where the video diverged, -1 if it never did
    eigenvalues: Tensor | None = None  # tangent: (B, steps, k) top-k eigenvalues at x_{i-1} (k = 0 for a filter)
    applications: list[int] | None = None  # tangent: operator applications per image, per step
    iterations: list[int] | None = None


class Divergence:
    """Per-video divergence guard of a rollout (see the module doc)."""

    def __init__(self, u1: Tensor):
        self.last = u1
        self.step = torch.full((u1.shape[0],), -1, dtype=torch.long, device=u1.device)

    def __call__(self, u: Tensor, frame: int) -> Tensor:
        """Check generated frame number `frame`; returns the frame to continue from (the last sane one where not)."""
        flat = u.detach().flatten(1)
        bad = ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) > DIVERGED_ABOVE)
        self.step = torch.where(bad & (self.step < 0), torch.full_like(self.step, frame), self.step)
        frozen = (self.step >= 0).view(-1, *([1] * (u.dim() - 1)))
        self.last = torch.where(frozen, self.last, u)
        return self.last

    def finish(self, frames: Tensor) -> Tensor:
        """(B, T, ...) frames with NaN from each video's divergence on."""
        t = torch.arange(frames.shape[1], device=frames.device)
        after = (self.step.view(-1, 1) >= 0) & (t.view(1, -1) >= self.step.view(-1, 1))
        return frames.masked_fill(after.view(*after.shape, *([1] * (frames.dim() - 2))), float("nan"))


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


def _norm(v: Tensor) -> Tensor:
    """Per-video norm of (B, N), shape (B, 1)."""
    return v.flatten(1).norm(dim=1, keepdim=True)


def _rescale(p: Tensor, length: Tensor) -> Tensor:
    """p (B, N) rescaled to `length` (B, 1) per video; p = 0 (v normal to the tangent space) stays 0."""
    pn = _norm(p)
    return torch.where(pn > 0, p * length / pn.clamp_min(torch.finfo(p.dtype).tiny), p)


def _info(guard: Divergence, infos: list[StepInfo], u0: Tensor) -> RolloutInfo:
    eig = torch.stack([i.eigenvalues for i in infos], 1) if infos else u0.new_zeros(u0.shape[0], 0, 0)
    return RolloutInfo(guard.step, eig, [i.applications for i in infos], [i.iterations for i in infos])


@autograd_enabled
def tangent_rollout(
    denoise: Denoiser,
    u0: Tensor,
    u1: Tensor,
    steps: int,
    eta: float,
    sigma: float,
    step: TangentStep,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, RolloutInfo]:
    """Tangent-space extrapolation (paper Alg. 1), batched over videos.

    x_0 = u0 + eps_0, x_1 = u1 + eps_1; each step: v = x_{i-1} - x_{i-2}, p = `step`'s tangent direction of v at
    x_{i-1} (Alg. 1: V V^T v with V the top-k eigenvectors of J_D(x_{i-1}), `EigenProjection`; or A^m v,
    `PowerFilter`) rescaled to ||v|| per video, u_i = D(x_{i-1} + eta p), x_i = u_i + eps_i. Returns
    ((B, steps+2, C, H, W) = [u0, u1, u_2, ...], `RolloutInfo`). Noise comes from ``generator`` (a sequence gives
    each video its own stream, so a video's frames do not depend on its batch); the solver's random start
    vectors come from generators seeded from it, so the noise draws do not depend on the solver.
    """
    u0, u1 = u0.detach(), u1.detach()
    solver_gen = _child_generators(generator)
    x_prev = u0 + _noise(u0, sigma, generator)
    x_cur = u1 + _noise(u1, sigma, generator)
    guard, frames, infos, state = Divergence(u1), [u0, u1], [], None
    for i in range(steps):
        v = (x_cur - x_prev).flatten(1)
        p, state, info = step(denoise, x_cur, v, state, solver_gen, i == 0)
        p = _rescale(p, _norm(v))
        with torch.no_grad():
            u = denoise(x_cur + eta * p.view_as(x_cur)).detach()
        frames.append(u)
        u = guard(u, i + 2)
        x_prev, x_cur = x_cur, u + _noise(u, sigma, generator)
        infos.append(info)
    return guard.finish(torch.stack(frames, dim=1)), _info(guard, infos, u0)


@torch.no_grad()
def linear_rollout(
    denoise: Denoiser,
    u0: Tensor,
    u1: Tensor,
    steps: int,
    eta: float,
    sigma: float,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, RolloutInfo]:
    """Linear extrapolation in noisy space, then denoise (paper Alg. 2, the baseline), batched over videos.

    x_i = D(x_{i-1} + eta (x_{i-1} - x_{i-2})) + eps_i. Returns ((B, steps+2, C, H, W) = [u0, u1, u_2, ...],
    `RolloutInfo`) (clean given frames first; no clipping).
    """
    x_prev = u0 + _noise(u0, sigma, generator)
    x_cur = u1 + _noise(u1, sigma, generator)
    guard, frames = Divergence(u1), [u0, u1]
    for i in range(steps):
        u = denoise(x_cur + eta * (x_cur - x_prev))
        frames.append(u)
        u = guard(u, i + 2)
        x_prev, x_cur = x_cur, u + _noise(u, sigma, generator)
    return guard.finish(torch.stack(frames, dim=1)), RolloutInfo(guard.step)


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
) -> tuple[Tensor, RolloutInfo]:
    """Linear extrapolation in a latent space (paper Alg. 3, the VAE baseline), batched over videos.

    z_i from z_{i-1} + eta (z_{i-1} - z_{i-2}), u_i = decode(.). Alg. 3 leaves the next latent undefined; as
    in Alg. 2 (where x_i is rebuilt from the frame u_i) we take z_i = encode(u_i) (``reencode=True``);
    ``reencode=False`` keeps z_i = z_{i-1} + eta v_i (a straight line in latent space). Returns
    ((B, steps+2, C, H, W) = [u0, u1, u_2, ...], `RolloutInfo`) (no clipping).
    """
    z_prev, z_cur = encode(u0), encode(u1)
    guard, frames = Divergence(u1), [u0, u1]
    for i in range(steps):
        z_v = z_cur + eta * (z_cur - z_prev)
        u = decode(z_v).reshape(u0.shape).to(u0.dtype)
        frames.append(u)
        u = guard(u, i + 2)
        z_prev, z_cur = z_cur, (encode(u) if reencode else z_v)
    return guard.finish(torch.stack(frames, dim=1)), RolloutInfo(guard.step)


@autograd_enabled
def paced_rollout(
    denoise: Denoiser,
    u0: Tensor,
    u1: Tensor,
    steps: int,
    sigma: float,
    step: TangentStep | None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    *,
    eta: float = 1.0,
    gain: float = 0.5,
    velocity: str = "transport",
    substeps: int = 1,
) -> tuple[Tensor, RolloutInfo]:
    """Alg. 1 with its pace taken from the two given frames (not from the noise): each step moves the noisy frame
    by c_i s along the unit tangent direction d_i and denoises, s = eta ||u1 - u0|| (the given clean displacement),
    u_i = D(x_{i-1} + c_i s d_i), x_i = u_i + eps_i. d_i is `step`'s unit tangent direction at x_{i-1} of the
    velocity (`velocity`: "transport" the previous direction d_{i-1}, starting from u1 - u0; "clean" the last clean
    displacement u_{i-1} - u_{i-2}; "noisy" x_{i-1} - x_{i-2} as in Alg. 1), or that velocity itself when `step` is
    None (the linear baseline with the same pace). Transport keeps the direction when the video moves less per
    frame than the noise moves the denoised frame along the manifold, where a displacement's direction is lost.
    c_i holds the achieved pace at s: the step's own clean displacement ||D(x_{i-1} + c_i s d_i) - D(x_{i-1})|| (the
    difference cancels what the noise alone moves the denoised frame; its norm, the chord along the manifold, stays
    right where the manifold curves away from d_i) is compared with s and c_{i+1} = c_i (s / progress)^gain (per step
    within [1/2, 2], overall within [1/4, 4]; gain 0 keeps c = 1). `substeps` > 1 walks each frame's step as that
    many steps of s / substeps (each re-estimating the direction and denoising) and keeps the last frame. Returns
    ((B, steps+2, C, H, W), `RolloutInfo`)."""
    u0, u1 = u0.detach(), u1.detach()
    solver_gen = _child_generators(generator)
    x_prev = u0 + _noise(u0, sigma, generator)
    x_cur = u1 + _noise(u1, sigma, generator)
    target = eta * _norm(u1 - u0) / substeps  # (B, 1): the length of one substep
    scale = torch.ones_like(target)
    clean, u_prev = (u1 - u0).flatten(1), u1
    guard, frames, infos, state, d = Divergence(u1), [u0, u1], [], None, None
    for i in range(steps):
        for j in range(substeps):
            if velocity == "noisy":
                v = (x_cur - x_prev).flatten(1)
            else:  # the first transported direction is the given displacement's
                v = d if velocity == "transport" and d is not None else clean
            known = None  # D(x_{i-1}), where the tangent step has computed it
            if step is None:
                p = v
            else:
                p, state, info = step(denoise, x_cur, v, state, solver_gen, i == 0 and j == 0)
                infos.append(info)
                known = info.denoised
            d = _rescale(p, torch.ones_like(target))
            with torch.no_grad():
                moved = x_cur + (scale * target * d).view_as(x_cur)
                if not gain:
                    u, rest = denoise(moved).detach(), None
                elif known is not None:
                    u, rest = denoise(moved).detach(), known.view_as(x_cur)
                else:  # D(x_{i-1}) in the same batched call
                    both = denoise(torch.cat([moved, x_cur])).detach()
                    u, rest = both[: u0.shape[0]], both[u0.shape[0]:]
            if j == substeps - 1:
                frames.append(u)
                u = guard(u, i + 2)
            shift = (u - u_prev).flatten(1)
            if gain:
                # the step's own effect, D(x + c s d) - D(x): the noise alone moves the clean estimate along the
                # manifold too (its tangent part survives denoising), which would swamp a slow video's progress
                progress = _norm(u - rest)
                ratio = torch.where(progress > 0, target / progress.clamp_min(torch.finfo(u.dtype).tiny),
                                    torch.full_like(progress, 2.0))
                scale = (scale * ratio.clamp(0.5, 2.0) ** gain).clamp(0.25, 4.0)
            clean, u_prev = shift, u
            x_prev, x_cur = x_cur, u + _noise(u, sigma, generator)
    return guard.finish(torch.stack(frames, dim=1)), _info(guard, infos, u0)
