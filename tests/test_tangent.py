"""Tangent basis (paper Alg. 4 and the block solver) against known spectra and the dense Jacobian."""
import math

import pytest
import torch
from torch import nn

from extrapolation import subspace_sine, tangent_basis
from extrapolation.circle import CircleDenoiser


def linear_denoiser(n=200, seed=0):
    """D(x) = Q diag(lam) Q^T x on (B,1,1,n) 'images': top eigenvalues clustered near 1, like a denoiser."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    lam = torch.cat([torch.tensor([1.0, 0.98, 0.96, 0.94, 0.9, 0.88]), torch.linspace(0.8, 0.0, n - 6)]).double()
    m = q @ torch.diag(lam) @ q.T
    return (lambda x: (x.reshape(x.shape[0], -1) @ m.T).reshape(x.shape)), q, lam


@pytest.mark.parametrize(
    "method,kw,bound",
    [("exact", {}, 1e-10), ("block", dict(tol=1e-7), 1e-4), ("subspace", dict(tol=1e-7), 1e-4), ("power", dict(tol=1e-7), 1e-4)],
)
def test_linear_operator_known_subspace(method, kw, bound):
    k, n = 4, 200
    den, q, lam = linear_denoiser(n)
    x = torch.randn(2, 1, 1, n, dtype=torch.float64)
    basis, info = tangent_basis(den, x, k, method, return_info=True, generator=torch.Generator().manual_seed(0), **kw)
    assert basis.shape == (2, k, n) and basis.dtype == torch.float64
    torch.testing.assert_close(basis @ basis.transpose(1, 2), torch.eye(k, dtype=torch.float64).expand(2, k, k))
    sine = subspace_sine(q[:, :k].T.expand(2, k, n), basis).max().item()
    print(f"{method}: sine {sine:.2e}, applications {info.applications}, iterations {info.iterations}")
    assert sine < bound
    torch.testing.assert_close(info.eigenvalues, lam[:k].expand(2, k), atol=1e-6, rtol=0)
    assert info.applications > 0


def test_nonsymmetric_and_warm_start():
    k, n = 3, 120
    g = torch.Generator().manual_seed(1)
    # Non-normal operator with real spectrum: similarity transform of a diagonal.
    s = torch.eye(n, dtype=torch.float64) + 0.1 * torch.randn(n, n, generator=g, dtype=torch.float64)
    lam = torch.cat([torch.tensor([1.0, 0.95, 0.9]), torch.linspace(0.6, 0, n - 3)]).double()
    m = s @ torch.diag(lam) @ torch.linalg.inv(s)
    den = lambda x: (x.reshape(x.shape[0], -1) @ m.T).reshape(x.shape)  # noqa: E731
    x = torch.randn(1, 1, 1, n, dtype=torch.float64)
    exact, ie = tangent_basis(den, x, k, "exact", symmetric=False, return_info=True)
    block, ib = tangent_basis(den, x, k, "block", symmetric=False, tol=1e-9, max_iters=500, return_info=True)
    true = torch.linalg.qr(s[:, :k]).Q.T.unsqueeze(0)  # right eigenvectors span
    assert subspace_sine(true, exact).item() < 1e-8
    assert subspace_sine(true, block).item() < 1e-4
    torch.testing.assert_close(ib.eigenvalues, lam[:k].unsqueeze(0), atol=1e-6, rtol=0)
    # Warm start from the answer: converges at once.
    _, iw = tangent_basis(den, x, k, "block", symmetric=False, tol=1e-6, init=exact, return_info=True)
    assert iw.iterations <= 3 < ib.iterations


def test_circle_mmse_tangent():
    den = CircleDenoiser(n=32, sigma=0.05)
    theta = 0.7
    tangent = (torch.tensor([[-math.sin(theta), math.cos(theta)]], dtype=torch.float64) @ den.plane).unsqueeze(0)
    # On the circle the Jacobian is Cov(u|x)/sigma^2: eigenvalue ~1 along the tangent.
    basis, info = tangent_basis(den, den.point(theta), 1, "exact", return_info=True)
    assert subspace_sine(tangent, basis).item() < 1e-6 and 0.8 < info.eigenvalues.item() < 1.1
    # Alg. 1 evaluates at noisy points. (Alg. 4's start vector v_0 = x is exactly normal to the circle at a
    # clean point, so "power" cannot leave the normal space there.)
    x = den.point(theta) + 0.05 * torch.randn(1, 1, 1, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = tangent_basis(den, x, 1, "exact")
    assert subspace_sine(tangent, ref).item() < 0.1
    # Here x is exactly orthogonal to the top eigenvector (its in-plane part is radial, the centre and the
    # noise's off-plane part are normal to the plane), so Alg. 4 needs another start vector than v_0 = x.
    start = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for method, init in (("block", None), ("power", start)):
        basis, info = tangent_basis(den, x, 1, method, tol=1e-7, init=init, return_info=True)
        assert subspace_sine(ref, basis).item() < 1e-3, method
        assert 0.5 < info.eigenvalues.item() < 1.1


class SmallConvNet(nn.Module):
    """Predicts the noise; a few convs with a down/up path, no normalisation."""

    def __init__(self, width=8):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.out = nn.Conv2d(2 * width, 1, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        u = torch.relu(self.up(torch.relu(self.down(h))))
        return self.out(torch.cat([h, u], 1))


def test_conv_net_block_matches_exact():
    torch.manual_seed(0)
    net = SmallConvNet().double().eval()
    den = lambda x: x - net(x)  # noqa: E731
    x = torch.rand(2, 1, 20, 20, dtype=torch.float64)
    exact, ie = tangent_basis(den, x, 8, "exact", return_info=True)
    # Compare on the k (<= 6) with the widest relative eigen-gap: the subspace is well defined there.
    ev = ie.eigenvalues
    gaps = ((ev[:, :-1] - ev[:, 1:]) / ev[:, :1].abs()).min(0).values[:6]
    k = int(gaps.argmax()) + 1
    block, ib = tangent_basis(den, x, k, "block", tol=1e-8, max_iters=300, return_info=True)
    sine = subspace_sine(exact[:, :k], block).max().item()
    print(f"k={k}, gap {gaps[k - 1]:.3f}, sine {sine:.1e}, applications {ib.applications} vs exact {ie.applications}")
    assert sine < 1e-4
    torch.testing.assert_close(ib.eigenvalues, ev[:, :k], atol=1e-6, rtol=0)


def test_float32_and_inference_mode():
    torch.manual_seed(0)
    net = SmallConvNet().eval()
    den = lambda x: x - net(x)  # noqa: E731
    with torch.inference_mode():
        x = torch.rand(2, 1, 20, 20)
        for method in ("block", "power", "exact"):
            basis = tangent_basis(den, x, 2, method, max_iters=20)
            assert basis.shape == (2, 2, 400) and basis.dtype == torch.float32
            assert torch.isfinite(basis).all()


def test_bad_arguments():
    den, _, _ = linear_denoiser(20)
    x = torch.randn(1, 1, 1, 20, dtype=torch.float64)
    with pytest.raises(ValueError):
        tangent_basis(den, x, 2, "lanczos")
    with pytest.raises(ValueError):
        tangent_basis(den, x, 0)
