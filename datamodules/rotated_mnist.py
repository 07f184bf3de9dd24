"""Rotated MNIST (paper A.4): each digit's 20x20 crop rotated in steps of 3.6 degrees."""
from __future__ import annotations

import torch
from torch import Tensor

from .mnist import MNISTVideoDataModule, finite_number, rotate


class RotatedMNISTDataModule(MNISTVideoDataModule):
    """Frame t is the crop rotated counter-clockwise (as displayed) by `t * step_deg` degrees about
    the image centre; frame 0 is the crop itself, frame 25 (90 deg) its `torch.rot90`.
    `latents` are the angles in degrees. Defaults: the paper's 10 videos x 100 frames of 20x20.

    Args:
        step_deg: rotation between consecutive frames (paper: 3.6, one turn in 100 frames).
        indices, data_dir, num_frames, **kwargs: see `MNISTVideoDataModule` / `VideoDataModule`.
    """

    latent_name = "angle (deg)"

    def __init__(self, indices: list[int] = list(range(10)), data_dir: str | None = None,  # noqa: B006
                 num_frames: int = 100, step_deg: float = 3.6, batch_size: int = 128,
                 num_val_frames: int = 200, split_seed: int = 0, num_workers: int = 0):
        super().__init__(indices=indices, data_dir=data_dir, num_frames=num_frames,
                         batch_size=batch_size, num_val_frames=num_val_frames,
                         split_seed=split_seed, num_workers=num_workers)
        self.step_deg = finite_number(step_deg, "step_deg")

    def frame_latents(self) -> Tensor:
        return torch.arange(self.num_frames, dtype=torch.float64) * self.step_deg

    def transform(self, images: Tensor, latents: Tensor) -> Tensor:
        return rotate(images, latents)
