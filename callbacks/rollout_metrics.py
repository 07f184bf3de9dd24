"""`ExtrapolationCallback`: roll out the ground-truth videos from their first two frames (paper Alg. 1-3) with
`extrapolation.evaluate`, score them (DTW-SSID, A.2, and the path / pace readings) and log them with videos,
alignment heat maps (Fig. 4) and latent manifold plots (Fig. 3); in `predict`, extrapolate the given frame pairs
and write them (`callbacks.predict_writer`). The settings come from a settings file
(`configs/extrapolation/<dataset>.yaml`), the one source that the grids and Table 1 read too."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from callbacks import media
from errors import InputError
from extrapolation import METHODS, READINGS, Evaluation, Models, SettingsError, evaluate, rollout, video_generators

from .method_settings import load_method_settings
from .predict_writer import fresh_output_dir, write_pair

# logged name of each reading: `{stage}/{name}/{method}`
METRICS = {"whole": "dtw_ssid", "cut": "dtw_ssid_cut", "open_end": "dtw_ssid_open", "coverage": "coverage",
           "speed_ratio": "speed_ratio"}


class ExtrapolationCallback(Callback):
    """Extrapolate every ground-truth video of `trainer.datamodule.videos` from its first two frames and log, per
    method, the DTW-SSID to the ground truth (`{stage}/dtw_ssid/<method>`, whole video; `dtw_ssid_cut`, cut to
    the rollout's length), where the rollout went and how fast (`dtw_ssid_open`, `coverage`, `speed_ratio`:
    `extrapolation.dtw.readings`), the fraction of rollouts that diverged (`diverged`) and the rollout time
    (`rollout_seconds`). Means are over the rollouts that did not diverge. Runs after a validation epoch when due
    (never in the sanity check), in `trainer.test`, and in `trainer.predict`, where it extrapolates each frame
    pair of the predict batches with `predict_method` and writes it (`callbacks.predict_writer`).

    Args:
        settings: extrapolation settings file, e.g. `configs/extrapolation/rot.yaml` (relative paths
            that do not exist from the working directory are taken from the project root).
        profile: its profile: "selected" (chosen on the selection videos) or "paper" (appendix A.6).
        methods: registered methods of the profile (`extrapolation.METHODS`), e.g. "tangent" (Alg. 1), "linear"
            (Alg. 2) and "latent" (Alg. 3). Each runs with the models it needs: the trained module's `denoise`,
            or its `encode` / `decode` (a VAE module), or the VAE handed over with `set_vae`; a method whose
            models are missing is skipped with one warning.
        steps, eta, sigma, k, step, vae_eta: overrides of the file's settings (None: the file's), applied to
            every method they concern: `steps` to all, `eta` and `sigma` (units of a [0, 1] image, or a string
            such as "25/255") to the denoiser methods, `k` and `step` (e.g. `{type: filter, power: 2}`) to the
            tangent step, `vae_eta` to latent. Bad values raise a `SettingsError` here; `k` is checked against
            the frame size when the trainer sets up.
        vae_checkpoint: VAEModule checkpoint or experiment folder (e.g. `runs/vae_rot`) for the latent method in a
            denoiser's run; `train.py` resolves and checks it at start-up and hands the VAE over (`set_vae`).
        trials: rollouts per video after validation; `test_trials` in `trainer.test` (paper: 5).
        seed: noise seed. Video `v` of trial `t` draws from its own generator seeded by (seed, t, v)
            (`extrapolation.evaluate`), so the numbers do not depend on the number of devices.
        every_n_epochs: run after the validation of every n-th epoch (counted from 1) and of the
            last epoch; choose a multiple of the trainer's `check_val_every_n_epoch`.
        batch_size: rollouts per batched call (None: all trials of a rank's videos at once); the
            numbers do not depend on it.
        num_media_videos: videos (the first ones) that get media (trial 0), on rank zero; 0 for none.
        media_format: "gif" or "mp4" (also of the predict animations).
        fps: frame rate of the media videos.
        media_scale: nearest-neighbour upscaling of media frames; None: to about 80 px high.
        predict_method: the method `train.py predict` extrapolates with; pair `i` draws the noise of video `i`
            in trial 0.
        predict_dir: where predict writes (default `<run folder>/predictions`); an earlier run's predictions
            there are replaced whole.
    """

    def __init__(
        self,
        settings: str,
        profile: str = "selected",
        methods: Sequence[str] = ("tangent", "linear"),
        steps: int | None = None,
        eta: float | str | None = None,
        sigma: float | str | None = None,
        k: int | None = None,
        step: dict[str, Any] | None = None,
        vae_eta: float | str | None = None,
        vae_checkpoint: str | None = None,
        trials: int = 1,
        test_trials: int = 5,
        seed: int = 0,
        every_n_epochs: int = 1,
        batch_size: int | None = None,
        num_media_videos: int = 4,
        media_format: str = "gif",
        fps: int = 10,
        media_scale: int | None = None,
        predict_method: str = "tangent",
        predict_dir: str | None = None,
    ):
        super().__init__()
        owner = "ExtrapolationCallback"
        if media_format not in ("gif", "mp4"):
            raise SettingsError(f"{owner}: media_format must be 'gif' or 'mp4', got {media_format!r}")
        for name, v in (("trials", trials), ("test_trials", test_trials), ("every_n_epochs", every_n_epochs),
                        ("batch_size", 1 if batch_size is None else batch_size), ("fps", fps),
                        ("media_scale", 1 if media_scale is None else media_scale)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"{owner}: {name} must be a positive integer, got {v!r}")
        if isinstance(num_media_videos, bool) or not isinstance(num_media_videos, int) or num_media_videos < 0:
            raise SettingsError(f"{owner}: num_media_videos must be an integer >= 0, got {num_media_videos!r}")
        if predict_method not in METHODS:
            raise SettingsError(f"{owner}: predict_method must be a registered method, one of {sorted(METHODS)}; "
                                f"got {predict_method!r}")
        self.settings, self.profile, self.methods = str(settings), profile, tuple(methods)
        self.method_settings = load_method_settings(
            settings, profile, self.methods, owner, steps=steps, eta=eta, sigma=sigma, k=k, step=step, vae_eta=vae_eta)
        self.vae_checkpoint = vae_checkpoint
        self.trials, self.test_trials, self.seed = trials, test_trials, int(seed)
        self.every_n_epochs, self.batch_size = every_n_epochs, batch_size
        self.num_media_videos, self.media_format, self.fps = num_media_videos, media_format, fps
        self.media_scale = media_scale
        self.predict_method, self.predict_dir = predict_method, predict_dir
        self._vae: LightningModule | None = None
        self._warned: set[str] = set()
        self._predictions: Path | None = None

    def set_vae(self, vae: LightningModule | None, source: str | Path | None = None) -> None:
        """The VAE (a module with `encode` / `decode`) of the latent method in a denoiser's run; `train.py` loads
        it from `vae_checkpoint` at start-up."""
        self._vae = vae
        if vae is not None:
            vae.freeze()
            if source is not None:
                rank_zero_info(f"ExtrapolationCallback: latent rollouts with the VAE {source}")

    @property
    def vae(self) -> LightningModule | None:
        """The VAE handed over with `set_vae`, if any."""
        return self._vae

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "predict" and self.predict_method not in self.method_settings:
            raise SettingsError(f"ExtrapolationCallback: {self.settings} [{self.profile}] has no settings for the "
                                f"predict_method {self.predict_method!r}; it has {sorted(self.method_settings)}")
        # the datamodule is set up: check k against the frame size before the first epoch
        videos = getattr(trainer.datamodule, "videos", None)
        if videos is not None:
            try:
                for name in self.methods:
                    self.method_settings[name].check_frame(videos[0, 0].numel())
            except SettingsError as err:
                raise SettingsError(f"ExtrapolationCallback: {err}") from None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self._skip_fast_dev_run(trainer):
            return
        epoch = trainer.current_epoch + 1
        if trainer.state.fn == "fit" and epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        self.run(trainer, pl_module, "val", self.trials)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._skip_fast_dev_run(trainer):
            self.run(trainer, pl_module, "test", self.test_trials)

    def _skip_fast_dev_run(self, trainer: Trainer) -> bool:
        # full-length rollouts take minutes: not what a smoke run is for
        if trainer.fast_dev_run:
            self._warn_once("fast_dev_run", "ExtrapolationCallback: skipped under fast_dev_run")
        return bool(trainer.fast_dev_run)

    # ------------------------------------------------------------------ evaluation
    def run(self, trainer: Trainer, pl_module: LightningModule, stage: str, trials: int) -> dict[str, Evaluation]:
        """Roll out this rank's share of the videos, gather, log. Every rank must call this (it holds
        collectives). Returns {method: Evaluation} of all videos (gathered; frames of the media videos only)."""
        videos = getattr(trainer.datamodule, "videos", None)
        if videos is None:
            self._warn_once("novideos", "ExtrapolationCallback: the datamodule has no `videos`; skipped")
            return {}
        methods = self._runnable(pl_module, self.methods)
        if not methods:
            return {}
        device = pl_module.device
        n_videos, world, rank = videos.shape[0], trainer.world_size, trainer.global_rank
        n_media = min(self.num_media_videos, n_videos)
        ids = list(range(rank, n_videos, world))  # this rank's share
        share = videos[rank::world].to(device, torch.float32)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        # scores[t, m, r, v]: trial t, method m, reading r, video v; diverged[t, m, v]: frame + 1 (0: never);
        # zeros where another rank owns the video, so the gathered sum is exact
        scores = torch.zeros(trials, len(methods), len(READINGS), n_videos, dtype=dtype, device=device)
        diverged = torch.zeros(trials, len(methods), n_videos, dtype=torch.long, device=device)
        seconds = torch.zeros(len(methods), dtype=dtype, device=device)
        owned = torch.zeros(n_videos, device=device)
        owned[ids] = 1
        shown = []
        with _eval_mode(pl_module, self._vae):
            for m, (name, models) in enumerate(methods):
                s = self.method_settings[name]
                result = evaluate(models, share, s, trials, self.seed, video_ids=ids, batch_size=self.batch_size,
                                  keep_frames=n_media > 0)
                seconds[m] = result.seconds
                for r, reading in enumerate(READINGS):
                    scores[:, m, r, ids] = result.readings[reading].to(device, dtype)
                diverged[:, m, ids] = result.diverged.to(device) + 1
                frames = torch.zeros(n_media, s.steps + 2, *videos.shape[2:], device=device)
                for i, v in enumerate(ids):
                    if v < n_media:
                        frames[v] = result.frames[0, i]
                shown.append(frames)
        # collectives on every rank before anything rank-zero-only
        scores, diverged, owned = (_gather_sum(trainer, t) for t in (scores, diverged, owned))
        seconds = _gather_max(trainer, seconds)
        shown = [_gather_sum(trainer, f) for f in shown] if n_media else shown
        if not torch.all(owned == 1):
            raise RuntimeError(f"videos rolled out by no rank or by several: {owned.tolist()}")
        names = [name for name, _ in methods]
        results = {name: Evaluation({r: scores[:, m, i].cpu().double() for i, r in enumerate(READINGS)},
                                    diverged[:, m].cpu() - 1, seconds[m].item(), shown[m].cpu() if n_media else None)
                   for m, name in enumerate(names)}
        rank_zero_info(f"[{stage}] extrapolation of {n_videos} videos x {trials} trials: "
                       + ", ".join(f"{n} {r.seconds:.1f}s" for n, r in results.items()))
        self._log(pl_module, stage, results, trials)
        for name, r in results.items():
            self._warn_diverged(name, r.diverged)

        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank asks
        if trainer.is_global_zero:
            if stage == "test":
                self._write_table(trainer, results, run_dir)
            if n_media:
                out_dir = run_dir / "media" / stage / f"epoch_{trainer.current_epoch:03d}"
                self._write_media(trainer, videos, names, [results[n].frames for n in names], stage, out_dir)
        return results

    def _log(self, pl_module: LightningModule, stage: str, results: dict[str, Evaluation], trials: int) -> None:
        # the values are already gathered and equal on all ranks: a "max" sync is an exact no-op
        # that keeps Lightning from asking for sync_dist (a "mean" sync could round)
        kw = dict(rank_zero_only=False, sync_dist=True, reduce_fx="max")
        for name, r in results.items():
            summary = r.summary()
            for reading, metric in METRICS.items():
                value = summary["speed_ratio_median" if reading == "speed_ratio" else f"{reading}_mean"]
                pl_module.log(f"{stage}/{metric}/{name}", value, **kw)
                if stage == "test" and reading in ("whole", "cut"):
                    pl_module.log(f"{stage}/{metric}_std/{name}", summary[f"{reading}_std"] if trials > 1 else 0.0,
                                  **kw)
            pl_module.log(f"{stage}/diverged/{name}", summary["diverged"], **kw)
            pl_module.log(f"{stage}/rollout_seconds/{name}", r.seconds, **kw)

    def _warn_diverged(self, name: str, diverged: Tensor) -> None:
        hit = diverged >= 0
        if hit.any():
            videos = sorted({int(v) for v in hit.nonzero()[:, 1]})
            rank_zero_warn(f"ExtrapolationCallback: {name}: {int(hit.sum())} of {hit.numel()} rollouts diverged "
                           f"(videos {videos}, from frame {int(diverged[hit].min())}); they read NaN and are left "
                           f"out of the means (`diverged/{name}` counts them)")

    def _runnable(self, pl_module: LightningModule, names: Sequence[str]) -> list[tuple[str, Models]]:
        """(name, Models) of the methods whose models are at hand; the others skipped with one warning each."""
        own = Models(denoise=getattr(pl_module, "denoise", None), encode=getattr(pl_module, "encode", None),
                     decode=getattr(pl_module, "decode", None))
        vae = Models(encode=self._vae.encode, decode=self._vae.decode) if self._vae is not None else Models()
        out = []
        for name in names:
            needs = self.method_settings[name].needs
            models = next((m for m in (own, vae) if all(getattr(m, n) is not None for n in needs)), None)
            if models is not None:
                out.append((name, models))
                continue
            why = (f"vae_checkpoint {self.vae_checkpoint} has no checkpoint yet" if self.vae_checkpoint
                   else "vae_checkpoint is not set") if "encode" in needs else \
                f"{type(pl_module).__name__} has no {', '.join(needs)}"
            self._warn_once(name, f"ExtrapolationCallback: method {name!r} skipped: {why}")
        return out

    # ------------------------------------------------------------------ predict
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        method = self.method_settings[self.predict_method]
        if not self._runnable(pl_module, [self.predict_method]):
            raise InputError(f"ExtrapolationCallback: predict_method {self.predict_method!r} needs a module with "
                             f"{', '.join(method.needs)}; got a {type(pl_module).__name__}")
        root = Path(self.predict_dir) if self.predict_dir else Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        if trainer.is_global_zero:
            fresh_output_dir(root)
        trainer.strategy.barrier()
        self._predictions = root

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(batch, dict) or "frames" not in batch:
            raise InputError("ExtrapolationCallback: predict needs batches of frame pairs "
                             "(--data datamodules.FramePairsDataModule, see docs/predict.md)")
        name = self.predict_method
        method = self.method_settings[name]
        frames, indices = batch["frames"], batch["index"].tolist()
        try:
            method.check_frame(frames[0, 0].numel())
        except SettingsError as err:
            raise SettingsError(f"ExtrapolationCallback: {err}") from None
        models = self._runnable(pl_module, [name])[0][1]
        with _eval_mode(pl_module, self._vae):
            # each pair draws the noise of video `index` in trial 0: frames do not depend on batching
            out, info = rollout(models, frames.float(), method, video_generators(self.seed, 0, indices))
        sources = batch.get("source") or [""] * len(indices)
        common = dict(settings_file=self.settings, profile=self.profile, **method.settings(),
                      step_name=method.step_name(), seed=self.seed)
        for video, index, source, d in zip(out.cpu(), indices, sources, info.diverged.tolist()):
            if d >= 0:
                rank_zero_warn(f"ExtrapolationCallback: pair {index} ({source or 'frames'}): the {name} rollout "
                               f"diverged at frame {d}; frames 0-{d - 1} written")
            write_pair(self._predictions, video, index,
                       dict(common, source=source, generator=f"extrapolation.video_generators({self.seed}, 0, [{index}])"),
                       fps=self.fps, video_format=self.media_format, scale=self.media_scale)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()  # all ranks done before counting
        if trainer.is_global_zero and self._predictions is not None:
            n = len(list(self._predictions.glob("pair_*")))
            rank_zero_info(f"ExtrapolationCallback: {n} extrapolated pair(s) in {self._predictions}")

    # ------------------------------------------------------------------ writing
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _write_table(self, trainer: Trainer, results: dict[str, Evaluation], run_dir: Path) -> None:
        """Per-video readings (mean and std over trials) as CSV and W&B table."""
        trials = next(iter(results.values())).diverged.shape[0]
        columns = ["video", "method", "dtw_ssid", "dtw_ssid_std", "dtw_ssid_cut", "dtw_ssid_cut_std", "dtw_ssid_open",
                   "coverage", "speed_ratio", "diverged"] + [f"dtw_ssid_trial{t}" for t in range(trials)]
        rows = []
        n_videos = next(iter(results.values())).diverged.shape[1]
        for v in range(n_videos):
            for name, r in results.items():
                whole, cut = r.readings["whole"][:, v], r.readings["cut"][:, v]
                std = (lambda x: x.std().item() if trials > 1 else 0.0)  # noqa: E731
                rows.append([v, name, whole.mean().item(), std(whole), cut.mean().item(), std(cut),
                             r.readings["open_end"][:, v].mean().item(), r.readings["coverage"][:, v].mean().item(),
                             r.readings["speed_ratio"][:, v].mean().item(), int((r.diverged[:, v] >= 0).sum())]
                            + whole.tolist())
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "test_dtw_ssid_per_video.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)
        for logger in _wandb_loggers(trainer):
            logger.log_table(key="test/dtw_ssid_per_video", columns=columns, data=rows)

    def _write_media(self, trainer: Trainer, videos: Tensor, names: list[str], shown: list[Tensor], stage: str,
                     out_dir: Path) -> None:
        dm = trainer.datamodule
        paths = media.write_media(videos, names, shown, out_dir, latents=getattr(dm, "latents", None),
                                  latent_name=getattr(dm, "latent_name", None) or "", media_format=self.media_format,
                                  fps=self.fps, scale=self.media_scale)
        step, captions = trainer.global_step, paths["captions"]
        for logger in _wandb_loggers(trainer):
            # file paths: W&B uploads the very files written above (no second encoding)
            logger.log_video(f"{stage}/rollouts", videos=[str(p) for p in paths["rollout"]], step=step,
                             caption=captions, format=[self.media_format] * len(captions))
            logger.log_image(f"{stage}/alignment", images=[str(p) for p in paths["alignment"]], step=step,
                             caption=captions)
            if paths["manifold"]:
                logger.log_image(f"{stage}/manifold", images=[str(p) for p in paths["manifold"]], step=step,
                                 caption=captions)


# ---------------------------------------------------------------------- helpers
class _eval_mode:
    """Put modules in eval() (torch.func fails on train-mode BatchNorm) and restore every
    submodule's own mode afterwards."""

    def __init__(self, *modules):
        self.modules = [m for m in modules if m is not None]

    def __enter__(self):
        self.saved = [(sub, sub.training) for m in self.modules for sub in m.modules()]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc):
        for sub, mode in self.saved:
            sub.training = mode


def _gather_sum(trainer: Trainer, t: Tensor) -> Tensor:
    """Sum over ranks (each rank fills its own videos, zeros elsewhere)."""
    g = trainer.strategy.all_gather(t)
    return g.sum(0) if g.dim() == t.dim() + 1 else g


def _gather_max(trainer: Trainer, t: Tensor) -> Tensor:
    g = trainer.strategy.all_gather(t)
    return g.amax(0) if g.dim() == t.dim() + 1 else g


def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
