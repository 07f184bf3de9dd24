"""Rollouts (paper Alg. 1-3): shapes, seeding, inference mode, dtype, edge cases, and the circle of Fig. 3."""
import math

import pytest
import torch
from torch import nn

from extrapolation import EigenProjection, latent_rollout, linear_rollout, tangent_rollout
from extrapolation.circle import CircleDenoiser
from extrapolation.rollouts import DIVERGED_ABOVE


def make_denoiser(dtype=torch.float32):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).to(dtype).eval()
    return lambda x: x - 0.5 * net(x)


def frames(dtype=torch.float32, b=2):
    g = torch.Generator().manual_seed(1)
    u0 = torch.rand(b, 1, 12, 12, generator=g, dtype=dtype)
    return u0, torch.roll(u0, 1, dims=-1)


def rollouts(den, u0, u1, steps, seed, **kw):
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    return {
        "tangent": tangent_rollout(den, u0, u1, steps, 0.5, 0.1, EigenProjection(k=2, max_iters=10, **kw), g())[0],
        "linear": linear_rollout(den, u0, u1, steps, 0.5, 0.1, generator=g())[0],
    }


def test_shapes_first_frames_and_seeding():
    den, (u0, u1) = make_denoiser(), frames()
    a, b, c = rollouts(den, u0, u1, 3, 0), rollouts(den, u0, u1, 3, 0), rollouts(den, u0, u1, 3, 1)
    for name in a:
        assert a[name].shape == (2, 5, 1, 12, 12) and a[name].dtype == torch.float32
        assert torch.equal(a[name][:, 0], u0) and torch.equal(a[name][:, 1], u1)
        assert torch.equal(a[name], b[name]), name
        assert not torch.allclose(a[name][:, 2:], c[name][:, 2:]), name
        assert torch.isfinite(a[name]).all()


def test_inference_mode_and_float64():
    den, (u0, u1) = make_denoiser(torch.float64), frames(torch.float64)
    ref = rollouts(den, u0, u1, 2, 0)
    with torch.inference_mode():
        out = rollouts(den, u0.clone(), u1.clone(), 2, 0)
    for name in ref:
        assert out[name].dtype == torch.float64
        torch.testing.assert_close(out[name], ref[name])


def test_power_method_and_info():
    den, (u0, u1) = make_denoiser(), frames()
    out, info = tangent_rollout(den, u0, u1, 2, 0.5, 0.1, EigenProjection(k=2, solver="power", max_iters=5),
                                torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 1, 12, 12)
    assert info.eigenvalues.shape == (2, 2, 2) and len(info.applications) == 2
    assert all(a > 0 for a in info.applications)
    assert info.diverged.tolist() == [-1, -1]


def test_eta_zero_and_zero_velocity():
    den, (u0, u1) = make_denoiser(torch.float64), frames(torch.float64)
    # sigma = 0, eta = 0: both rollouts iterate the denoiser from u1.
    t = tangent_rollout(den, u0, u1, 3, 0.0, 0.0, EigenProjection(k=2))[0]
    lin = linear_rollout(den, u0, u1, 3, 0.0, 0.0)[0]
    torch.testing.assert_close(t, lin)
    torch.testing.assert_close(t[:, 2], den(u1))
    # u0 == u1 and no noise: v = 0, so p = 0 (no division by zero) and the frame is D(u1).
    t = tangent_rollout(den, u1, u1, 2, 1.0, 0.0, EigenProjection(k=2))[0]
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t[:, 2], den(u1))


def test_latent_rollout_is_linear_in_latent_space():
    u0 = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    u1 = u0 + 0.1
    enc, dec = (lambda u: u.flatten(1)), (lambda z: z.reshape(-1, 1, 4, 4))
    for reencode in (True, False):
        out = latent_rollout(enc, dec, u0, u1, 3, 1.0, reencode=reencode)[0]
        assert out.shape == (2, 5, 1, 4, 4)
        torch.testing.assert_close(out[:, :, 0, 0, 0], 0.1 * torch.arange(5.0, dtype=torch.float64).expand(2, 5))


def test_circle_tangent_goes_around_linear_stalls():
    """Paper Fig. 3 in miniature: exact MMSE denoiser of a circle in R^64, k = 1."""
    den = CircleDenoiser(n=64, sigma=0.05)
    u0, u1 = den.point([0.0, 0.0]), den.point([0.1, 0.1])  # two videos, different noise
    g = torch.Generator().manual_seed(0)
    tan = tangent_rollout(den, u0, u1, 30, 0.3, 0.05, EigenProjection(k=1), g)[0]
    lin = linear_rollout(den, u0, u1, 30, 0.3, 0.05, generator=torch.Generator().manual_seed(0))[0]
    for v in range(2):
        ang_t, rad_t, off_t = den.angle_radius(tan[v])
        ang_l, _, _ = den.angle_radius(lin[v])
        span_t = math.degrees(ang_t.max() - ang_t.min())
        span_l = math.degrees(ang_l.max() - ang_l.min())
        print(f"video {v}: tangent covers {span_t:.0f} deg, linear {span_l:.0f} deg")
        assert span_t > 90 and span_l < span_t / 2
        assert (rad_t - 1).abs().max() < 0.01 and off_t.max() < 0.01  # stays on the circle


def test_track_iters_caps_later_steps_and_keeps_the_circle():
    """Subspace tracking: first step solved to tolerance, later steps one LOBPCG iteration (2 block applications)."""
    den, (u0, u1) = make_denoiser(), frames()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    solve = dict(k=2, tol=1e-6, max_iters=100)  # tight: every step iterates
    full, info_full = tangent_rollout(den, u0, u1, 6, 0.5, 0.1, EigenProjection(**solve), g())
    tracked, info = tangent_rollout(den, u0, u1, 6, 0.5, 0.1, EigenProjection(track_iters=1, **solve), g())
    m = 2 + 2  # k + default oversample
    assert info.applications[0] == info_full.applications[0] > 4 * m  # the first step is solved to tolerance
    torch.testing.assert_close(tracked[:, :3], full[:, :3])
    # one iteration = A X (warm start) + A W, each a JVP + a VJP per vector
    assert info.applications[1:] == [4 * m] * 5 and info.iterations[1:] == [1] * 5
    assert min(info_full.applications[1:]) > 4 * m
    # On the circle (Fig. 3) the tracked rollout still goes around and stays on the manifold.
    den = CircleDenoiser(n=64, sigma=0.05)
    u0, u1 = den.point([0.0, 0.0]), den.point([0.1, 0.1])
    tracked = tangent_rollout(den, u0, u1, 30, 0.3, 0.05, EigenProjection(k=1, track_iters=1), g())[0]
    for v in range(2):
        ang, rad, off = den.angle_radius(tracked[v])
        assert math.degrees(ang.max() - ang.min()) > 90
        assert (rad - 1).abs().max() < 0.01 and off.max() < 0.01
    with pytest.raises(ValueError, match="track_iters"):
        EigenProjection(k=1, track_iters=0)


class Exploding:
    """A denoiser that is the identity until its `after`-th call, then returns inf for the videos in `videos`."""

    def __init__(self, after: int, videos=(0,), value=float("inf")):
        self.calls, self.after, self.videos, self.value = 0, after, list(videos), value

    def __call__(self, x):
        self.calls += 1
        out = x.clone()
        if self.calls > self.after:
            out[self.videos] = self.value
        return out


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10 * DIVERGED_ABOVE])
def test_divergence_marks_the_frame_and_spares_the_other_videos(value):
    u0, u1 = frames(b=3)
    # linear: one denoiser call per step, so the 3rd call makes frame 4 (frames 0, 1 are given)
    out, info = linear_rollout(Exploding(2, [1], value), u0, u1, 5, 0.5, 0.0)
    assert info.diverged.tolist() == [-1, 4, -1]
    assert torch.isfinite(out[[0, 2]]).all() and torch.isfinite(out[1, :4]).all()
    assert torch.isnan(out[1, 4:]).all()  # the diverged frame and every later one
    ref, _ = linear_rollout(Exploding(99), u0, u1, 5, 0.5, 0.0)
    torch.testing.assert_close(out[[0, 2]], ref[[0, 2]])  # the other videos as if alone


def test_divergence_in_a_batched_eigen_solver_stays_per_video():
    """A diverged video continues from its last sane frame, so the block solver (eigh on the whole batch) never
    sees a non-finite state and the other videos are untouched."""
    den = make_denoiser()
    u0, u1 = frames(b=3)

    class Bad:
        def __init__(self):
            self.step = 0

        def __call__(self, x):
            out = den(x)
            return out

    g = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    step = EigenProjection(k=2, max_iters=10)
    ref, _ = tangent_rollout(den, u0, u1, 4, 0.5, 0.1, step, g())
    big = u1.clone()
    big[1] = 1e6  # video 1 starts far outside any sane range: its first generated frame diverges
    out, info = tangent_rollout(den, u0, big, 4, 0.5, 0.1, step, g())
    assert info.diverged.tolist() == [-1, 2, -1]
    assert torch.isnan(out[1, 2:]).all()
    torch.testing.assert_close(out[[0, 2]], ref[[0, 2]], atol=1e-4, rtol=1e-4)


def test_paced_rollout_follows_the_given_pace_on_the_circle_where_alg1_does_not():
    """On the exact circle denoiser, given steps 4x apart: Alg. 1 (A^2 v) runs at one pace whatever the given frames
    say (set by sigma and eta); the paced variant moves at the given pace (mean over 24 noise draws)."""
    from extrapolation import PowerFilter
    from extrapolation.rollouts import paced_rollout

    den, b = CircleDenoiser(n=64, sigma=0.05), 24
    paced, paper = [], []
    for given in (0.05, 0.1, 0.2):
        u0, u1 = den.point([0.0] * b), den.point([given] * b)
        gens = lambda: [torch.Generator().manual_seed(s) for s in range(b)]  # noqa: E731
        for out, pace in ((paced, paced_rollout(den, u0, u1, 20, 0.05, PowerFilter(), gens())[0]),
                          (paper, tangent_rollout(den, u0, u1, 20, 0.3, 0.05, PowerFilter(), gens())[0])):
            ang = den.angle_radius(pace)[0]
            out.append(((ang[:, -1] - ang[:, 1]) / 19 / given).mean().item())
    print("paced", paced, "paper", paper)
    assert all(0.85 < r < 1.15 for r in paced)
    # Alg. 1's angular speed (ratio x given step) grows by under 2x while the given step grows 4x
    assert paper[2] * 0.2 < 2 * paper[0] * 0.05


def test_paced_substeps_keep_the_pace_and_split_the_step():
    """`substeps=3` walks each frame's step in three: the pace per generated frame is still the given one, and
    without noise or controller a frame's three substeps cover what one step would."""
    from extrapolation import PowerFilter
    from extrapolation.methods import SettingsError, TangentPaced
    from extrapolation.rollouts import paced_rollout

    den, b, given = CircleDenoiser(n=64, sigma=0.05), 24, 0.2
    u0, u1 = den.point([0.0] * b), den.point([given] * b)
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(b)]  # noqa: E731
    out, _ = paced_rollout(den, u0, u1, 12, 0.05, PowerFilter(), gens(), substeps=3)
    assert out.shape[1] == 14
    ang = den.angle_radius(out)[0]
    pace = ((ang[:, -1] - ang[:, 1]) / 11 / given).mean().item()
    assert 0.85 < pace < 1.15, pace
    one, _ = paced_rollout(den, u0, u1, 1, 0.0, PowerFilter(), gens(), gain=0.0, substeps=1)
    third, _ = paced_rollout(den, u0, u1, 1, 0.0, PowerFilter(), gens(), gain=0.0, substeps=3)
    step_one = (den.angle_radius(one)[0][:, 2] - given).mean().item()
    step_third = (den.angle_radius(third)[0][:, 2] - given).mean().item()
    assert step_one == pytest.approx(given, rel=0.1) and step_third == pytest.approx(given, rel=0.1)
    with pytest.raises(SettingsError, match="substeps must be a positive integer"):
        TangentPaced(steps=4, sigma=0.1, substeps=0)
