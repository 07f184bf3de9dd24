"""Tangent rollouts compute no forward pass twice: the same frames as a literal reading of the steps (a reference
written out below, one pass per quantity), and the denoiser calls per step counted."""
import pytest
import torch

from extrapolation import PowerFilter, linear_rollout, tangent_rollout
from extrapolation.circle import CircleDenoiser
from extrapolation.rollouts import _child_generators, _noise, _norm, _rescale, paced_rollout
from extrapolation.tangent import FD_STEP

B, STEPS, SIGMA = 4, 6, 0.05


class Counted:
    """A denoiser that records the number of images of each call."""

    def __init__(self, denoise):
        self.denoise, self.calls = denoise, []

    def __call__(self, x):
        self.calls.append(x.shape[0])
        return self.denoise(x)


def _reference_filter(den, x, v, power, symmetric):
    """p = A^power v (or J^power v), each quantity by its own pass: D(x), one forward difference per power, VJPs."""
    flat = x.reshape(x.shape[0], -1)
    with torch.no_grad():
        base = den(x).reshape_as(flat)
    p = v
    for _ in range(power):
        n = p.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            jp = (den(x + (FD_STEP * p / n).view_as(x)).reshape_as(flat) - base) * n / FD_STEP
        if symmetric:
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = den(xg)
                (jtp,) = torch.autograd.grad(out, xg, p.view_as(x))
            jp = 0.5 * (jp + jtp.reshape_as(flat))
        p = jp
    return p, base


def _reference_tangent(den, u0, u1, eta, power, symmetric, gens):
    _child_generators(gens)  # the library draws the solver's seeds first
    x_prev, x_cur = u0 + _noise(u0, SIGMA, gens), u1 + _noise(u1, SIGMA, gens)
    frames = [u0, u1]
    for _ in range(STEPS):
        v = (x_cur - x_prev).flatten(1)
        p, _ = _reference_filter(den, x_cur, v, power, symmetric)
        p = _rescale(p, _norm(v))
        with torch.no_grad():
            u = den(x_cur + eta * p.view_as(x_cur))
        frames.append(u)
        x_prev, x_cur = x_cur, u + _noise(u, SIGMA, gens)
    return torch.stack(frames, 1)


@pytest.mark.parametrize("symmetric", [True, False])
def test_alg1_filter_same_frames_and_calls(symmetric):
    den = CircleDenoiser(n=64, sigma=0.05)
    u0, u1 = den.point([0.0, 0.5, 1.0, 2.0]), den.point([0.1, 0.6, 1.1, 2.1])
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(B)]  # noqa: E731
    ref = _reference_tangent(den, u0, u1, 0.5, 2, symmetric, gens())
    counted = Counted(den)
    got, info = tangent_rollout(counted, u0, u1, STEPS, 0.5, SIGMA, PowerFilter(power=2, symmetric=symmetric), gens())
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    # per step: A^2 v = the VJPs' primal pass, two forward differences, the step's own pass (4 calls of B);
    # J^2 v = D(x) with the first difference in one call of 2B, the second difference, the step's pass
    per_step = [B, B, B, B] if symmetric else [2 * B, B, B]
    assert counted.calls == per_step * STEPS
    assert info.applications == [4 if symmetric else 2] * STEPS


def _old_paced(den, u0, u1, steps, sigma, step, gens, gain=0.5, substeps=1, eta=1.0):
    """`paced_rollout` (transported velocity) as it was before the operator handed D(x) over: the progress check
    denoised x_{i-1} again, batched with the step's own pass."""
    solver_gen = _child_generators(gens)
    x_prev = u0 + _noise(u0, sigma, gens)
    x_cur = u1 + _noise(u1, sigma, gens)
    target = eta * _norm(u1 - u0) / substeps
    scale = torch.ones_like(target)
    u_prev, frames, state, d = u1, [u0, u1], None, None
    for i in range(steps):
        for j in range(substeps):
            v = d if d is not None else (u1 - u0).flatten(1)
            p, state, _ = step(den, x_cur, v, state, solver_gen, i == 0 and j == 0)
            d = _rescale(p, torch.ones_like(target))
            with torch.no_grad():
                both = den(torch.cat([x_cur + (scale * target * d).view_as(x_cur), x_cur]))
            u, rest = both[: u0.shape[0]], both[u0.shape[0]:]
            if j == substeps - 1:
                frames.append(u)
            progress = _norm(u - rest)
            scale = (scale * (target / progress).clamp(0.5, 2.0) ** gain).clamp(0.25, 4.0)
            u_prev = u
            x_prev, x_cur = x_cur, u + _noise(u, sigma, gens)
    del x_prev, u_prev
    return torch.stack(frames, 1)


@pytest.mark.parametrize("symmetric,substeps", [(True, 2), (False, 1)])
def test_paced_reuses_the_steps_denoised_frame(symmetric, substeps):
    den = CircleDenoiser(n=64, sigma=0.05)
    u0, u1 = den.point([0.0, 0.5, 1.0, 2.0]), den.point([0.1, 0.6, 1.1, 2.1])
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(B)]  # noqa: E731
    step = PowerFilter(power=2, symmetric=symmetric)
    ref = _old_paced(den, u0, u1, STEPS, SIGMA, step, gens(), substeps=substeps)
    counted = Counted(den)
    got, _ = paced_rollout(counted, u0, u1, STEPS, SIGMA, step, gens(), substeps=substeps)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    # per substep: 4 passes of B images (before: 5, D(x) twice)
    per_sub = [B, B, B, B] if symmetric else [2 * B, B, B]
    assert counted.calls == per_sub * substeps * STEPS
    # the baseline at the same pace still denoises x_{i-1} itself, in one call with the step's pass
    counted = Counted(den)
    paced_rollout(counted, u0, u1, STEPS, SIGMA, None, gens(), substeps=substeps, velocity="clean")
    assert counted.calls == [2 * B] * substeps * STEPS
    # without the pace controller nothing is denoised for the progress check
    counted = Counted(den)
    paced_rollout(counted, u0, u1, STEPS, SIGMA, None, gens(), gain=0.0, velocity="clean")
    assert counted.calls == [B] * STEPS


def test_linear_is_one_pass_per_step():
    den = CircleDenoiser(n=64, sigma=0.05)
    counted = Counted(den)
    linear_rollout(counted, den.point([0.0] * B), den.point([0.1] * B), STEPS, 1.0, SIGMA)
    assert counted.calls == [B] * STEPS
