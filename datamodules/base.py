"""`VideoDataModule`: ground-truth videos plus a shuffled frame split (see docs/design.md)."""
from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from errors import InputError


class FrameDataset(Dataset):
    """Frames `(N, C, H, W)`; item `i` is the tensor `frames[i]` alone (no label tuple)."""

    def __init__(self, frames: Tensor):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Tensor:
        return self.frames[i]


class VideoDataModule(LightningDataModule):
    """Base class: subclasses implement `load_videos()` (and optionally the other hooks).

    Args:
        batch_size: frames per batch *per device* (under DDP the global batch is
            `batch_size * world_size`).
        num_val_frames: frames drawn at random from all frames as the validation set, which is
            also the test set (paper A.4: 200); the rest is the training set.
        split_seed: seed of the split shuffle (`torch.Generator().manual_seed(split_seed)`);
            the training loader's shuffle is seeded from it too.
        num_workers: DataLoader worker processes.

    After `setup()`:
        videos: ground-truth videos `(V, T, C, H, W)`, float32 in [0, 1].
        latents: `(V, T)` float32 latent coordinate of each frame, or None.
        latent_name: e.g. `"angle (deg)"`, or None.
        frames: every frame the split draws from, `(N, C, H, W)` (default: all video frames).
        val_indices, train_indices: indices into `frames`; `val_set`/`test_set`, `train_set`.
    """

    latent_name: str | None = None

    def __init__(self, batch_size: int = 128, num_val_frames: int = 200, split_seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's init args too (stored in checkpoints)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_val_frames, int) or num_val_frames < 1:
            raise InputError(f"num_val_frames must be a positive integer, got {num_val_frames!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise InputError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if not isinstance(split_seed, int):
            raise InputError(f"split_seed must be an integer, got {split_seed!r}")
        self.batch_size = batch_size
        self.num_val_frames = num_val_frames
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.videos: Tensor | None = None
        self.latents: Tensor | None = None
        self.frames: Tensor | None = None

    # --- hooks for subclasses -------------------------------------------------------------
    def load_videos(self) -> Tensor:
        """Ground-truth videos `(V, T, C, H, W)`, float32 in [0, 1]."""
        raise NotImplementedError

    def load_latents(self) -> Tensor | None:
        """Latent coordinate `(V, T)` of each ground-truth frame; None when unknown."""
        return None

    def load_frames(self) -> Tensor:
        """Frames to split into training / validation, `(N, C, H, W)`.

        Default: every frame of `self.videos`. Override when training uses more frames than
        the ground-truth videos hold (Weizmann: all frames of all sequences, 5-frame clips).
        """
        return self.videos.flatten(0, 1)

    # --- Lightning ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.frames is not None:  # Lightning calls setup once per stage: load only once
            return
        videos = self.load_videos()
        _check_range(videos, 5, "videos (V, T, C, H, W)")
        self.videos = videos
        latents = self.load_latents()
        if latents is not None and latents.shape != videos.shape[:2]:
            raise ValueError(f"latents must have shape {tuple(videos.shape[:2])} (V, T), "
                             f"got {tuple(latents.shape)}")
        self.latents = latents
        frames = self.load_frames()
        _check_range(frames, 4, "frames (N, C, H, W)")
        if self.num_val_frames >= len(frames):
            raise InputError(f"num_val_frames={self.num_val_frames} must be smaller than the "
                             f"number of frames ({len(frames)}) so that training frames remain")
        order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(self.split_seed))
        self.val_indices = order[: self.num_val_frames]
        self.train_indices = order[self.num_val_frames:]
        self.train_set = FrameDataset(frames[self.train_indices])
        self.val_set = self.test_set = FrameDataset(frames[self.val_indices])
        # One generator for the module's lifetime: a new order every epoch, reproducible per run.
        self._train_generator = torch.Generator().manual_seed(self.split_seed + 1)
        self.frames = frames

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=False,
                          generator=self._train_generator if shuffle else None,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


def _check_range(x: Tensor, ndim: int, what: str) -> None:
    # A subclass bug here would silently train on the wrong data: fail loudly instead.
    if not isinstance(x, Tensor) or x.dim() != ndim or x.dtype != torch.float32:
        raise ValueError(f"{what} must be a {ndim}-d float32 tensor, got "
                         f"{getattr(x, 'dtype', type(x))} of shape {tuple(getattr(x, 'shape', ()))}")
    if x.numel() == 0 or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{what} must be non-empty with values in [0, 1]")
