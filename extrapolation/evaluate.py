"""The one evaluation path: roll out videos from their first two frames and score them with DTW-SSID (paper
Alg. 1-3, A.2, Table 1). The training callback, `predict`, the grids, Table 1 and the benchmarks all call it.

Seeding: the noise of video ``v`` in trial ``t`` comes from its own CPU generator seeded by ``(seed, t, v)``
(``v`` the video's index in the whole set, see ``video_ids``), and the block solver stops each image on its own.
So a video gets the same frames (up to float rounding) alone or in any batch, on any number of ranks and on
any device type.

Readings (`extrapolation.dtw.readings`): *whole* and *cut* DTW-SSID (the paper's aggregation against the whole
ground truth, and against its first `steps + 2` frames), *open_end* (the rollout aligned to the best-matching
prefix of the ground truth: where it went), *coverage* and *speed_ratio* (how far and how fast it went, from
that alignment). A rollout that diverged (`extrapolation.rollouts.Divergence`) reads NaN everywhere; summaries
average the others and report the diverged fraction beside them.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from .dtw import READINGS, readings, ssid_matrix
from .methods import Method, Models
from .tangent import autograd_enabled

STALLED_BELOW = 0.5  # a rollout moving at under half the video's pace has stalled


class Evaluation(NamedTuple):
    """Per-(trial, video) readings of rollouts (see the module doc)."""

    readings: dict[str, Tensor]  # reading -> (trials, V) float64, NaN where the rollout diverged
    diverged: Tensor  # (trials, V) int64: frame index where the rollout diverged, -1 where it did not
    seconds: float  # rollout time (scoring excluded)
    frames: Tensor | None  # (trials, V, steps + 2, C, H, W) on the CPU, if kept; NaN from a divergence on
    applications: float = 0.0  # tangent: Jacobian applications (J q or J^T q) per image per step

    @property
    def whole(self) -> Tensor:
        return self.readings["whole"]

    @property
    def cut(self) -> Tensor:
        return self.readings["cut"]

    def summary(self) -> dict:
        """Table numbers: per reading the mean and std over trials of the per-trial mean over the videos that did
        not diverge; the diverged fraction; the median speed ratio and the stalled fraction over rollouts; the
        median and worst video by the whole reading (mean over trials). NaN only where every rollout diverged."""
        out = {}
        for name, values in self.readings.items():
            per_trial = _nanmean(values.double(), 1)
            finite = per_trial[~per_trial.isnan()]
            out[f"{name}_mean"] = finite.mean().item() if len(finite) else math.nan
            out[f"{name}_std"] = finite.std().item() if len(finite) > 1 else (0.0 if len(finite) else math.nan)
        ratio = self.readings.get("speed_ratio")
        if ratio is not None:
            ok = ratio[~ratio.isnan()].double()
            out["speed_ratio_median"] = ok.median().item() if len(ok) else math.nan
            out["stalled"] = (ok < STALLED_BELOW).double().mean().item() if len(ok) else math.nan
        out["diverged"] = (self.diverged >= 0).double().mean().item()
        per_video = _nanmean(self.whole.double(), 0)
        ok = ~per_video.isnan()
        out["median_video"] = per_video[ok].median().item() if ok.any() else math.nan
        out["worst_video"] = per_video[ok].max().item() if ok.any() else math.nan
        out["worst_video_index"] = int(torch.where(ok, per_video, -math.inf).argmax()) if ok.any() else -1
        out["per_video"] = per_video.tolist()
        out["per_video_cut"] = _nanmean(self.cut.double(), 0).tolist()
        return out


def _nanmean(x: Tensor, dim: int) -> Tensor:
    """Mean over `dim` ignoring NaN; NaN where every entry is NaN (no warning, unlike a bare torch.nanmean)."""
    ok = ~x.isnan()
    n = ok.sum(dim)
    return torch.where(n > 0, torch.where(ok, x, 0).sum(dim) / n.clamp_min(1), torch.full_like(n, math.nan, dtype=x.dtype))


def video_seed(seed: int, trial: int, video: int) -> int:
    """The seed of one video's stream in one trial."""
    return int(np.random.SeedSequence([int(seed), int(trial), int(video)]).generate_state(1, np.uint64)[0] >> 1)


def video_generators(seed: int, trial: int, video_ids: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per video (CPU: the same draws on every device type)."""
    return [torch.Generator().manual_seed(video_seed(seed, trial, v)) for v in video_ids]


def batch_invariant(fn):
    """`fn` with single-image batches run as two copies. On the CPU, oneDNN takes another convolution kernel for
    a batch of one; its rounding differs from every other batch size, and a rollout amplifies such differences
    step after step, so a video rolled out alone would drift from the same video in a batch."""
    if fn is None:
        return None

    def wrapped(x: Tensor) -> Tensor:
        return fn(torch.cat([x, x]))[:1] if x.shape[0] == 1 else fn(x)

    return wrapped


@autograd_enabled
def rollout(models: Models, first: Tensor, method: Method, generators: Sequence[torch.Generator] | None = None):
    """Extrapolate (B, 2, C, H, W) first frames with one method -> ((B, steps + 2, C, H, W), `RolloutInfo`), in
    float32 also under a bf16-mixed trainer. A linear-algebra failure of the method (an eigen-solver on a
    degenerate state) marks the whole batch diverged at its first generated frame."""
    method.check_models(models)
    models = Models(*(batch_invariant(f) for f in (models.denoise, models.encode, models.decode)))
    with torch.autocast(first.device.type, enabled=False):
        try:
            out, info = method.rollout(models, first.float(), generators)
        except torch.linalg.LinAlgError:
            from .rollouts import RolloutInfo

            b = first.shape[0]
            out = torch.cat([first.float(), first.new_full((b, method.steps, *first.shape[2:]), math.nan)], 1)
            info = RolloutInfo(torch.full((b,), 2, dtype=torch.long, device=first.device))
    return out.detach(), info


def dtw_readings(prediction: Tensor, target: Tensor) -> dict[str, float]:
    """Every reading (`READINGS`) of one rollout against its ground truth; NaN where the rollout diverged."""
    if not torch.isfinite(prediction).all():
        return {name: math.nan for name in READINGS}
    return readings(ssid_matrix(target, prediction))


def evaluate(models: Models, videos: Tensor, method: Method, trials: int = 1, seed: int = 0, *,
             video_ids: Sequence[int] | None = None, batch_size: int | None = None,
             keep_frames: bool = False) -> Evaluation:
    """Roll out every video of (V, T, C, H, W) `videos` from its first two frames, `trials` times, and score
    each rollout under every reading (paper Table 1 protocol). All trials of all videos go through one batched
    rollout unless `batch_size` caps the rollouts per call (the results do not depend on it). `video_ids` are the
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
    scores = {name: torch.zeros(trials, n_videos, dtype=torch.float64) for name in READINGS}
    diverged = torch.full((trials, n_videos), -1, dtype=torch.long)
    frames = None
    seconds, applications = 0.0, 0.0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        gens = [video_generators(seed, t, [video_ids[v]])[0] for t, v in chunk]
        batch = first[[v for _, v in chunk]]
        tic = time.perf_counter()
        out, info = rollout(models, batch, method, gens)
        if info.applications:
            applications += sum(info.applications) / len(info.applications) * len(chunk) / len(jobs)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        seconds += time.perf_counter() - tic
        out, steps_diverged = out.cpu(), info.diverged.cpu()
        if keep_frames and frames is None:
            frames = out.new_zeros(trials, n_videos, *out.shape[1:])
        for (t, v), pred, d in zip(chunk, out, steps_diverged):
            diverged[t, v] = d
            for name, value in dtw_readings(pred, videos[v].float().cpu()).items():
                scores[name][t, v] = value
            if keep_frames:
                frames[t, v] = pred
    return Evaluation(scores, diverged, seconds, frames, applications)
