"""The one evaluation path: roll out videos from their first two frames and score them with DTW-SSID (paper
Alg. 1-3, A.2, Table 1). The training callback, `predict`, the sweeps, Table 1 and the benchmarks all call it.

Seeding: the noise of video ``v`` in trial ``t`` comes from its own CPU generator seeded by ``(seed, t, v)``
(``v`` the video's index in the whole set, see ``video_ids``), and the block solver stops each image on its own.
So a video gets the same frames (up to float rounding) alone or in any batch, on any number of ranks and on
any device type.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from .dtw import readings, ssid_matrix
from .rollouts import latent_rollout, linear_rollout, tangent_rollout
from .settings import MethodSettings
from .tangent import autograd_enabled


@dataclass
class Models:
    """The callables a method needs: `denoise` (tangent, linear), `encode` and `decode` (latent)."""

    denoise: Callable[[Tensor], Tensor] | None = None
    encode: Callable[[Tensor], Tensor] | None = None
    decode: Callable[[Tensor], Tensor] | None = None


class Evaluation(NamedTuple):
    """DTW-SSID per (trial, video) against the whole ground truth and against it cut to the rollout's length."""

    whole: Tensor  # (trials, V) float64
    cut: Tensor  # (trials, V) float64
    seconds: float  # rollout time (scoring excluded)
    frames: Tensor | None  # (trials, V, steps + 2, C, H, W) on the CPU, if kept
    applications: float = 0.0  # tangent: Jacobian applications (J q or J^T q) per image per step


def video_seed(seed: int, trial: int, video: int) -> int:
    """The seed of one video's stream in one trial."""
    return int(np.random.SeedSequence([int(seed), int(trial), int(video)]).generate_state(1, np.uint64)[0] >> 1)


def video_generators(seed: int, trial: int, video_ids: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per video (CPU: the same draws on every device type)."""
    return [torch.Generator().manual_seed(video_seed(seed, trial, v)) for v in video_ids]


def batch_invariant(fn: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor] | None:
    """`fn` with single-image batches run as two copies. On the CPU, oneDNN takes another convolution kernel for
    a batch of one; its rounding differs from every other batch size, and a rollout amplifies such differences
    step after step, so a video rolled out alone would drift from the same video in a batch."""
    if fn is None:
        return None

    def wrapped(x: Tensor) -> Tensor:
        return fn(torch.cat([x, x]))[:1] if x.shape[0] == 1 else fn(x)

    return wrapped


@autograd_enabled
def rollout(models: Models, first: Tensor, settings: MethodSettings,
            generators: Sequence[torch.Generator] | None = None, return_info: bool = False):
    """Extrapolate (B, 2, C, H, W) first frames with one method (paper Alg. 1, 2 or 3) -> (B, steps + 2, C, H, W).

    With ``return_info`` also returns the tangent rollout's `RolloutInfo` (None for the other methods)."""
    with torch.autocast(first.device.type, enabled=False):  # float32 under a bf16-mixed trainer too
        return _rollout(models, first.float(), settings, generators, return_info)


def _rollout(models: Models, first: Tensor, settings: MethodSettings, generators, return_info: bool):
    u0, u1 = first[:, 0], first[:, 1]
    s = settings
    models = Models(*(batch_invariant(f) for f in (models.denoise, models.encode, models.decode)))
    if s.method == "latent":
        if models.encode is None or models.decode is None:
            raise ValueError("method 'latent' needs Models(encode=..., decode=...)")
        out, info = latent_rollout(models.encode, models.decode, u0, u1, s.steps, s.eta, reencode=s.reencode), None
    elif models.denoise is None:
        raise ValueError(f"method {s.method!r} needs Models(denoise=...)")
    elif s.method == "linear":
        out, info = linear_rollout(models.denoise, u0, u1, s.steps, s.eta, s.sigma, generator=generators), None
    else:
        out, info = tangent_rollout(models.denoise, u0, u1, s.steps, s.eta, s.sigma, s.k, generator=generators,
                                    return_info=True, **s.solver)
    out = out.detach()
    return (out, info) if return_info else out


def dtw_readings(prediction: Tensor, target: Tensor, n_given: int = 2) -> dict[str, float]:
    """`extrapolation.dtw.readings` of one rollout (paper A.2; Tormene et al. 2008 for the open-end ones): DTW-SSID
    against the whole ground truth and against its first len(prediction) frames, open-end DTW-SSID, reached,
    coverage and speed ratio; one cost matrix serves all. All NaN where the cost is not finite (a diverged
    rollout whose frames overflow the SSIM)."""
    return readings(ssid_matrix(target, prediction), n_given)  # rows: ground truth


def evaluate(models: Models, videos: Tensor, settings: MethodSettings, trials: int = 1, seed: int = 0, *,
             video_ids: Sequence[int] | None = None, batch_size: int | None = None,
             keep_frames: bool = False) -> Evaluation:
    """Roll out every video of (V, T, C, H, W) `videos` from its first two frames, `trials` times, and score
    each rollout with DTW-SSID (paper Table 1 protocol). All trials of all videos go through one batched rollout
    unless `batch_size` caps the rollouts per call (the results do not depend on it). `video_ids` are the
    videos' indices in the whole set (default 0..V-1): they seed the noise, so a share of the set scores the same
    as the whole set."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    n_videos = videos.shape[0]
    video_ids = list(range(n_videos)) if video_ids is None else [int(v) for v in video_ids]
    if len(video_ids) != n_videos:
        raise ValueError(f"got {len(video_ids)} video_ids for {n_videos} videos")
    jobs = [(t, v) for t in range(trials) for v in range(n_videos)]
    batch_size = len(jobs) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    first = videos[:, :2].float()
    whole = torch.zeros(trials, n_videos, dtype=torch.float64)
    cut = torch.zeros_like(whole)
    frames = None
    seconds, applications = 0.0, 0.0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        gens = [video_generators(seed, t, [video_ids[v]])[0] for t, v in chunk]
        batch = first[[v for _, v in chunk]]
        tic = time.perf_counter()
        out, info = rollout(models, batch, settings, gens, return_info=True)
        if info is not None and info.applications:
            applications += sum(info.applications) / len(info.applications) * len(chunk) / len(jobs)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        seconds += time.perf_counter() - tic
        out = out.cpu()
        if keep_frames and frames is None:
            frames = out.new_zeros(trials, n_videos, *out.shape[1:])
        for (t, v), pred in zip(chunk, out):
            if not torch.isfinite(pred).all():
                whole[t, v] = cut[t, v] = float("nan")
            else:
                r = dtw_readings(pred, videos[v].float().cpu())
                whole[t, v], cut[t, v] = r["whole"], r["cut"]
            if keep_frames:
                frames[t, v] = pred
    return Evaluation(whole, cut, seconds, frames, applications)
