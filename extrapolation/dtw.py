"""DTW-SSID: distance between a predicted and a ground-truth video (paper sec. 3, appendix A.2).

ssid = 1 - SSIM (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, data_range 1.0 so every entry of the cost
matrix is on the same scale). The ground truth (target, N1 frames) indexes the rows of the cost matrix and the
prediction (N2 frames) its columns, as in the paper's Fig. 4.

Aggregation (the paper is silent on it): after DTW, each ground-truth frame gets ONE distance, the mean of the
costs of the prediction frames matched to it; DTW-SSID is the mean of these N1 values. So every target frame
weighs the same however many prediction frames align to it, and dtw_ssid(a, b) != dtw_ssid(b, a) in general.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

_SSIM_KW = dict(gaussian_kernel=True, kernel_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0)


def ssid_matrix(a: Tensor, b: Tensor, chunk: int = 8192) -> Tensor:
    """Frame distance matrix d[i, j] = 1 - SSIM(a_i, b_j) (paper A.2 step 1); (T1,C,H,W), (T2,C,H,W) -> (T1,T2)."""
    a, b = a.detach(), b.detach()
    t1, t2 = a.shape[0], b.shape[0]
    dtype = torch.promote_types(a.dtype, b.dtype)
    ia, ib = torch.meshgrid(torch.arange(t1), torch.arange(t2), indexing="ij")
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    out = []
    for s in range(0, ia.numel(), chunk):  # all pairs in one call unless that is huge
        pa, pb = a[ia[s : s + chunk]].to(dtype), b[ib[s : s + chunk]].to(dtype)
        out.append(1.0 - structural_similarity_index_measure(pa, pb, reduction="none", **_SSIM_KW))
    return torch.cat(out).reshape(t1, t2)


def dtw_path(cost: Tensor | np.ndarray) -> list[tuple[int, int]]:
    """Classic DTW alignment path (paper A.2 step 2): (0,0) -> (N1-1,N2-1), steps (i-1,j), (i,j-1), (i-1,j-1).

    Minimises the summed cost along the path; ties are broken towards the diagonal step.
    """
    c = cost.detach().cpu().double().numpy() if isinstance(cost, Tensor) else np.asarray(cost, dtype=float)
    n1, n2 = c.shape
    acc = np.full((n1 + 1, n2 + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n1 + 1):
        for j in range(1, n2 + 1):
            acc[i, j] = c[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j = n1, n2
    path = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        # Candidates in tie-break order: diagonal first.
        moves = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min(moves, key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    return path[::-1]


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
