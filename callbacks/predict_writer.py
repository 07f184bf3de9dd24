"""What `train.py predict` writes for each pair of starting frames (see docs/predict.md): PNG frames, a GIF/MP4, a
strip and `info.json`, in a fresh `predictions/` folder of the run. `ExtrapolationCallback` rolls the pairs out."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from errors import InputError

from .media import SEPARATOR, auto_scale, displayable, finite_length, to_uint8, write_video


def strip_image(frames: Tensor, n_given: int = 2, scale: int = 1, gap: int = 2, split: int = 6) -> np.ndarray:
    """`(T, C, H, W)` in [0, 1] -> one uint8 row `(H', W', 3)`: frames separated by `gap` grey
    columns, the `n_given` input frames set off from the rollout by a wider `split` column."""
    data = to_uint8(displayable(frames))  # (T, C', H, W)
    if data.shape[1] == 1:
        data = np.repeat(data, 3, axis=1)
    data = data.transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    grey = round(SEPARATOR * 255)
    parts = []
    for t, f in enumerate(data):
        if t:
            width = split if t == n_given else gap
            parts.append(np.full((f.shape[0], width, 3), grey, np.uint8))
        parts.append(f)
    return np.concatenate(parts, axis=1)


def fresh_output_dir(path: str | Path) -> Path:
    """`path` made ready for one predict run: created, or emptied of an earlier run's `pair_*` folders (replaced
    whole, so no stale frame survives). A folder holding anything else is refused: it is not ours to empty."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"predict output folder {path} is a file; expected a folder")
        other = [p.name for p in path.iterdir() if not (p.is_dir() and p.name.startswith("pair_"))]
        if other:
            raise InputError(f"predict output folder {path} holds other files ({', '.join(sorted(other)[:3])}); "
                             f"choose a new or empty folder")
        for p in path.iterdir():
            shutil.rmtree(p)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_pair(root: Path, video: Tensor, index: int, info: dict, *, fps: int = 10, video_format: str = "gif",
               scale: int | None = None) -> Path:
    """Write one rollout `(T, C, H, W)` of pair `index` into `root/pair_XXX/`: the frames before any divergence
    as PNGs at their own size (clamped to [0, 1] for display only), the animation and strip (a diverged frame
    shows as a red cross), and `info` plus `frames` / `diverged_at_frame` as strict JSON."""
    folder = root / f"pair_{index:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    n = finite_length(video)
    for t, f in enumerate(to_uint8(video[:n])):
        Image.fromarray(f[0] if f.shape[0] == 1 else f.transpose(1, 2, 0)).save(folder / f"frame_{t:03d}.png")
    scale = scale or auto_scale(video.shape[-2])
    big = displayable(video).repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    write_video(big, folder / f"rollout.{video_format}", fps=fps)
    Image.fromarray(strip_image(video, scale=scale)).save(folder / "strip.png")
    info = dict(info, index=index, frames=n, diverged_at_frame=None if n == video.shape[0] else n)
    (folder / "info.json").write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
    return folder
