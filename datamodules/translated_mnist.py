"""Translated MNIST (paper A.4): each digit's 20x20 crop shifted horizontally by 0.12 px per frame."""
from __future__ import annotations

import torch
from torch import Tensor

from .mnist import MNISTVideoDataModule, finite_number, translate


class TranslatedMNISTDataModule(MNISTVideoDataModule):
    """Frame t is the crop shifted horizontally by `start_px + t * step_px` pixels (positive =
    to the right, sub-pixel bilinear, zero fill). Paper defaults: -6 px + 0.12 px per frame, so
    frame 0 is the crop moved 6 px to the *left*, frame 50 the crop itself and frame 99 +5.88 px
    (the paper's "-6 to +6"). `latents` are the shifts in pixels.

    Args:
        start_px: shift of frame 0 (paper: -6).
        step_px: shift between consecutive frames (paper: 0.12).
        indices, data_dir, num_frames, **kwargs: see `MNISTVideoDataModule` / `VideoDataModule`.
    """

    latent_name = "shift (px)"

    def __init__(self, indices: list[int] = list(range(10)), data_dir: str | None = None,  # noqa: B006
                 num_frames: int = 100, start_px: float = -6.0, step_px: float = 0.12,
                 batch_size: int = 128, num_val_frames: int = 200, split_seed: int = 0,
                 num_workers: int = 0):
        super().__init__(indices=indices, data_dir=data_dir, num_frames=num_frames,
                         batch_size=batch_size, num_val_frames=num_val_frames,
                         split_seed=split_seed, num_workers=num_workers)
        self.start_px, self.step_px = finite_number(start_px, "start_px"), finite_number(step_px, "step_px")

    def frame_latents(self) -> Tensor:
        return self.start_px + torch.arange(self.num_frames, dtype=torch.float64) * self.step_px

    def transform(self, images: Tensor, latents: Tensor) -> Tensor:
        return translate(images, latents)
