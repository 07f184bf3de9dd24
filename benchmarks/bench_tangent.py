"""Benchmark: paper Alg. 4 ("power") vs the block solver (LOBPCG, "block") and subspace iteration.

For each operator, every iterative method runs with decreasing tolerances until its top-k subspace is within a
target sine of the largest principal angle of a reference ("exact" at 20x20, a long "block" run at 64x64);
we report operator applications per image (JVP = 1, VJP = 1) and wall-clock at that point. Rollouts (time and
DTW-SSID per solver) are benchmarked by bench_rollout.py. The CPU may be shared.

    python -m benchmarks.bench_tangent [--net unet|small] [--train-seconds 30] [--k 4] [--skip64]
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import torch
from torch import nn

import experiments as ex
from extrapolation import subspace_sine, tangent_basis


class SmallConvNet(nn.Module):
    """Fallback noise predictor: a small two-level conv net without normalisation."""

    def __init__(self, width=32):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.out = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x):
        h = self.inp(x)
        return self.out(torch.cat([h, torch.relu(self.up(self.down(h)))], 1))


def make_net(kind: str, widths):
    if kind == "unet":
        try:
            from networks import UNet

            kw = {} if widths is None else dict(widths=widths[:-1], mid_width=widths[-1])
            net = UNet(in_channels=1, **kw)
            print(f"network: networks.UNet {kw or '(default widths 64/128/256, mid 512)'}")
            return net
        except ImportError as e:  # written concurrently by another package
            print(f"NOTICE: networks.UNet not importable ({e}); using the local SmallConvNet")
    print("network: local SmallConvNet(width=32)")
    return SmallConvNet()


def strokes(n, size, g):
    """Synthetic 'digits': anti-aliased line segments at random positions and angles, in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    a = torch.rand(n, generator=g) * math.pi
    d = torch.stack([a.cos(), a.sin()], -1)
    px, py = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
    along = px * d[:, 0, None, None] + py * d[:, 1, None, None]
    across = -px * d[:, 1, None, None] + py * d[:, 0, None, None]
    img = torch.exp(-across**2 / 2.0) * torch.sigmoid(size * 0.3 - along.abs())
    return img.unsqueeze(1)


def train_briefly(net, seconds, size=20, seed=0):
    """A few seconds of denoising training (sigma ~ U[0, 0.4]) so the spectrum looks like a denoiser's."""
    if seconds <= 0:
        return net.eval()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        x = strokes(32, size, g)
        noise = torch.randn(x.shape, generator=g) * torch.rand(32, 1, 1, 1, generator=g) * 0.4
        loss = (net(x + noise) - noise).square().sum() / x.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
    print(f"trained {n} steps of batch 32 in {seconds:.0f} s, last loss {loss.item():.3f}")
    return net.eval()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def to_accuracy(den, x, k, ref, method, target, tols, max_iters, **kw):
    """Loosest tolerance of `tols` whose result is within `target`; returns (apps, seconds, sine, tol)."""
    last = None
    for tol in tols:
        (basis, info), sec = timed(lambda tol=tol: tangent_basis(den, x, k, method, tol=tol, max_iters=max_iters,
                                                         return_info=True, generator=torch.Generator().manual_seed(0), **kw))
        sine = subspace_sine(ref, basis).max().item()
        last = (info.applications, sec, sine, tol)
        if sine < target:
            return last
    return (*last[:3], None)  # not reached


def compare(name, den, x, k, ref, targets, iters_cap):
    print(f"\n== {name}: k={k}, N={x[0].numel()}, B={x.shape[0]}")
    print(f"{'target sine':>11} | {'method':>8} | {'apps':>6} | {'time s':>7} | {'sine':>8} | {'tol':>7} || apps ratio | time ratio (power / method)")
    tols = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7]
    for target in targets:
        res = {m: to_accuracy(den, x, k, ref, m, target, tols, iters_cap[m]) for m in ("power", "subspace", "block")}
        p = res["power"]
        for m, (apps, sec, sine, tol) in res.items():
            ratio = "" if m == "power" else f"|| {p[0] / apps:9.1f}x | {p[1] / sec:8.1f}x"
            flag = "" if tol is not None else " (NOT REACHED: cap)"
            print(f"{target:11.0e} | {m:>8} | {apps:6d} | {sec:7.2f} | {sine:8.1e} | {tol or float('nan'):7.0e} {ratio}{flag}")


@ex.script
def main(argv=None) -> int:
    ap = ex.ArgumentParser(prog="python -m benchmarks.bench_tangent", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="unet", choices=["unet", "small"])
    ap.add_argument("--widths", type=int, nargs="+", default=None, help="UNet widths then mid width, e.g. 32 64 128 256")
    ap.add_argument("--train-seconds", type=float, default=30)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--skip64", action="store_true")
    ap.add_argument("--ckpt", default=None, help="a trained DenoiserModule checkpoint (e.g. runs/rot/version_0): "
                    "its network and the videos of --config replace the briefly trained net and the strokes")
    ap.add_argument("--config", default="rot", help="with --ckpt: the experiment config of its videos (a name under "
                    "configs/ or a path)")
    # 1 thread: on this shared 2-core CPU, 2 OpenMP threads spin-wait for a busy core (a UNet forward 10x slower).
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (CPU shared with other jobs: times are noisy)")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    k = args.k
    caps = {"power": 400, "subspace": 300, "block": 200}

    # 1. Synthetic operator with clustered top eigenvalues (what makes power iteration slow).
    n = 400
    q = torch.linalg.qr(torch.randn(n, n, generator=g)).Q
    lam = torch.cat([1.0 - 0.02 * torch.arange(8.0), torch.linspace(0.8, 0.0, n - 8)])
    m = q @ torch.diag(lam) @ q.T
    lin = lambda x: (x.reshape(x.shape[0], -1) @ m.T).reshape(x.shape)  # noqa: E731
    compare("synthetic symmetric operator, eigenvalues 1, 0.98, 0.96, ... (clustered)", lin,
            torch.randn(1, 1, 20, 20, generator=g), k, q[:, :k].T.unsqueeze(0), [1e-2, 1e-3], caps)

    # 2. Network at 20x20.
    if args.ckpt:
        net = ex.load_module(args.ckpt, "denoiser").network.eval()
        print(f"network: trained checkpoint {args.ckpt}")
        clean = ex.load_datamodule(ex.config_path(args.config)).videos[:, 0]
    else:
        net = train_briefly(make_net(args.net, args.widths), args.train_seconds)
        clean = strokes(10, 20, g)
    for p in net.parameters():
        p.requires_grad_(False)
    den = lambda x: x - net(x)  # noqa: E731
    x = clean[:1] + 25 / 255 * torch.randn(1, 1, 20, 20, generator=g)
    (ref, info), sec = timed(lambda: tangent_basis(den, x, k + 4, "exact", return_info=True, chunk_size=100))
    ev = info.eigenvalues[0]
    print(f"\nexact at 20x20: {sec:.2f} s, top eigenvalues {[round(v, 3) for v in ev.tolist()]}")
    with torch.no_grad():
        _, t_fwd = timed(lambda: [den(x) for _ in range(10)])
    print(f"one forward (B=1): {t_fwd / 10 * 1e3:.1f} ms")
    compare("network at 20x20 (reference: exact)", den, x, k, ref[:, :k], [1e-2, 1e-3], caps)

    # Oversampling sweep for the block solver at the default tolerance.
    print("\nblock oversampling sweep at 20x20 (default tol), cold start:")
    for p_ in (0, 2, 4, 8):
        (b, inf), s = timed(lambda p_=p_: tangent_basis(den, x, k, "block", oversample=p_, return_info=True,
                                                  generator=torch.Generator().manual_seed(0)))
        print(f"  oversample {p_}: apps {inf.applications:5d}, iters {inf.iterations:3d}, {s:.2f} s, sine {subspace_sine(ref[:, :k], b).item():.1e}")

    # 3. Network at 64x64 (reference: a long block run).
    if not args.skip64:
        if args.ckpt:
            print("\n(64x64 case skipped with --ckpt: the checkpoint is a 20x20 network)")
            args.skip64 = True
    if not args.skip64:
        x64 = strokes(1, 64, g) + 25 / 255 * torch.randn(1, 1, 64, 64, generator=g)
        # Reference in float64 (a float32 run cannot resolve tol 1e-6).
        net64 = copy.deepcopy(net).double()
        den64 = lambda x: x - net64(x)  # noqa: E731
        (ref64, info), sec = timed(lambda: tangent_basis(den64, x64.double(), k, "block", tol=1e-6, max_iters=300,
                                                         return_info=True))
        ref64 = ref64.float()
        print(f"\nreference at 64x64: float64 block tol 1e-6, {info.applications} applications, {sec:.1f} s, "
              f"eigenvalues {[round(v, 3) for v in info.eigenvalues[0].tolist()]}")
        compare("network at 64x64 (reference: long block run)", den, x64, k, ref64, [1e-2], {"power": 200, "subspace": 150, "block": 100})

    print("\nRollout speed and quality per tangent step: python -m benchmarks.bench_rollout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
