"""Fast tangent steps: forward-difference Jacobian products, the eigenvector-free filter, per-image
streams and per-image solver stopping (batch independence)."""
import math

import numpy as np
import pytest
import torch

from extrapolation import (
    EigenProjection,
    PowerFilter,
    linear_rollout,
    subspace_sine,
    tangent_basis,
    tangent_filter,
    tangent_rollout,
)
from extrapolation.circle import CircleDenoiser
from extrapolation.tangent import FD_STEP, _Operator
from networks import UNet


def unet_denoiser(seed=0, size=20):
    torch.manual_seed(seed)
    net = UNet(in_channels=1, widths=[8, 16, 32], mid_width=32).eval()
    return lambda x: x - net(x)


def test_forward_difference_matches_jvp_on_the_unet():
    """J q by (D(x + h q/|q|) - D(x)) |q| / h against torch.func.jvp on the UNet, any scale of q.

    float64 with a tiny h: exact (a ReLU network is piecewise linear). float32 at the default h: within 10%
    (a secant across ReLU kinks; 5% measured on a trained rotated-MNIST UNet, docs/benchmarks.md)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 20, 20, generator=g) + 0.1 * torch.randn(3, 1, 20, 20, generator=g)
    cols = torch.randn(3, 400, 5, generator=g) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 300.0])
    for dtype, h, bound in ((torch.float64, 1e-6, 1e-6), (torch.float32, FD_STEP, 0.1)):
        net = UNet(in_channels=1, widths=[8, 16, 32], mid_width=32).to(dtype).eval()
        den = lambda x, net=net: x - net(x)  # noqa: E731
        for symmetric in (False, True):
            xs, cs = x.to(dtype), cols.to(dtype)
            ad = _Operator(den, xs, symmetric, jacobian="autodiff")(cs)
            fd = _Operator(den, xs, symmetric, jacobian="fd", fd_step=h)(cs)
            rel = ((fd - ad).norm(dim=1) / ad.norm(dim=1)).max().item()
            print(f"{dtype}, h={h}, symmetric={symmetric}: max relative error {rel:.1e}")
            assert rel < bound
    zero = _Operator(den, x, False, jacobian="fd")(torch.zeros(3, 400, 1))
    assert torch.equal(zero, torch.zeros_like(zero))


def test_filter_is_a_matrix_power_of_the_symmetric_part():
    n = 50
    g = torch.Generator().manual_seed(0)
    m = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    den = lambda x: (x.reshape(x.shape[0], -1) @ m.T).reshape(x.shape)  # noqa: E731
    x = torch.randn(2, 1, 1, n, generator=g, dtype=torch.float64)
    v = torch.randn(2, n, generator=g, dtype=torch.float64)
    a = 0.5 * (m + m.T)
    for symmetric, op in ((True, a), (False, m)):
        for power in (1, 2, 3):
            want = v @ torch.linalg.matrix_power(op, power).T
            got = tangent_filter(den, x, v, power, symmetric=symmetric, jacobian="autodiff")
            torch.testing.assert_close(got, want)
            got_fd = tangent_filter(den, x, v, power, symmetric=symmetric, jacobian="fd")
            torch.testing.assert_close(got_fd, want, rtol=1e-6, atol=1e-8)  # a linear D: differences are exact
    with pytest.raises(ValueError, match="power"):
        tangent_filter(den, x, v, 0)


SOLVERS = {
    "block": EigenProjection(k=1),
    "block, forward differences": EigenProjection(k=1, jacobian="fd"),
    "subspace, fd, 1 iteration per step": EigenProjection(k=1, solver="subspace", jacobian="fd", track_iters=1),
    "subspace on J, fd, 2 iterations": EigenProjection(k=1, solver="subspace", jacobian="fd", symmetric=False,
                                                       track_iters=2),
    "filter A^2 v, fd": PowerFilter(power=2),
    "filter J^2 v, fd": PowerFilter(power=2, symmetric=False),
    "filter A^2 v, jvp": PowerFilter(power=2, jacobian="autodiff"),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_circle_goes_around_with_every_solver(name):
    """Paper Fig. 3 on the exact MMSE denoiser of a circle: > 90 degrees, monotone, on the circle; linear stalls."""
    den = CircleDenoiser(n=64, sigma=0.05)
    u0, u1 = den.point([0.0, 0.0]), den.point([0.1, 0.1])
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    tan = tangent_rollout(den, u0, u1, 30, 0.3, 0.05, SOLVERS[name], gens)[0]
    lin = linear_rollout(den, u0, u1, 30, 0.3, 0.05, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])[0]
    for v in range(2):
        ang, rad, off = den.angle_radius(tan[v])
        ang_l, _, _ = den.angle_radius(lin[v])
        span, span_l = math.degrees(ang[-1] - ang[0]), math.degrees(ang_l.max() - ang_l.min())
        print(f"{name}, video {v}: tangent {span:.0f} deg, linear {span_l:.0f} deg")
        assert span > 90 and span_l < span / 2
        assert (np.diff(ang.numpy()) > -1e-3).all()  # monotone: never turns back
        assert (rad - 1).abs().max() < 0.01 and off.max() < 0.01


@pytest.mark.parametrize("name", ["block", "filter A^2 v, fd"])
def test_same_seed_same_frames(name):
    den = unet_denoiser()
    g = torch.Generator().manual_seed(3)
    u0 = torch.rand(2, 1, 20, 20, generator=g)
    u1 = torch.roll(u0, 1, dims=-1)
    step = SOLVERS[name] if name != "block" else EigenProjection(k=2)
    run = lambda s: tangent_rollout(den, u0, u1, 3, 0.5, 0.1, step, torch.Generator().manual_seed(s))[0]  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.allclose(a[:, 2:], c[:, 2:])


def test_block_solver_stops_each_image_on_its_own():
    """Per-image generators + per-image stopping: an image's basis is the same alone and inside a batch."""
    den = unet_denoiser()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 20, 20, generator=g) + 0.1 * torch.randn(4, 1, 20, 20, generator=g)
    gens = lambda idx: [torch.Generator().manual_seed(100 + i) for i in idx]  # noqa: E731
    batch, info = tangent_basis(den, x, 3, "block", generator=gens(range(4)), tol=1e-3, return_info=True)
    for i in range(4):
        alone = tangent_basis(den, x[i:i + 1], 3, "block", generator=gens([i]), tol=1e-3)
        assert subspace_sine(alone, batch[i:i + 1]).item() < 1e-4
