"""DTW-SSID: distance between a predicted and a ground-truth video (paper sec. 3, appendix A.2).

ssid = 1 - SSIM (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, data_range 1.0 so every entry of the cost
matrix is on the same scale). The ground truth (target, N1 frames) indexes the rows of the cost matrix and the
prediction (N2 frames) its columns, as in the paper's Fig. 4.

Aggregation (the paper is silent on it): after DTW, each ground-truth frame gets ONE distance, the mean of the
costs of the prediction frames matched to it; DTW-SSID is the mean of these N1 values. So every target frame
weighs the same however many prediction frames align to it, and dtw_ssid(a, b) != dtw_ssid(b, a) in general.

The closed-end readings reward pace (a rollout faster than the video scores better against the whole ground
truth); `readings` adds an open-end DTW (Tormene et al. 2008: the whole rollout against the best-matching prefix
of the ground truth), which measures where the rollout went, and the coverage and speed ratio read off its path.
Paths come from dtw-python.
"""
from __future__ import annotations

import dtw
import numpy as np
import torch
from torch import Tensor

_SSIM_KW = dict(gaussian_kernel=True, kernel_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0)
_PAD = 5  # (11 - 1) / 2: torchmetrics reflect-pads by half the kernel, filters, and averages the whole image


def _gaussian(dtype, device) -> Tensor:
    dist = torch.arange(-_PAD, _PAD + 1, dtype=dtype, device=device)
    g = torch.exp(-((dist / _SSIM_KW["sigma"]) ** 2) / 2)
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """The 11x11 Gaussian window (valid) as two banded matrix products: (..., H+10, W+10) -> (..., H, W)."""
    def band(n):  # (n, n + 10): row r holds the window at columns r .. r + 10
        m = torch.zeros(n, n + 2 * _PAD, dtype=g.dtype, device=g.device)
        idx = torch.arange(n, device=g.device)[:, None] + torch.arange(2 * _PAD + 1, device=g.device)
        return m.scatter_(1, idx, g.expand(n, -1))

    h, w = x.shape[-2] - 2 * _PAD, x.shape[-1] - 2 * _PAD
    return band(h) @ x @ band(w).T


def ssid_matrix(a: Tensor, b: Tensor, chunk: int = 4096) -> Tensor:
    """Frame distance matrix d[i, j] = 1 - SSIM(a_i, b_j) (paper A.2 step 1); (T1,C,H,W), (T2,C,H,W) -> (T1,T2).

    The same SSIM as torchmetrics' `structural_similarity_index_measure` with the settings above (tested to
    1e-5), computed once per frame for the means and variances and with a separable window for the cross
    term, which makes a 100 x 55 matrix about 100x cheaper."""
    a, b = a.detach(), b.detach()
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    pad = lambda x: torch.nn.functional.pad(x.to(dtype), (_PAD,) * 4, mode="reflect")  # noqa: E731
    pa, pb = pad(a), pad(b)
    g = _gaussian(dtype, a.device)
    mu_a, mu_b = _blur(pa, g), _blur(pb, g)
    var_a = (_blur(pa * pa, g) - mu_a**2).clamp_min(0)
    var_b = (_blur(pb * pb, g) - mu_b**2).clamp_min(0)
    c1, c2 = (_SSIM_KW["k1"] * 1.0) ** 2, (_SSIM_KW["k2"] * 1.0) ** 2  # data_range 1
    t1, t2 = a.shape[0], b.shape[0]
    rows = []
    step = max(1, chunk // max(t2, 1))
    for i in range(0, t1, step):  # rows of a against all of b
        ia = slice(i, min(i + step, t1))
        cross = _blur((pa[ia, None] * pb[None]).flatten(0, 1), g).unflatten(0, (-1, t2))
        ma, mb = mu_a[ia, None], mu_b[None]
        cov = cross - ma * mb
        ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (var_a[ia, None] + var_b[None] + c2))
        rows.append(1.0 - ssim.flatten(2).mean(-1))
    return torch.cat(rows)


def _numpy(cost: Tensor | np.ndarray, who: str) -> np.ndarray:
    c = cost.detach().cpu().double().numpy() if isinstance(cost, Tensor) else np.asarray(cost, dtype=float)
    if not np.isfinite(c).all():
        raise ValueError(f"{who}: the cost matrix has non-finite entries")
    return c


def dtw_path(cost: Tensor | np.ndarray) -> list[tuple[int, int]]:
    """Classic DTW alignment path (paper A.2 step 2): (0,0) -> (N1-1,N2-1), steps (i-1,j), (i,j-1), (i-1,j-1).

    Minimises the summed cost along the path (dtw-python's `symmetric1`); ties are broken towards the diagonal
    step, then towards the row step (i-1,j).
    """
    c = _numpy(cost, "dtw_path")
    # Transposed so that dtw-python's tie order (diagonal, then a step along its reference) is diagonal, then
    # (i-1,j): the same path as a hand-written backtrack over (i-1,j-1), (i-1,j), (i,j-1), ties included.
    al = dtw.dtw(c.T, step_pattern="symmetric1")
    return list(zip(al.index2.tolist(), al.index1.tolist()))


def reference_dtw_path(cost: Tensor | np.ndarray) -> list[tuple[int, int]]:
    """The hand-written dynamic program `dtw_path` replaced (ties: diagonal, then (i-1,j)): a slow reference for the
    tests and `benchmarks/bench_dtw.py`."""
    c = _numpy(cost, "reference_dtw_path")
    n1, n2 = c.shape
    acc = np.full((n1 + 1, n2 + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n1 + 1):
        for j in range(1, n2 + 1):
            acc[i, j] = c[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j = n1, n2
    path = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        i, j = min([(i - 1, j - 1), (i - 1, j), (i, j - 1)], key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    return path[::-1]


def open_end_path(cost: Tensor | np.ndarray) -> list[tuple[int, int]]:
    """Open-end DTW path (Tormene et al. 2008) of a (T1, T2) cost: every rollout column, a prefix of the
    ground-truth rows; (gt_index, rollout_index) pairs from (0, 0) to (reached, T2 - 1)."""
    al = _open_end(_numpy(cost, "open_end_path"))
    return list(zip(al.index2.tolist(), al.index1.tolist()))


def _open_end(c: np.ndarray):
    # Query = rollout (matched whole), reference = ground truth (open end). symmetric2 (normalised by N + M, the
    # path's weight) has no slope limit; `asymmetric` would cap the pace at 2 ground-truth frames per rollout frame.
    return dtw.dtw(c.T, step_pattern="symmetric2", open_end=True)


READINGS = ("whole", "cut", "open_end", "reached", "coverage", "speed_ratio")


def readings(cost: Tensor, n_given: int = 2) -> dict[str, float]:
    """Closed-end (paper A.2) and open-end (Tormene et al. 2008) DTW readings of one rollout's (T1, T2) SSID cost.

    Rows are the ground truth. `whole` / `cut`: paper A.2 DTW-SSID against all T1 rows / the first min(T1, T2).
    `open_end`: the whole rollout against its best-matching ground-truth prefix, symmetric2 step pattern,
    normalised by the path weight T2 + reached + 1. `reached`: last ground-truth row on that path; `coverage`:
    reached / (T1 - 1) (1 if T1 = 1). `speed_ratio`: least-squares slope (with intercept) of the matched
    ground-truth row (mean when several match one rollout frame) against the rollout frame, over rollout frames
    n_given - 1 .. T2 - 1: the given frames match rows 0 .. n_given - 1 anyway, so the pace is the generated
    frames' from the last given one (NaN with fewer than two such frames). All NaN if the cost is not finite.
    """
    if not torch.isfinite(cost).all():
        return dict.fromkeys(READINGS, float("nan"))
    t1, t2 = cost.shape
    cut = cost[: min(t1, t2)]
    out = dict(whole=float(aggregate_path(cost, dtw_path(cost))), cut=float(aggregate_path(cut, dtw_path(cut))))
    al = _open_end(_numpy(cost, "readings"))
    reached = int(al.jmin)
    # Mean matched ground-truth index per rollout frame (index1 covers 0..T2-1, each at least once).
    matched = np.bincount(al.index1, weights=al.index2, minlength=t2) / np.bincount(al.index1, minlength=t2)
    x = np.arange(max(n_given - 1, 0), t2, dtype=float)
    y = matched[max(n_given - 1, 0):]
    slope = float(np.polyfit(x, y, 1)[0]) if x.size >= 2 else float("nan")
    out.update(open_end=float(al.normalizedDistance), reached=float(reached),
               coverage=reached / (t1 - 1) if t1 > 1 else 1.0, speed_ratio=slope)
    return out


def aggregate_path(cost: Tensor, path: list[tuple[int, int]]) -> Tensor:
    """Mean over target rows of the mean cost of the prediction columns aligned to each row (paper A.2 steps 3-4)."""
    rows = torch.tensor([p[0] for p in path], device=cost.device)
    cols = torch.tensor([p[1] for p in path], device=cost.device)
    n1 = cost.shape[0]
    sums = torch.zeros(n1, dtype=cost.dtype, device=cost.device).index_add_(0, rows, cost[rows, cols])
    counts = torch.zeros(n1, dtype=cost.dtype, device=cost.device).index_add_(0, rows, torch.ones_like(rows, dtype=cost.dtype))
    return (sums / counts).mean()


def dtw_ssid(prediction: Tensor, target: Tensor, return_alignment: bool = False):
    """DTW-SSID of one video pair (paper sec. 3 / A.2): prediction (T2,C,H,W) vs target (T1,C,H,W) -> scalar.

    One distance per target frame (mean over the prediction frames DTW aligns to it), averaged over the T1
    target frames (see module doc). With ``return_alignment`` returns (value, cost (T1, T2), path) for heat maps.
    """
    cost = ssid_matrix(target, prediction)
    path = dtw_path(cost)
    value = aggregate_path(cost, path)
    return (value, cost, path) if return_alignment else value


def dtw_ssid_batch(prediction: Tensor, target: Tensor) -> Tensor:
    """DTW-SSID (paper sec. 3) of each video pair: (V,T2,C,H,W) vs (V,T1,C,H,W) -> (V,)."""
    if prediction.shape[0] != target.shape[0]:
        raise ValueError(f"got {prediction.shape[0]} predictions for {target.shape[0]} targets")
    return torch.stack([dtw_ssid(p, t) for p, t in zip(prediction, target)])

