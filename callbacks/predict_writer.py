"""`ExtrapolationWriter`: `train.py predict` rolls out every pair of starting frames with the
checkpoint's denoiser and writes PNG frames, a GIF/MP4 and a strip per pair (see docs/predict.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor

from errors import InputError
from extrapolation import Models, SettingsError, rollout, video_generators

from .media import SEPARATOR, auto_scale, to_uint8, write_video
from .method_settings import load_method_settings


def strip_image(frames: Tensor, n_given: int = 2, scale: int = 1, gap: int = 2, split: int = 6) -> np.ndarray:
    """`(T, C, H, W)` in [0, 1] -> one uint8 row `(H', W', 3)`: frames separated by `gap` grey
    columns, the `n_given` input frames set off from the rollout by a wider `split` column."""
    data = to_uint8(frames)  # (T, C, H, W)
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


class ExtrapolationWriter(BasePredictionWriter):
    """Extrapolates each pair `(u0, u1)` of a predict batch (`FramePairsDataModule`) and writes

    `<output_dir>/pair_XXX/frame_YYY.png` (the `steps + 2` frames at their own size: the two given
    frames, then the rollout; clamped to [0, 1] for display only), `rollout.gif` (or `.mp4`),
    `strip.png` (inputs | rollout, upscaled) and `info.json` (sources, settings file, profile and the
    settings used).

    Args:
        settings: extrapolation settings file, e.g. `configs/extrapolation/rot.yaml` (the one the
            training callback and Table 1 read; relative paths missing from the working directory
            are taken from the project root).
        profile: its profile: "selected" (chosen on the selection videos) or "paper" (appendix A.6).
        method: "tangent" (paper Alg. 1) or "linear" (Alg. 2, the baseline).
        steps, eta, sigma, k, solver: overrides of the file's settings (None: the file's); sigma in
            units of a [0, 1] image or a string such as "25/255"; `solver` replaces the file's
            tangent solver (`tangent_rollout` keywords, e.g. `{method: exact}`).
        seed: pair `i` draws its noise from the CPU generator `extrapolation.video_generators(seed, 0, [i])`
            (the one `extrapolation.evaluate` gives video `i` in trial 0), so frames do not depend on
            the batch size, the number of devices or the device type.
        output_dir: default `<trainer.log_dir>/predictions` (the run's version folder).
        fps, video_format, scale: animation speed, "gif" or "mp4", and the nearest-neighbour
            upscaling of the GIF/MP4 and strip (default: about 80 px high).
    """

    def __init__(
        self,
        settings: str,
        profile: str = "selected",
        method: Literal["tangent", "linear"] = "tangent",
        steps: int | None = None,
        eta: float | str | None = None,
        sigma: float | str | None = None,
        k: int | None = None,
        solver: dict[str, Any] | None = None,
        seed: int = 0,
        output_dir: str | None = None,
        fps: int = 10,
        video_format: Literal["gif", "mp4"] = "gif",
        scale: int | None = None,
    ):
        super().__init__("batch")
        if method not in ("tangent", "linear"):
            raise InputError(f"ExtrapolationWriter: method must be 'tangent' or 'linear', got {method!r}")
        if video_format not in ("gif", "mp4"):
            raise InputError(f"ExtrapolationWriter: video_format must be 'gif' or 'mp4', got {video_format!r}")
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise InputError(f"ExtrapolationWriter: fps must be a positive integer, got {fps!r}")
        try:
            self.method_settings = load_method_settings(settings, profile, [method], "ExtrapolationWriter",
                                                        steps=steps, eta=eta, sigma=sigma, k=k, solver=solver)[method]
        except SettingsError as err:  # bad user input: one line from train.py
            raise InputError(str(err)) from None
        self.settings, self.profile, self.method, self.seed = str(settings), profile, method, int(seed)
        self.output_dir, self.fps, self.video_format, self.scale = output_dir, fps, video_format, scale
        self.dir: Path | None = None
        self.written: list[int] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return  # inert in fit / validate / test, so configs can list it
        if not callable(getattr(pl_module, "denoise", None)):
            raise InputError(
                f"ExtrapolationWriter(method={self.method!r}) needs a denoiser checkpoint (a module with "
                f".denoise(x), e.g. lightning_modules.DenoiserModule); got a {type(pl_module).__name__}")
        # trainer.log_dir broadcasts rank 0's folder, so every rank writes into the same one
        root = self.output_dir or Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        self.dir = Path(root)
        self.written = []

    def rollout(self, denoise, pair: Tensor, index: int) -> Tensor:
        """One pair `(2, C, H, W)` -> `(steps + 2, C, H, W)`, seeded by its index."""
        try:
            self.method_settings.check_frame(pair[0].numel())
        except SettingsError as err:
            raise InputError(f"ExtrapolationWriter: {err}") from None
        generators = video_generators(self.seed, 0, [index])
        return rollout(Models(denoise=denoise), pair.unsqueeze(0), self.method_settings, generators)[0].detach()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        if not isinstance(batch, dict) or "frames" not in batch:
            raise InputError("ExtrapolationWriter needs predict batches of frame pairs "
                             "(--data datamodules.FramePairsDataModule, see docs/predict.md)")
        frames, indices = batch["frames"], batch["index"]
        sources = batch.get("source") or [""] * len(indices)
        c = pl_module.input_shape()[0] if callable(getattr(pl_module, "input_shape", None)) else None
        if c is not None and frames.shape[2] != c:
            raise InputError(f"predict frames have {frames.shape[2]} channels but the checkpoint's network "
                             f"takes {c}; use datamodules.FramePairsDataModule (it converts) or matching frames")
        # one pair at a time: each pair's noise comes from its own generator (batch-independent)
        for pair, index, source in zip(frames, indices.tolist(), sources):
            video = self.rollout(pl_module.denoise, pair, index)
            self.write_pair(video.cpu(), index, source)

    def write_pair(self, video: Tensor, index: int, source: str = "") -> Path:
        folder = self.dir / f"pair_{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = to_uint8(video)  # (T, C, H, W)
        for t, f in enumerate(data):
            Image.fromarray(f[0] if f.shape[0] == 1 else f.transpose(1, 2, 0)).save(folder / f"frame_{t:03d}.png")
        scale = self.scale or auto_scale(video.shape[-2])
        big = video.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        write_video(big, folder / f"rollout.{self.video_format}", fps=self.fps)
        Image.fromarray(strip_image(video, scale=scale)).save(folder / "strip.png")
        info = dict(source=source, index=index, settings_file=self.settings, profile=self.profile,
                    step=self.method_settings.step_name() or self.method, **self.method_settings.as_dict(),
                    seed=self.seed, generator=f"extrapolation.video_generators({self.seed}, 0, [{index}])",
                    frames=len(data))
        (folder / "info.json").write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
        self.written.append(index)
        return folder

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()  # all ranks done before counting
        if trainer.is_global_zero and self.dir is not None:
            n = len(list(self.dir.glob("pair_*")))
            rank_zero_info(f"ExtrapolationWriter: {n} extrapolated pair(s) in {self.dir}")
