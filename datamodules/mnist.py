"""MNIST: IDX reader, the bundled first ten training digits, sub-pixel image transforms and the
shared base of the rotated / translated MNIST video datamodules (paper A.4)."""
from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from errors import InputError, MissingInputError

from .base import VideoDataModule

BUNDLED_FIRST10 = files("datamodules") / "resources" / "mnist-train-first10-images-idx3-ubyte"
TRAIN_IMAGES = "train-images-idx3-ubyte"
CROP = slice(4, 24)  # 28x28 -> central 20x20

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed when the name ends in `.gz`) into an array."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"IDX file {path} does not exist")
    try:
        data = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # truncated or not gzip at all
        raise InputError(f"cannot read IDX file {path}: {e} (expected a complete "
                         f"{'gzip-compressed ' if path.suffix == '.gz' else ''}IDX file)") from e
    return parse_idx(data, path)


def parse_idx(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file; `path` only names the source in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise InputError(f"{path} is not an IDX file: magic number {data[:4].hex() or '(empty)'}, "
                         f"expected 0000 + a type byte in {sorted(hex(k) for k in _IDX_DTYPES)} "
                         f"+ a non-zero number of dimensions")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"{path} is truncated: {len(data)} bytes, shorter than the "
                         f"{header}-byte header of a {ndim}-d IDX file")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"{path} has {len(data)} bytes, expected {expected} for a {dtype} array "
                         f"of shape {shape} ({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def parse_indices(spec: str) -> list[int]:
    """MNIST indices from '10..19', '10-19' or '0,3,5' (ranges inclusive), for command lines."""
    out = []
    for part in filter(None, spec.replace("..", "-").split(",")):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def load_mnist_train_images(indices: Sequence[int], data_dir: str | Path | None = None) -> np.ndarray:
    """MNIST training images at `indices`, uint8 `(len(indices), 28, 28)`.

    Without `data_dir` only the bundled digits 0-9 are available; with it, reads
    `train-images-idx3-ubyte[.gz]` from that folder.
    """
    indices = list(indices)
    if not indices:
        raise InputError("indices is empty: expected at least one MNIST training-set index")
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise InputError(f"MNIST index {i!r} is not a non-negative integer")
    if data_dir is None:
        too_big = [i for i in indices if i >= 10]
        if too_big:
            raise InputError(f"MNIST indices {too_big} need data_dir (a folder with {TRAIN_IMAGES}"
                             f"[.gz]): only the first ten training digits (indices 0-9) are bundled")
        source = "the bundled first ten MNIST digits"
        images = parse_idx(BUNDLED_FIRST10.read_bytes(), source)
    else:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise MissingInputError(f"MNIST data_dir {folder} does not exist or is not a folder")
        candidates = [folder / f"{TRAIN_IMAGES}.gz", folder / TRAIN_IMAGES]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise MissingInputError(f"no MNIST training images in {folder}: expected "
                                    f"{candidates[0].name} or {candidates[1].name}")
        images, source = read_idx(path), str(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise InputError(f"{source} holds {images.dtype} {images.shape}, expected uint8 (N, 28, 28)")
    past = [i for i in indices if i >= len(images)]
    if past:
        raise InputError(f"MNIST indices {past} are past the end of {source} "
                         f"({len(images)} images, valid indices 0-{len(images) - 1})")
    return images[indices]


# --- exact sub-pixel transforms ---------------------------------------------------------------
def _resample(images: Tensor, src_x: Tensor, src_y: Tensor) -> Tensor:
    """Bilinear samples of `images (V, C, H, W)` at source pixel coordinates `src_x, src_y`
    `(T, H, W)` (column, row; pixel centres at integers) -> `(V, T, C, H, W)`, zeros outside."""
    V, C, H, W = images.shape
    T = src_x.shape[0]
    # align_corners=False: normalised -1 / +1 are the outer *edges* of the image, so pixel p sits at
    # (2p + 1) / W - 1 and the image centre (W - 1) / 2 at 0. Float64 keeps integer steps exact.
    grid = torch.stack([(2 * src_x + 1) / W - 1, (2 * src_y + 1) / H - 1], dim=-1)
    x = images.double().repeat_interleave(T, dim=0)  # (V*T, C, H, W), video-major
    out = F.grid_sample(x, grid.repeat(V, 1, 1, 1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.float().clamp_(0, 1).reshape(V, T, C, H, W)


def _pixel_grid(H: int, W: int) -> tuple[Tensor, Tensor]:
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                          indexing="ij")
    return x, y


def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate `images (V, C, H, W)` by each angle in `degrees (T,)` -> `(V, T, C, H, W)`.

    Counter-clockwise as displayed (row 0 at the top), about the image centre ((W-1)/2, (H-1)/2);
    90 degrees equals `torch.rot90(images, 1, dims=(-2, -1))`. Bilinear, zero fill.
    """
    H, W = images.shape[-2:]
    x, y = _pixel_grid(H, W)
    dx, dy = x - (W - 1) / 2, y - (H - 1) / 2
    theta = torch.as_tensor(degrees, dtype=torch.float64).deg2rad()[:, None, None]
    cos, sin = theta.cos(), theta.sin()
    # Output pixel p shows the input at R(-theta) p (inverse map); y points down on screen.
    src_x = (W - 1) / 2 + dx * cos - dy * sin
    src_y = (H - 1) / 2 + dx * sin + dy * cos
    return _resample(images, src_x, src_y)


def translate(images: Tensor, shifts: Tensor) -> Tensor:
    """Shift `images (V, C, H, W)` horizontally by each of `shifts (T,)` pixels -> `(V, T, C, H, W)`.

    Positive shifts move the content to the right: `out[..., x] = in[..., x - shift]`.
    Sub-pixel shifts interpolate bilinearly; pixels shifted in from outside are zero.
    """
    H, W = images.shape[-2:]
    x, y = _pixel_grid(H, W)
    s = torch.as_tensor(shifts, dtype=torch.float64)[:, None, None]
    return _resample(images, x - s, y.expand(len(s), H, W))


def finite_number(value, name: str) -> float:
    """`value` as a float, or one `InputError` naming `name` when it is not a finite number (NaN frames otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class MNISTVideoDataModule(VideoDataModule):
    """Shared base: one video per MNIST digit, the 20x20 centre crop transformed frame by frame.

    Args:
        indices: MNIST training-set indices of the digits (paper: the first ten, 0-9).
        data_dir: folder with `train-images-idx3-ubyte[.gz]`; needed only for indices >= 10.
        num_frames: frames per video (paper: 100).
        **kwargs: `VideoDataModule` arguments (batch_size, num_val_frames, split_seed, num_workers).
    """

    def __init__(self, indices: Sequence[int] = tuple(range(10)), data_dir: str | None = None,
                 num_frames: int = 100, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"num_frames must be a positive integer, got {num_frames!r}")
        self.indices = list(indices)
        self.data_dir = data_dir
        self.num_frames = num_frames
        self.digits = None  # (V, 1, 20, 20) crops, set by load_videos

    def frame_latents(self) -> Tensor:
        """Latent value of frame t, `(num_frames,)` float64."""
        raise NotImplementedError

    def transform(self, images: Tensor, latents: Tensor) -> Tensor:
        """`(V, C, H, W)` x `(T,)` -> `(V, T, C, H, W)`."""
        raise NotImplementedError

    def load_videos(self) -> Tensor:
        crops = load_mnist_train_images(self.indices, self.data_dir)[:, CROP, CROP]
        self.digits = torch.from_numpy(crops).float().div_(255).unsqueeze(1)
        return self.transform(self.digits, self.frame_latents())

    def load_latents(self) -> Tensor:
        return self.frame_latents().float().expand(len(self.indices), -1).clone()
