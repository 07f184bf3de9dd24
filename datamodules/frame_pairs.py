"""`FramePairsDataModule`: the user's own starting frames for `train.py predict` (see docs/predict.md).

Each item is one pair `{"frames": (2, C, H, W) float in [0, 1], "index": int, "source": str}`; batches
stack them to `(B, 2, C, H, W)`. Only `predict_dataloader()` exists.

Size and channel policy (the denoiser is only meaningful on frames like its training frames):
- the model says what it takes: `set_input_shape(model.input_shape())` (`train.py predict` calls it before
  the trainer runs) hands over `(C, H, W)`, None where the checkpoint does not say, and reads and checks every
  frame then, so a mistake stops the run at start-up;
- channels follow the model (its network's `in_channels`): RGB -> grey (ITU-R 601 luma) or grey -> RGB
  (replicated) is done explicitly and reported; `channels` that contradict the model are refused. This is
  the one channel check: the frames a predict batch holds always have the model's channels;
- the frame size is `image_size` if given, else the training frame size the model reports, else the first
  frame's size. A frame of another size is refused with a message naming it, unless `resize=True` (bilinear,
  antialiased; the aspect ratio is not kept).
Every problem with the inputs raises `errors.InputError` (a `ValueError`) with a one-line message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from errors import InputError, MissingInputError


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair)):
        raise InputError(f"image_size must be a positive integer or [height, width] of positive integers, got {size!r}")
    return int(pair[0]), int(pair[1])


def load_image(path: str | Path) -> Image.Image:
    """Open an image file (EXIF orientation applied); one clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not an image file Pillow can read ({e.__class__.__name__})") from None


def load_video_frames(path: str | Path, indices: Sequence[int]) -> dict[int, Image.Image]:
    """Decode the frames at `indices` (0-based, in decoding order) of a video file with PyAV."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    bad = [i for i in indices if not isinstance(i, int) or i < 0]
    if bad:
        raise InputError(f"{path}: frame indices must be non-negative integers, got {bad}")
    wanted, last = set(indices), max(indices)
    found: dict[int, Image.Image] = {}
    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            for n, frame in enumerate(container.decode(video=0)):
                decoded = n + 1
                if n in wanted:
                    found[n] = frame.to_image()
                if n >= last:
                    break
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot be decoded as a video ({e.__class__.__name__}: {e})") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise InputError(f"{path}: frame index {missing[0]} is past the end of the video "
                         f"(it has {decoded} frames, indices start at 0)")
    return found


def convert(img: Image.Image, channels: int) -> Image.Image:
    """To 8-bit "L" (channels=1) or "RGB" (3); alpha dropped, palettes expanded."""
    if img.mode.startswith("I"):  # 16/32-bit grey (16-bit PNG): scale to 8 bit
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        img = Image.fromarray((arr.clip(0, 1) * 255).round().astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def is_grey(img: Image.Image) -> bool:
    return img.mode in ("1", "L", "LA", "F") or img.mode.startswith("I")


def to_tensor(img: Image.Image) -> Tensor:
    """An "L" or "RGB" image -> `(C, H, W)` float32 in [0, 1]."""
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


class PairDataset(Dataset):
    def __init__(self, frames: Tensor, sources: list[str]):
        self.frames, self.sources = frames, sources  # (P, 2, C, H, W)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"frames": self.frames[i], "index": i, "source": self.sources[i]}


class FramePairsDataModule(LightningDataModule):
    """Pairs of starting frames `(u0, u1)` for extrapolation, from image files or a video.

    Args:
        pairs: `[[first, second], ...]` image files (PNG, JPEG, anything Pillow reads).
        video: a video file (anything FFmpeg decodes, via PyAV); used instead of `pairs`.
        frames: `[[i, j], ...]` 0-based frame indices into `video` (default `[[0, 1]]`).
        image_size: `H` or `[H, W]` the frames must have (default: what the checkpoint records,
            else the first frame's size).
        channels: 1 or 3 (default: the checkpoint network's `in_channels`, else the first frame's).
        resize: resize frames of another size (bilinear, antialiased) instead of refusing them.
        batch_size: pairs per batch per device.
    """

    def __init__(
        self,
        pairs: list[list[str]] | None = None,
        video: str | None = None,
        frames: list[list[int]] | None = None,
        image_size: int | list[int] | None = None,
        channels: int | None = None,
        resize: bool = False,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__()
        if (pairs is None) == (video is None):
            raise InputError("FramePairsDataModule: give exactly one of `pairs` (image files) or `video`")
        if frames is not None and video is None:
            raise InputError("FramePairsDataModule: `frames` indexes into `video`; give `video` too")
        if pairs is not None:
            if not pairs or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pairs):
                raise InputError(f"pairs must be a non-empty list of [first, second] files, got {pairs!r}")
        if video is not None:
            frames = [[0, 1]] if frames is None else frames
            if (not frames or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in frames)
                    or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for p in frames for i in p)):
                raise InputError(f"frames must be a non-empty list of [i, j] non-negative frame indices, got {frames!r}")
        if channels not in (None, 1, 3) or isinstance(channels, bool):
            raise InputError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(resize, bool):
            raise InputError(f"resize must be true or false, got {resize!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise InputError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.pairs, self.video, self.frame_indices = pairs, video, frames
        self.image_size = None if image_size is None else _size_pair(image_size)
        self.channels, self.resize = channels, resize
        self.batch_size, self.num_workers = batch_size, num_workers
        self.input_shape: tuple[int | None, int | None, int | None] = (None, None, None)
        self.dataset: PairDataset | None = None

    def set_input_shape(self, shape: tuple[int | None, int | None, int | None]) -> None:
        """The `(C, H, W)` the model takes (None where unknown; `model.input_shape()`): read, check and convert
        every frame for it now (`self.dataset`)."""
        self.input_shape = tuple(shape)
        self.dataset = self.load(self.input_shape)

    def setup(self, stage: str) -> None:
        # a missing file before the first batch also without train.py (which reads the frames in set_input_shape)
        for f in [f for p in self.pairs for f in p] if self.pairs is not None else [self.video]:
            if not Path(f).is_file():
                raise MissingInputError(f"{f}: no such file")

    def _raw_pairs(self) -> tuple[list[tuple[Image.Image, Image.Image]], list[tuple[str, str]]]:
        if self.pairs is not None:
            names = [(str(a), str(b)) for a, b in self.pairs]
            return [(load_image(a), load_image(b)) for a, b in self.pairs], names
        flat = [i for p in self.frame_indices for i in p]
        decoded = load_video_frames(self.video, flat)
        names = [(f"{self.video}#{i}", f"{self.video}#{j}") for i, j in self.frame_indices]
        return [(decoded[i], decoded[j]) for i, j in self.frame_indices], names

    def load(self, input_shape: tuple[int | None, int | None, int | None] | None = None) -> PairDataset:
        """Read, check and convert every frame for a model that takes `input_shape` (C, H, W; None: unknown;
        default: what `set_input_shape` was given)."""
        images, names = self._raw_pairs()
        model_c, model_h, model_w = self.input_shape if input_shape is None else input_shape
        first = images[0][0]
        c = self.channels or model_c or (1 if is_grey(first) else 3)
        if self.channels and model_c and self.channels != model_c:
            raise InputError(f"channels={self.channels}, but the checkpoint's network takes {model_c}-channel frames")
        if self.image_size is not None:
            h, w = self.image_size
            if model_h is not None and (h, w) != (model_h, model_w):
                rank_zero_info(f"image_size={h}x{w} differs from the checkpoint's training frames "
                               f"({model_h}x{model_w}); using {h}x{w} as asked")
            origin = "image_size"
        elif model_h is not None:
            h, w, origin = model_h, model_w, "the checkpoint's training frame size"
        else:
            w, h = first.size
            origin = f"the first frame ({names[0][0]}); the checkpoint records no frame size"
        tensors, converted, resized = [], set(), set()
        for pair, pair_names in zip(images, names):
            out = []
            for img, name in zip(pair, pair_names):
                if is_grey(img) != (c == 1):
                    converted.add(name)
                img = convert(img, c)  # before resizing: palette / 1-bit images resize badly
                if img.size != (w, h):
                    if not self.resize:
                        raise InputError(
                            f"{name} is {img.size[1]}x{img.size[0]} (HxW) but frames must be {h}x{w} "
                            f"({origin}); pass --data.init_args.resize=true to resize it "
                            f"(bilinear, antialiased)")
                    img = img.resize((w, h), Image.BILINEAR)
                    resized.add(name)
                out.append(to_tensor(img))
            tensors.append(torch.stack(out))
        if converted:
            how = "RGB -> grey (luma)" if c == 1 else "grey -> RGB (replicated)"
            rank_zero_info(f"FramePairsDataModule: converted {len(converted)} frame(s) {how} for a "
                           f"{c}-channel network: {', '.join(sorted(converted))}")
        if resized:
            rank_zero_info(f"FramePairsDataModule: resized {len(resized)} frame(s) to {h}x{w}: "
                           f"{', '.join(sorted(resized))}")
        sources = [f"{a} -> {b}" for a, b in names]
        return PairDataset(torch.stack(tensors), sources)

    def predict_dataloader(self) -> DataLoader:
        if self.dataset is None:  # no set_input_shape: the frames decide their own size and channels
            self.dataset = self.load()
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
