"""Weizmann Action (paper A.4): every frame of every video trains the denoiser; short clips, one
per performer, are the ground-truth videos for extrapolation (paper A.6: 9 videos of 5 frames).

Two layouts of `data_dir` are read:
- "avi": the original distribution, `<person>_<action>.avi` files (e.g. `daria_walk.avi`,
  `lena_run1.avi`), flat or in per-action subfolders; decoded with PyAV.
- "strips": one image per video, frames of HxH side by side horizontally, one subfolder per
  action (the MoCoGAN copy in shared/data/weizmann/mocogan_actions; its `.jpg` files are PNGs,
  so files are opened by content). No performer names: each distinct sequence counts as its own
  performer.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from errors import InputError, MissingInputError

from .base import VideoDataModule

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}
# The ten Weizmann actions; `lena_walk1.avi` / `lena_walk2.avi` are two takes of "walk".
WEIZMANN_ACTIONS = ("bend", "jack", "jump", "pjump", "run", "side", "skip", "walk", "wave1", "wave2")
LAYOUTS = ("auto", "avi", "strips")
CLIP_RULES = ("per_performer", "per_sequence", "unscored")


def _natural_key(s: str):
    # "2/x" before "10/x": numeric parts compare as numbers
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _candidates(folder: Path, suffixes: set[str]) -> list[Path]:
    """Files with one of `suffixes` in `folder` and its immediate subfolders, naturally sorted."""
    found = [p for pattern in ("*", "*/*") for p in folder.glob(pattern)
             if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(folder).as_posix()))


def read_avi(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file -> uint8 `(T, H, W, 3)` RGB."""
    import av  # only the .avi layout needs PyAV

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream (expected an .avi video)")
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            expected = stream.frames  # from the container header; 0 when unknown
    except av.error.FFmpegError as e:
        raise InputError(f"cannot decode video {path}: {e} (expected a readable .avi video)") from e
    if not frames:
        raise InputError(f"video {path} decodes to no frames (expected at least one)")
    if expected and len(frames) < expected:
        raise InputError(f"video {path} is truncated: decoded {len(frames)} of the {expected} "
                         f"frames its header announces")
    return np.stack(frames)


def read_strip(path: str | Path) -> np.ndarray:
    """Read one image strip (frames of HxH side by side) -> uint8 `(T, H, H, 3)` RGB."""
    path = Path(path)
    try:
        with Image.open(path) as im:  # by content: the MoCoGAN ".jpg" files are PNGs
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read image strip {path}: {e} (expected a complete image file)") from e
    H, W = rgb.shape[:2]
    if H == 0 or W % H:
        raise InputError(f"image strip {path} is {W}x{H} px (width x height): expected the width "
                         f"to be a multiple of the height (square frames side by side)")
    return np.ascontiguousarray(rgb.reshape(H, W // H, H, 3).transpose(1, 0, 2, 3))


def _avi_performer_action(path: Path) -> tuple[str, str]:
    person, sep, action = path.stem.partition("_")
    if not sep or not person or not action:
        raise InputError(f"video file name {path.name} ({path}) does not follow "
                         f"<person>_<action>.avi (e.g. daria_walk.avi)")
    stripped = action.rstrip("0123456789")
    if action not in WEIZMANN_ACTIONS and stripped in WEIZMANN_ACTIONS:
        action = stripped  # second take of the same action (lena_run2)
    return person, action


def _digest(frames: np.ndarray) -> str:
    return hashlib.sha1(repr(frames.shape).encode() + np.ascontiguousarray(frames).tobytes()).hexdigest()


class WeizmannDataModule(VideoDataModule):
    """Weizmann Action videos: all frames for training, one short clip per performer as ground truth.

    Args:
        data_dir: folder with the videos (see the module docstring for both layouts).
        layout: "avi", "strips", or "auto" (avi when any `.avi` file is found, else strips).
        actions: action names to use (avi: from the file name, e.g. "walk"; strips: the subfolder
            name, e.g. "0"); None uses all.
        frame_size: output frame size, an int (square) or (height, width); None keeps the source
            size. Resized with bilinear interpolation with antialiasing (area-like when shrinking).
        grayscale: one channel (ITU-R 601 luma) instead of RGB.
        clip_length: frames per ground-truth clip (paper: 5).
        clip_start: index of the first frame of each clip within its sequence.
        clips: which sequences give the ground-truth clips:
            "per_performer": round robin over the actions (in sorted order), each action's clip
                taken from the first performer (sorted by name) not used yet, its first take;
                each performer at most once. Strips: every sequence is its own performer, so this
                is the first sequence of every action, then the second of every action, ...
                (on mocogan_actions: 0/2, 1/0, 3/4, 0/10, 1/8, 3/12, 0/18, 1/16, 3/20).
            "per_sequence": every sequence in sorted order.
            "unscored": every sequence that "per_performer" (with the same `num_clips`) does not choose, in
                sorted order: selection videos that the scored clips never overlap (18 of the 27 in the strip copy).
            a list of sequence names (see `sequence_names`), e.g. ["daria_walk", "0/00000002"].
        num_clips: at most this many clips (paper: 9); None for all the rule gives.
        drop_mirrors: drop a sequence that is the pixel-exact left-right mirror of an earlier one
            (the strip copy holds every sequence twice, mirrored); checked on the decoded pixels.
        batch_size, num_val_frames, split_seed, num_workers: see `VideoDataModule`.

    After `setup()`, besides the base attributes: `sequence_names` / `sequence_files` /
    `sequence_lengths` (every sequence used for training), `clip_names` / `clip_files` (the
    ground-truth clips' sources, in `videos` order), `dropped_mirrors` ((dropped, kept) name
    pairs) and `layout_used`. Sequence names are paths relative to `data_dir` without suffix.
    """

    def __init__(self, data_dir: str, layout: str = "auto", actions: list[str] | None = None,
                 frame_size: int | tuple[int, int] | None = 64, grayscale: bool = False,
                 clip_length: int = 5, clip_start: int = 0,
                 clips: str | list[str] = "per_performer", num_clips: int | None = 9,
                 drop_mirrors: bool = True, batch_size: int = 128, num_val_frames: int = 200,
                 split_seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, num_val_frames=num_val_frames,
                         split_seed=split_seed, num_workers=num_workers)
        if layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if isinstance(clips, str) and clips not in CLIP_RULES:
            raise InputError(f"clips must be one of {CLIP_RULES} or a list of sequence names, got {clips!r}")
        for name, value, low in (("clip_length", clip_length, 1), ("clip_start", clip_start, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if num_clips is not None and (isinstance(num_clips, bool) or not isinstance(num_clips, int)
                                      or num_clips < 1):
            raise InputError(f"num_clips must be a positive integer or None, got {num_clips!r}")
        if isinstance(frame_size, int) and not isinstance(frame_size, bool):
            frame_size = (frame_size, frame_size)
        if frame_size is not None:
            frame_size = tuple(frame_size)
            if len(frame_size) != 2 or not all(isinstance(s, int) and s > 0 for s in frame_size):
                raise InputError(f"frame_size must be a positive int, (height, width) or None, "
                                 f"got {frame_size!r}")
        self.data_dir = Path(data_dir)
        self.layout = layout
        self.actions = None if actions is None else list(actions)
        self.frame_size = frame_size
        self.grayscale = grayscale
        self.clip_length, self.clip_start = clip_length, clip_start
        self.clips = clips if isinstance(clips, str) else list(clips)
        self.num_clips = num_clips
        self.drop_mirrors = drop_mirrors

    # --- reading ------------------------------------------------------------------------------
    def _sources(self) -> tuple[str, list[Path]]:
        if not self.data_dir.is_dir():
            raise MissingInputError(f"Weizmann data_dir {self.data_dir} does not exist or is not a folder (the configs "
                                    f"read $WEIZMANN_DIR, else data/weizmann; or pass --data.init_args.data_dir)")
        avis = _candidates(self.data_dir, {".avi"}) if self.layout in ("auto", "avi") else []
        if avis:
            return "avi", avis
        images = _candidates(self.data_dir, IMAGE_SUFFIXES) if self.layout in ("auto", "strips") else []
        if images:
            return "strips", images
        wanted = {"avi": ".avi videos", "strips": "image strips",
                  "auto": ".avi videos or image strips"}[self.layout]
        raise MissingInputError(f"no {wanted} in {self.data_dir} (looked in the folder and its "
                                f"immediate subfolders; image suffixes {sorted(IMAGE_SUFFIXES)})")

    def _to_tensor(self, frames: np.ndarray) -> Tensor:
        # permute while still uint8 (4x less memory traffic than float)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float().div_(255)  # (T,3,H,W)
        if self.grayscale:
            x = torch.einsum("tchw,c->thw", x, torch.tensor([0.299, 0.587, 0.114])).unsqueeze(1)
        if self.frame_size is not None and tuple(x.shape[-2:]) != self.frame_size:
            x = F.interpolate(x, size=self.frame_size, mode="bilinear", antialias=True,
                              align_corners=False)
        return x.clamp_(0, 1) if self.grayscale or x.shape[-2:] != frames.shape[1:3] else x

    def _read_sequences(self) -> None:
        layout, paths = self._sources()
        entries = []  # (name, performer, action, path)
        for path in paths:
            name = path.relative_to(self.data_dir).with_suffix("").as_posix()
            if layout == "avi":
                performer, action = _avi_performer_action(path)
            else:
                performer, action = name, path.parent.relative_to(self.data_dir).as_posix()
            entries.append((name, performer, action, path))
        if self.actions is not None:
            available = sorted({e[2] for e in entries}, key=_natural_key)
            missing = [a for a in self.actions if a not in available]
            if missing:
                raise InputError(f"actions {missing} not found in {self.data_dir} "
                                 f"(layout {layout}); available actions: {available}")
            entries = [e for e in entries if e[2] in self.actions]
        read = read_avi if layout == "avi" else read_strip
        seen: dict[str, Path] = {}  # digest of a kept sequence's pixels -> its file
        last: tuple[Path, np.ndarray] | None = None  # mirrors are usually adjacent: spare a re-read
        self.sequence_names, self.sequence_files, self.sequence_lengths = [], [], []
        self.dropped_mirrors, self._performers, self._actions, tensors = [], [], [], []
        for name, performer, action, path in entries:
            frames = read(path)
            if self.drop_mirrors:
                twin = seen.get(_digest(frames[:, :, ::-1]))
                if twin is not None:  # verify the digest match pixel by pixel
                    twin_frames = last[1] if last is not None and last[0] == twin else read(twin)
                    if np.array_equal(twin_frames, frames[:, :, ::-1]):
                        kept = self.sequence_names[self.sequence_files.index(twin)]
                        self.dropped_mirrors.append((name, kept))
                        continue
                seen.setdefault(_digest(frames), path)
                last = (path, frames)
            self.sequence_names.append(name)
            self.sequence_files.append(path)
            self.sequence_lengths.append(len(frames))
            self._performers.append(performer)
            self._actions.append(action)
            tensors.append(self._to_tensor(frames))
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) > 1:
            raise InputError(f"frames in {self.data_dir} differ in size {sorted(shapes)}: set "
                             f"frame_size to resize them to one size")
        self._sequences = tensors
        self.layout_used = layout

    def _clip_indices(self) -> list[int]:
        """Indices into the sequences of the ground-truth clips (see `clips` in the class doc)."""
        names = self.sequence_names
        if isinstance(self.clips, list):
            unknown = [c for c in self.clips if c not in names]
            if unknown:
                raise InputError(f"clips {unknown} are not sequences of {self.data_dir}; expected "
                                 f"names among {names}")
            chosen = [names.index(c) for c in self.clips]
        elif self.clips == "per_sequence":
            chosen = list(range(len(names)))
        elif self.clips == "unscored":
            scored = set(self._per_performer()[: self.num_clips])
            chosen = [j for j in range(len(names)) if j not in scored]
            if not chosen:
                raise InputError(f"clips=unscored: every sequence of {self.data_dir} is a scored clip")
        else:
            chosen = self._per_performer()
        chosen = chosen if self.clips == "unscored" else chosen[: self.num_clips]
        end = self.clip_start + self.clip_length
        short = [names[j] for j in chosen if self.sequence_lengths[j] < end]
        if short:
            raise InputError(f"sequences {short} have fewer than clip_start + clip_length = {end} "
                             f"frames (lengths {[self.sequence_lengths[names.index(s)] for s in short]})")
        return chosen

    def _per_performer(self) -> list[int]:
        """The "per_performer" rule: round robin over actions, each performer's first sequence once."""
        names = self.sequence_names
        actions = sorted(set(self._actions), key=_natural_key)
        performers = sorted(set(self._performers), key=_natural_key)
        used, chosen, i, stalled = set(), [], 0, 0
        while len(used) < len(performers) and stalled < len(actions):
            action = actions[i % len(actions)]
            i += 1
            pick = next((j for p in performers if p not in used for j in range(len(names))
                         if self._performers[j] == p and self._actions[j] == action), None)
            if pick is None:  # every performer with this action is used: try the next action
                stalled += 1
                continue
            stalled = 0
            used.add(self._performers[pick])
            chosen.append(pick)
        return chosen

    # --- VideoDataModule hooks ---------------------------------------------------------------
    def load_videos(self) -> Tensor:
        self._read_sequences()
        chosen = self._clip_indices()
        self.clip_names = [self.sequence_names[j] for j in chosen]
        self.clip_files = [self.sequence_files[j] for j in chosen]
        end = self.clip_start + self.clip_length
        return torch.stack([self._sequences[j][self.clip_start:end] for j in chosen])

    def load_frames(self) -> Tensor:
        frames = torch.cat(self._sequences)
        del self._sequences  # `frames` holds the pixels now
        return frames
