"""Top-k eigenvectors of a denoiser's Jacobian: the tangent space of the learned manifold (paper Alg. 4, sec. 2.3).

Shapes: images ``x`` are ``(B, C, H, W)``; bases are returned as ``(B, k, N)`` orthonormal rows with
``N = C*H*W``. Internally blocks are kept as columns ``(B, N, m)``. Each image has its own Jacobian:
the denoiser is applied to the whole batch, so the network must treat images independently (eval mode,
no BatchNorm in train mode).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

Denoiser = Callable[[Tensor], Tensor]

METHODS = ("block", "subspace", "power", "exact")
JACOBIANS = ("autodiff", "fd")
# Forward-difference step for a unit direction, in units of a [0, 1] image (a 20x20 pixel moves ~5e-4). On a
# ReLU UNet the difference is a secant across kinks: 5% from the JVP at 1e-2, 2% at 1e-3, float32 rounding
# takes over below 1e-4 (docs/benchmarks.md); 1e-2 keeps rounding negligible for any network scale.
FD_STEP = 1e-2
# Defaults measured with benchmarks/bench_tangent.py. Block tol is a relative residual (backward error):
# the Ritz vectors are exact eigenvectors of J + E with ||E|| <= tol ||J||, far below a trained network's own
# asymmetry ||J - J^T|| / ||J|| (~0.9 at noisy points) and enough for rollouts (1e-3 doubles the cost).
# Oversampling 2 gains accuracy at clustered spectra for little cost at k = 4 (0 is cheapest at k = 1).
DEFAULT_TOL = {"block": 1e-2, "subspace": 1e-2, "power": 1e-4, "exact": 0.0}
DEFAULT_MAX_ITERS = {"block": 100, "subspace": 300, "power": 1000, "exact": 0}
DEFAULT_OVERSAMPLE = 2
_RESTART_EVERY = 25  # LOBPCG iterations between explicit re-applications of A (float32 drift)


class TangentInfo(NamedTuple):
    """Diagnostics of one `tangent_basis` call."""

    eigenvalues: Tensor  # (B, k) Ritz values / Rayleigh quotients, descending (real parts if non-symmetric)
    applications: int  # operator applications per image: a JVP counts 1, a VJP counts 1
    iterations: int
    block: Tensor | None = None  # (B, m, N) all m = k + oversample Ritz vectors (block/subspace): a warm start
    denoised: Tensor | None = None  # D(x) (B, N) where the operator computed it on the way


def autograd_enabled(fn):
    """Run `fn` with autograd usable even when called under torch.inference_mode (Lightning val/test)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            # Inference tensors cannot enter autograd: clone them out of inference mode.
            args = tuple(a.clone() if isinstance(a, Tensor) and a.is_inference() else a for a in args)
            kwargs = {k: v.clone() if isinstance(v, Tensor) and v.is_inference() else v for k, v in kwargs.items()}
            return fn(*args, **kwargs)

    return wrapper


def subspace_sine(u: Tensor, v: Tensor) -> Tensor:
    """Sine of the largest principal angle between the row spans of u (B,k,N) and v (B,k',N); orthonormal rows."""
    u, v = u.transpose(-1, -2), v.transpose(-1, -2)
    r = v - u @ (u.transpose(-1, -2) @ v)
    return torch.linalg.matrix_norm(r, ord=2).clamp(max=1.0)


def randn_like_batch(shape, x: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """Standard normal draws of `shape` (leading dim = batch). A sequence of generators gives image b its own
    stream (``generator[b]``): then an image's draws do not depend on the batch it sits in."""
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else x.device
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=x.dtype, device=g.device)
                        for g in generator]).to(x.device)



def _orth(a: Tensor) -> Tensor:
    return torch.linalg.qr(a).Q


def _orth_keep_sign(a: Tensor) -> Tensor:
    """QR that keeps each column's orientation (a is already nearly orthonormal)."""
    q, r = torch.linalg.qr(a)
    return q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)


def _real_span(z: Tensor, k: int) -> Tensor:
    """Orthonormal real basis (B,N,k) of the span of complex columns z (conjugate pairs give Re and Im)."""
    if not z.is_complex():
        return _orth(z)
    w = torch.cat([z.real, z.imag], dim=-1)
    return torch.linalg.svd(w, full_matrices=False).U[..., :k]


def _top_eig(h: Tensor, symmetric: bool):
    """Eigen-decomposition of small (B,m,m) matrices sorted by descending (real part of) eigenvalue."""
    if symmetric:
        theta, y = torch.linalg.eigh(0.5 * (h + h.transpose(-1, -2)))
        return theta.flip(-1), y.flip(-1)
    theta, y = torch.linalg.eig(h)
    order = theta.real.argsort(dim=-1, descending=True)
    theta = theta.gather(-1, order)
    y = y.gather(-1, order.unsqueeze(-2).expand_as(y))
    return theta, y


class _Operator:
    """Matrix-free per-image Jacobian of `denoise` at x (or its symmetric part); counts applications.

    ``jacobian="autodiff"``: J q by `torch.func.jvp` (about 3 forward passes' work); ``"fd"``: J q by a forward
    difference (D(x + h q/|q|) - D(x)) |q| / h, one batched forward. J^T q is always one VJP, reusing a single
    primal pass (whose output is also the forward difference's D(x)).
    """

    def __init__(self, denoise: Denoiser, x: Tensor, symmetric: bool, chunk_size: int | None = None,
                 jacobian: str = "autodiff", fd_step: float = FD_STEP):
        if jacobian not in JACOBIANS:
            raise ValueError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
        self.shape, self.B = x.shape, x.shape[0]
        self.symmetric, self.chunk_size = symmetric, chunk_size
        self.jacobian, self.fd_step = jacobian, float(fd_step)
        self.applications = 0
        self._f, self._x = denoise, x
        self._base = None  # D(x) (B, N): from the VJPs' primal pass, else from the first forward difference's call
        if symmetric:
            # One primal pass with saved activations, reused by every VJP of the solve.
            base, self._vjp_fn = torch.func.vjp(denoise, x)
            self._base = base.detach().reshape(self.B, -1)

    @property
    def denoised(self) -> Tensor | None:
        """D(x) (B, N) where the operator has computed it (a rollout reuses it), else None."""
        return self._base

    def _jvp1(self, t: Tensor) -> Tensor:
        return torch.func.jvp(self._f, (self._x,), (t.reshape(self.shape),))[1].reshape(self.B, -1)

    def _vjp1(self, t: Tensor) -> Tensor:
        return self._vjp_fn(t.reshape(self.shape))[0].reshape(self.B, -1)

    def _jvp_fd(self, t: Tensor) -> Tensor:
        """(m, B, N) -> (m, B, N) forward differences, all m*B perturbed images in one forward (or chunks)."""
        norm = t.norm(dim=-1, keepdim=True)
        unit = t / norm.clamp_min(torch.finfo(t.dtype).tiny)
        xs = self._x.reshape(1, self.B, -1) + self.fd_step * unit
        first = self._base is None
        if first:  # D(x) itself rides in the same batched call as the first differences
            xs = torch.cat([self._x.reshape(1, self.B, -1), xs])
        n = xs.shape[0] * self.B
        xs = xs.reshape(n, *self.shape[1:])
        step = n if self.chunk_size is None else self.chunk_size * self.B
        with torch.no_grad():
            out = torch.cat([self._f(xs[i:i + step]) for i in range(0, n, step)]).reshape(-1, self.B, t.shape[-1])
        if first:
            self._base, out = out[0], out[1:]
        return (out - self._base) * (norm / self.fd_step)

    def __call__(self, cols: Tensor) -> Tensor:
        """(B,N,m) -> (B,N,m): A applied to each column, image by image."""
        t = cols.movedim(-1, 0)  # vmap over the m block vectors: the primal pass is shared
        if self.jacobian == "fd":
            out = self._jvp_fd(t)
        else:
            out = torch.func.vmap(self._jvp1, chunk_size=self.chunk_size)(t)
        self.applications += t.shape[0]
        if self.symmetric:
            out = 0.5 * (out + torch.func.vmap(self._vjp1, chunk_size=self.chunk_size)(t))
            self.applications += t.shape[0]
        return out.movedim(0, -1).detach()


def _rayleigh_ritz(x: Tensor, ax: Tensor, symmetric: bool):
    h = x.transpose(-1, -2) @ ax
    if not symmetric:
        return _top_eig(h, False)
    # float64: eigh of a float32 projection of a badly scaled (untrained) network can fail to converge
    theta, y = _top_eig(h.double(), True)
    return theta.to(x.dtype), y.to(x.dtype)


def _block_lobpcg(op: _Operator, x0: Tensor, k: int, tol: float, max_iters: int):
    """Symmetric block solver: LOBPCG (Rayleigh-Ritz on [X, R, P]) without preconditioner.

    Converges like CG (rate ~ sqrt of the gap ratio), so far faster than subspace iteration when the top
    eigenvalues cluster near 1. The Rayleigh-Ritz step uses the Gram matrix in float64 and drops
    near-dependent directions, which keeps it stable in float32. Each image stops (its block is frozen) as
    soon as its own residual is below tol, so its result does not depend on the other images in the batch.
    """
    m = x0.shape[-1]
    x = _orth(x0)
    ax = op(x)
    theta, y = _rayleigh_ritz(x, ax, True)
    x, ax = x @ y, ax @ y
    p = ap = None
    drop_tol = 1e-5 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-12
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    it = 0

    def keep_done(new, old):
        return torch.where(done.view(-1, *([1] * (new.dim() - 1))), old, new)

    for it in range(1, max_iters + 1):
        r = ax - x * theta.unsqueeze(-2)
        scale = theta.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        res = r[..., :k].norm(dim=-2) / scale
        done = done | (res.amax(-1) < tol)
        if done.all():
            break
        if it % _RESTART_EVERY == 0:
            # AX, AP are updated implicitly (AS C); in float32 they drift from A X over hundreds of iterations,
            # which can blow the Ritz values up. Restart: re-orthonormalise and apply A afresh.
            xr = _orth(x)
            axr = op(xr)
            th, y = _rayleigh_ritz(xr, axr, True)
            x, ax, theta = keep_done(xr @ y, x), keep_done(axr @ y, ax), keep_done(th, theta)
            p = ap = None
            continue
        w = r - x @ (x.transpose(-1, -2) @ r)
        w = w / w.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        aw = op(w)
        s_parts, as_parts = [x, w], [ax, aw]
        if p is not None:
            s_parts.append(p)
            as_parts.append(ap)
        s, as_ = torch.cat(s_parts, -1), torch.cat(as_parts, -1)
        s64, as64 = s.double(), as_.double()
        g = s64.transpose(-1, -2) @ s64
        h = s64.transpose(-1, -2) @ as64
        h = 0.5 * (h + h.transpose(-1, -2))
        gv, gu = torch.linalg.eigh(g)
        keep = gv > drop_tol * gv.amax(-1, keepdim=True)
        t = gu * torch.where(keep, gv.clamp_min(1e-300).rsqrt(), torch.zeros_like(gv)).unsqueeze(-2)
        hp = t.transpose(-1, -2) @ h @ t
        # Dropped directions get a hugely negative Ritz value so they never enter the top m.
        big = h.abs().amax((-1, -2), keepdim=True).squeeze(-1) * 1e3 + 1.0
        hp = hp - torch.diag_embed(torch.where(keep, torch.zeros_like(gv), big))
        tall, yall = torch.linalg.eigh(hp)
        c = (t @ yall.flip(-1)[..., :m]).to(x.dtype)
        theta = keep_done(tall.flip(-1)[..., :m].to(x.dtype), theta)
        p_new, ap_new = s[..., m:] @ c[..., m:, :], as_[..., m:] @ c[..., m:, :]
        x, ax = keep_done(s @ c, x), keep_done(as_ @ c, ax)
        pn = p_new.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        p, ap = p_new / pn, ap_new / pn
    return _orth_keep_sign(x[..., :k]), theta[..., :k], it, x


def _subspace_iteration(op: _Operator, x0: Tensor, k: int, tol: float, max_iters: int, symmetric: bool):
    """Block subspace iteration with QR + Rayleigh-Ritz; stops when the top-k Ritz subspace stops moving."""
    q = _orth(x0)
    prev = None
    it = 0
    for it in range(1, max_iters + 1):  # noqa: B007 (the count is returned)
        z = op(q)
        theta, y = _rayleigh_ritz(q, z, symmetric)
        xk = _real_span(q.to(y.dtype) @ y[..., :k], k) if not symmetric else q @ y[..., :k]
        if prev is not None and subspace_sine(prev.transpose(-1, -2), xk.transpose(-1, -2)).max() < tol:
            break
        prev = xk
        q = _orth(z @ y.real if symmetric else z)
    theta = theta.real if theta.is_complex() else theta
    return xk, theta[..., :k], it, q


def _power(op: _Operator, x: Tensor, k: int, tol: float, max_iters: int, init: Tensor | None):
    """Paper Alg. 4: one vector at a time, v_t = (A v_{t-1} - V L V^T v_{t-1}) / ||v_{t-1}||, v_0 = x.

    Stops when ||v_t - v_{t-1}|| / ||v_t|| < tol (||v_t|| -> |lambda| ~ 1 for a denoiser, so this is the
    paper's test, made scale-free). The paper subtracts V V^T v, i.e. Hotelling deflation with eigenvalue 1 (right for a denoiser, whose top
    eigenvalues are ~1); we weigh by the found eigenvalues L so operators with other spectra deflate too.
    Found vectors are normalised and orthogonalised against the earlier ones (the output is orthonormal).
    """
    B = x.shape[0]
    flat = x.reshape(B, -1)
    vecs, lams, iters = [], [], 0
    for i in range(k):
        v = (init[:, i] if init is not None else flat).clone()
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        lam = torch.zeros(B, dtype=x.dtype, device=x.device)
        for _ in range(max_iters):
            av = op(v.unsqueeze(-1)).squeeze(-1)
            vn2 = (v * v).sum(-1).clamp_min(torch.finfo(x.dtype).tiny)
            lam_t = (v * av).sum(-1) / vn2
            if vecs:
                vm = torch.stack(vecs, -1)  # (B,N,i)
                coef = torch.stack(lams, -1).unsqueeze(-1) * (vm.transpose(-1, -2) @ v.unsqueeze(-1))
                av = av - (vm @ coef).squeeze(-1)
            v_new = av / vn2.sqrt().unsqueeze(-1)
            # Relative to ||v_t|| (-> |lambda|): the paper's absolute test passes at once for small eigenvalues.
            change = (v_new - v).norm(dim=-1) / v_new.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
            v = torch.where(done.unsqueeze(-1), v, v_new)  # converged images keep their vector
            lam = torch.where(done, lam, lam_t)
            done = done | (change < tol)
            iters += 1
            if done.all():
                break
        u = v
        for prev in vecs:  # Gram-Schmidt: guarantee orthonormal rows
            u = u - prev * (prev * u).sum(-1, keepdim=True)
        vecs.append(u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny))
        lams.append(lam)
    return torch.stack(vecs, -1), torch.stack(lams, -1), iters


def _exact(op: _Operator, x: Tensor, k: int, symmetric: bool):
    """Dense per-image Jacobian (N JVPs, vmapped) and a full eigen-decomposition."""
    B = x.shape[0]
    n = x[0].numel()
    eye = torch.eye(n, dtype=x.dtype, device=x.device).expand(B, n, n)
    sym, op.symmetric = op.symmetric, False  # the dense J gives J^T for free
    jac = op(eye)  # (B, N_out, N_in)
    op.symmetric = sym
    if symmetric:
        theta, y = torch.linalg.eigh(0.5 * (jac + jac.transpose(-1, -2)))
        return y.flip(-1)[..., :k], theta.flip(-1)[..., :k]
    theta, y = _top_eig(jac, False)
    return _real_span(y[..., :k], k), theta.real[..., :k]


@autograd_enabled
def tangent_basis(
    denoise: Denoiser,
    x: Tensor,
    k: int,
    method: str = "block",
    *,
    tol: float | None = None,
    max_iters: int | None = None,
    init: Tensor | None = None,
    symmetric: bool = True,
    generator: torch.Generator | None = None,
    return_info: bool = False,
    oversample: int = DEFAULT_OVERSAMPLE,
    chunk_size: int | None = None,
    jacobian: str = "autodiff",
    fd_step: float = FD_STEP,
):
    """Top-k eigenvectors of the denoiser Jacobian J_D(x), D(x) = x - phi(x) (paper Alg. 4).

    Returns (B, k, N) orthonormal rows spanning the eigenvectors with the largest eigenvalues (~1 along the
    manifold, ~0 across it), per image. ``symmetric=True`` uses (J + J^T)/2 (one JVP + one VJP per vector);
    ``symmetric=False`` uses J itself (eigenvalues ranked by real part, basis = orthonormalised real span).

    Methods: ``"block"`` (default) LOBPCG on a block of k + ``oversample`` vectors with vmapped JVPs, stopping
    when every top-k residual ||A x - theta x|| / |theta_max| < tol (non-symmetric: falls back to
    ``"subspace"``); ``"subspace"`` subspace iteration + Rayleigh-Ritz, stopping when the top-k Ritz subspace
    moves by less than tol (sine of the largest principal angle); ``"power"`` the paper's sequential power
    iteration with deflation from v_0 = x, stopping when ||v_t - v_{t-1}|| / ||v_t|| < tol (per vector, at most
    ``max_iters`` each); ``"exact"`` dense Jacobian (N vmapped JVPs) + eigh/eig. ``chunk_size`` bounds how many
    block vectors are vmapped at once (memory).
    ``jacobian="fd"`` takes J q by forward differences (one batched forward instead of a JVP; see `_Operator`).
    ``generator`` may be one generator per image (start vectors independent of the batch).
    ``init`` (B, k', N) warm-starts the iterative methods (e.g. the previous rollout step's basis).
    With ``return_info`` also returns a `TangentInfo` (applications are per image: a JVP or a VJP counts 1).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    tol = DEFAULT_TOL[method] if tol is None else tol
    max_iters = DEFAULT_MAX_ITERS[method] if max_iters is None else max_iters
    x = x.detach()
    B, n = x.shape[0], x[0].numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    op = _Operator(denoise, x, symmetric and method != "exact", chunk_size,
                   jacobian="autodiff" if method == "exact" else jacobian, fd_step=fd_step)
    if init is not None:
        init = init.detach().to(dtype=x.dtype, device=x.device).reshape(B, -1, n)
    iters, block = 0, None
    if method == "exact":
        basis, theta = _exact(op, x, k, symmetric)
    elif method == "power":
        basis, theta, iters = _power(op, x, k, tol, max_iters, init)
    else:
        m = min(k + oversample, n)
        x0 = randn_like_batch((B, n, m), x, generator)
        if init is not None:
            j = min(init.shape[1], m)
            x0[..., :j] = init[:, :j].transpose(-1, -2)
        if method == "block" and symmetric:
            basis, theta, iters, block = _block_lobpcg(op, x0, k, tol, max_iters)
        else:
            basis, theta, iters, block = _subspace_iteration(op, x0, k, tol, max_iters, symmetric)
        block = block.transpose(-1, -2).detach()
    basis = basis.transpose(-1, -2).contiguous()
    if return_info:
        return basis, TangentInfo(theta.detach(), op.applications, iters, block, op.denoised)
    return basis


@autograd_enabled
def tangent_filter(
    denoise: Denoiser,
    x: Tensor,
    v: Tensor,
    power: int = 2,
    *,
    symmetric: bool = True,
    jacobian: str = "fd",
    fd_step: float = FD_STEP,
    chunk_size: int | None = None,
    return_info: bool = False,
):
    """Eigenvector-free tangent direction p = A^m v, A = J_D(x) or (J + J^T)/2: a soft stand-in for Alg. 1's V V^T v.

    A denoiser's Jacobian has eigenvalues ~1 along the manifold and ~0 across it, so powers of A keep v's
    tangent part and damp the rest, with no eigen-solve. x (B, C, H, W), v (B, N) or x's shape -> p (B, N), not
    rescaled. With ``return_info`` also returns the operator applications per image and D(x) (B, N), which the
    operator computed on the way (None for the non-symmetric autodiff operator).
    """
    if power < 1:
        raise ValueError(f"power must be >= 1, got {power}")
    x = x.detach()
    B = x.shape[0]
    op = _Operator(denoise, x, symmetric, chunk_size, jacobian=jacobian, fd_step=fd_step)
    p = v.detach().reshape(B, -1, 1).to(x.dtype)
    for _ in range(power):
        p = op(p)
    p = p.squeeze(-1)
    return (p, op.applications, op.denoised) if return_info else p


# ---------------------------------------------------------------------------------------------- step objects
class StepInfo(NamedTuple):
    """What one tangent step cost and found."""

    eigenvalues: Tensor  # (B, k) top-k eigenvalues at x (an eigen-projection), (B, 0) otherwise
    applications: int  # operator applications per image (a JVP, forward difference or VJP counts 1)
    iterations: int
    denoised: Tensor | None = None  # D(x) (B, N) where the step computed it: a rollout need not denoise x again


class TangentStep:
    """A tangent direction at a noisy frame: `p, state, info = step(denoise, x, v, state, generator)`.

    `v` (B, N) is the velocity to project; `state` carries what the next step may reuse (a warm start), None at
    the first step. Subclasses are frozen dataclasses whose fields are their settings (`STEPS` names them)."""

    name: str = ""

    def __call__(self, denoise: Denoiser, x: Tensor, v: Tensor, state, generator, first: bool):
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def check_frame(self, numel: int) -> None:
        """Raise ValueError if the step cannot run on frames of `numel` = C*H*W values."""

    def _check_operator(self) -> None:
        """The settings of the Jacobian operator both steps use."""
        if self.jacobian not in JACOBIANS:
            raise ValueError(f"step.jacobian must be one of {JACOBIANS}, got {self.jacobian!r}")
        _positive(self.fd_step, "step.fd_step", float)
        if self.chunk_size is not None:
            _positive(self.chunk_size, "step.chunk_size")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"step.symmetric must be true or false, got {self.symmetric!r}")


def _positive(value, name: str, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not value > 0:
        raise ValueError(f"{name} must be a positive {'number' if kind is float else 'integer'}, got {value!r}")
    return kind(value)


@dataclasses.dataclass(frozen=True)
class EigenProjection(TangentStep):
    """Paper Alg. 1 as written: p = V V^T v with V the top-k eigenvectors of the denoiser's Jacobian at x
    (`tangent_basis`, warm-started from the previous step's block). `track_iters` caps every step after the first
    at that many solver iterations (subspace tracking)."""

    name = "eigen"
    k: int = 4
    solver: str = "block"  # block | subspace | power | exact (`tangent_basis` methods)
    tol: float | None = None
    max_iters: int | None = None
    track_iters: int | None = None
    oversample: int = DEFAULT_OVERSAMPLE
    symmetric: bool = True
    jacobian: str = "autodiff"
    fd_step: float = FD_STEP
    chunk_size: int | None = None

    def __post_init__(self):
        _positive(self.k, "step.k")
        if self.solver not in METHODS:
            raise ValueError(f"step.solver must be one of {METHODS}, got {self.solver!r}")
        self._check_operator()
        for key in ("max_iters", "track_iters"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"step.{key}")
        if isinstance(self.oversample, bool) or not isinstance(self.oversample, int) or self.oversample < 0:
            raise ValueError(f"step.oversample must be an integer >= 0, got {self.oversample!r}")
        if self.tol is not None:
            _positive(self.tol, "step.tol", float)

    def check_frame(self, numel: int) -> None:
        if self.k > numel:
            raise ValueError(f"step.k must be in [1, {numel}] (C*H*W of the frames), got {self.k}")

    def __call__(self, denoise, x, v, state, generator, first):
        kw = dict(tol=self.tol, max_iters=self.max_iters if first or self.track_iters is None else self.track_iters,
                  symmetric=self.symmetric, oversample=self.oversample, chunk_size=self.chunk_size,
                  jacobian=self.jacobian, fd_step=self.fd_step)
        basis, info = tangent_basis(denoise, x, self.k, self.solver, init=state, generator=generator,
                                    return_info=True, **kw)
        p = (basis.transpose(1, 2) @ (basis @ v.unsqueeze(-1))).squeeze(-1)
        warm = basis if info.block is None else info.block
        return p, warm, StepInfo(info.eigenvalues, info.applications, info.iterations, info.denoised)

    def describe(self) -> str:
        extra = ", fd" if self.jacobian == "fd" else ""
        extra += f", {self.track_iters} it/step" if self.track_iters else ""
        return f"eigen-projection ({self.solver}{extra})"


@dataclasses.dataclass(frozen=True)
class PowerFilter(TangentStep):
    """The eigenvector-free step p = A^power v (`tangent_filter`; A = (J + J^T)/2, or J if not `symmetric`)."""

    name = "filter"
    power: int = 2
    symmetric: bool = True
    jacobian: str = "fd"
    fd_step: float = FD_STEP
    chunk_size: int | None = None

    def __post_init__(self):
        _positive(self.power, "step.power")
        self._check_operator()

    def __call__(self, denoise, x, v, state, generator, first):
        p, apps, denoised = tangent_filter(denoise, x, v, self.power, symmetric=self.symmetric, jacobian=self.jacobian,
                                           fd_step=self.fd_step, chunk_size=self.chunk_size, return_info=True)
        return p, None, StepInfo(x.new_zeros(x.shape[0], 0), apps, self.power, denoised)

    def describe(self) -> str:
        return f"{'A' if self.symmetric else 'J'}^{self.power} v ({self.jacobian})"


STEPS: dict[str, type[TangentStep]] = {"eigen": EigenProjection, "filter": PowerFilter}
