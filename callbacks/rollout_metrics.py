"""`ExtrapolationCallback`: roll out the ground-truth videos from their first two frames (paper
Alg. 1-3) with `extrapolation.evaluate`, score them with DTW-SSID (A.2) and log videos, alignment heat
maps (Fig. 4) and latent manifold plots (Fig. 3). The settings come from a settings file
(`configs/extrapolation/<dataset>.yaml`), the one source that `predict`, the sweeps and Table 1 read too."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from callbacks import media
from extrapolation import Evaluation, MethodSettings, Models, SettingsError, evaluate

from .method_settings import load_method_settings

DENOISER_METHODS = ("tangent", "linear")
ALL_METHODS = DENOISER_METHODS + ("latent",)
class ExtrapolationCallback(Callback):
    """Extrapolate every ground-truth video of `trainer.datamodule.videos` from its first two
    frames and log the DTW-SSID to the ground truth, per method.

    Runs after a validation epoch when due (never in the sanity check) and in `trainer.test`.

    Args:
        settings: extrapolation settings file, e.g. `configs/extrapolation/rot.yaml` (relative paths
            that do not exist from the working directory are taken from the project root).
        profile: its profile: "selected" (chosen on the selection videos) or "paper" (appendix A.6).
        methods: any of "tangent" (Alg. 1), "linear" (Alg. 2, the denoiser baseline) and
            "latent" (Alg. 3, VAE). Tangent and linear use `pl_module.denoise`; latent uses
            `pl_module` itself when it is a VAE module (then it is the only method) or the
            VAEModule loaded from `vae_checkpoint` (skipped with a warning if neither, or if
            that file does not exist yet).
        steps, eta, sigma, k, solver, vae_eta: overrides of the file's settings (None: the file's).
            `steps` applies to every method; `eta` and `sigma` (units of a [0, 1] image, or a string
            such as "25/255") to tangent and linear; `k` and `solver` (replaces the file's solver:
            `tangent_rollout` keywords) to tangent; `vae_eta` to latent. Bad values raise a
            `SettingsError` here; `k` is checked against the frame size when the trainer sets up.
        vae_checkpoint: VAEModule checkpoint, for comparing all three methods in one run: a file, or an
            experiment folder such as `runs/vae_rot` for its newest checkpoint (`run_folders.resolve_checkpoint`).
        trials: rollouts per video after validation; `test_trials` in `trainer.test` (paper: 5).
        seed: noise seed. Video `v` of trial `t` draws from its own generator seeded by (seed, t, v)
            (`extrapolation.evaluate`), so the numbers do not depend on the number of devices.
        every_n_epochs: run after the validation of every n-th epoch (counted from 1) and of the
            last epoch; choose a multiple of the trainer's `check_val_every_n_epoch`.
        batch_size: rollouts per batched call (None: all trials of a rank's videos at once); the
            numbers do not depend on it.
        num_media_videos: videos (the first ones) that get media (trial 0), on rank zero; 0 for none.
        media_format: "gif" or "mp4".
        fps: frame rate of the media videos.
        media_scale: nearest-neighbour upscaling of media frames; None: to about 80 px high.
    """

    def __init__(
        self,
        settings: str,
        profile: str = "selected",
        methods: Sequence[str] = DENOISER_METHODS,
        steps: int | None = None,
        eta: float | str | None = None,
        sigma: float | str | None = None,
        k: int | None = None,
        solver: dict | None = None,
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
    ):
        super().__init__()
        owner = "ExtrapolationCallback"
        unknown = set(methods) - set(ALL_METHODS)
        if unknown:
            raise SettingsError(f"{owner}: unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
        if media_format not in ("gif", "mp4"):
            raise SettingsError(f"{owner}: media_format must be 'gif' or 'mp4', got {media_format!r}")
        for name, v in (("trials", trials), ("test_trials", test_trials), ("every_n_epochs", every_n_epochs),
                        ("batch_size", 1 if batch_size is None else batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"{owner}: {name} must be a positive integer, got {v!r}")
        self.settings, self.profile, self.methods = str(settings), profile, tuple(methods)
        self.method_settings = load_method_settings(settings, profile, self.methods, owner, steps=steps, eta=eta,
                                                    sigma=sigma, k=k, solver=solver, vae_eta=vae_eta)
        self.vae_checkpoint = vae_checkpoint
        self.trials, self.test_trials, self.seed = trials, test_trials, int(seed)
        self.every_n_epochs, self.batch_size = every_n_epochs, batch_size
        self.num_media_videos, self.media_format, self.fps = int(num_media_videos), media_format, int(fps)
        self.media_scale = media_scale
        self._vae: LightningModule | None = None
        self._warned: set[str] = set()
        self.num_rollouts = 0  # `evaluate` calls made by this process (tests count them)
        self.last_scores: dict[str, Tensor] = {}  # {method: (trials, 2, V)} of the latest run
        self.last_seconds: dict[str, float] = {}
        self.last_shown: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
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

    # ------------------------------------------------------------------ main
    def run(self, trainer: Trainer, pl_module: LightningModule, stage: str, trials: int) -> dict[str, Tensor]:
        """Roll out this rank's share of the videos, gather, log. Every rank must call this (it holds
        collectives). Returns the per-video scores {method: (trials, 2, V)}, [:, 0] whole GT, [:, 1] cut GT."""
        dm = trainer.datamodule
        videos = getattr(dm, "videos", None)
        if videos is None:
            self._warn_once("novideos", "ExtrapolationCallback: the datamodule has no `videos`; skipped")
            return {}
        methods = self._resolve_methods(pl_module)
        if not methods:
            return {}
        device = pl_module.device
        names = [m for m, _ in methods]
        n_videos = videos.shape[0]
        world, rank = trainer.world_size, trainer.global_rank
        n_media = min(self.num_media_videos, n_videos)
        ids = list(range(rank, n_videos, world))  # this rank's share
        share = videos[rank::world].to(device, torch.float32)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        # scores[t, m, r, v]: trial t, method m, reading r (0 whole GT, 1 cut GT), video v;
        # zeros where another rank owns the video, so the gathered sum is exact
        scores = torch.zeros(trials, len(names), 2, n_videos, dtype=dtype, device=device)
        owned = torch.zeros(n_videos, device=device)
        owned[ids] = 1
        shown, timings = [], {}
        with _eval_mode(pl_module, self._vae):
            for m, (name, models) in enumerate(methods):
                s = self.method_settings[name]
                result = self._evaluate(models, share, s, trials, ids, n_media > 0, rank)
                self.num_rollouts += 1
                timings[name] = result.seconds
                scores[:, m, 0, ids] = result.whole.to(device, dtype)
                scores[:, m, 1, ids] = result.cut.to(device, dtype)
                frames = torch.zeros(n_media, s.steps + 2, *videos.shape[2:], device=device)
                for i, v in enumerate(ids):
                    if v < n_media:
                        frames[v] = result.frames[0, i]
                shown.append(frames)
        # collectives on every rank before anything rank-zero-only
        scores = _gather_sum(trainer, scores)
        owned = _gather_sum(trainer, owned)
        shown = [_gather_sum(trainer, f) for f in shown] if n_media else shown
        if not torch.all(owned == 1):
            raise RuntimeError(f"videos rolled out by no rank or by several: {owned.tolist()}")
        rank_zero_info(f"[{stage}] extrapolation of {n_videos} videos x {trials} trials: "
                       + ", ".join(f"{n} {s:.1f}s" for n, s in timings.items()) + f" (rank {rank})")

        per_trial = scores.mean(-1)  # (trials, methods, 2): mean over videos
        # the values are already gathered and equal on all ranks: a "max" sync is an exact no-op
        # that keeps Lightning from asking for sync_dist (a "mean" sync could round)
        log = dict(rank_zero_only=False, sync_dist=True, reduce_fx="max")
        for m, name in enumerate(names):
            for r, reading in enumerate(("dtw_ssid", "dtw_ssid_cut")):
                pl_module.log(f"{stage}/{reading}/{name}", per_trial[:, m, r].mean().item(), **log)
                if stage == "test":
                    std = per_trial[:, m, r].std().item() if trials > 1 else 0.0
                    pl_module.log(f"{stage}/{reading}_std/{name}", std, **log)

        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank asks
        if trainer.is_global_zero:
            if stage == "test":
                self._write_table(trainer, names, scores, run_dir)
            if n_media:
                out_dir = run_dir / "media" / stage / f"epoch_{trainer.current_epoch:03d}"
                self._write_media(trainer, dm, videos, names, [f.cpu().nan_to_num() for f in shown], stage, out_dir)
        self.last_scores = {name: scores[:, m].cpu() for m, name in enumerate(names)}
        self.last_seconds = timings  # this rank's rollout time per method
        self.last_shown = {name: f.cpu() for name, f in zip(names, shown)}  # {method: (n_media, steps + 2, C, H, W)}
        return self.last_scores

    # ------------------------------------------------------------------ pieces
    def _evaluate(self, models: Models, share: Tensor, settings: MethodSettings, trials: int, ids: list[int],
                  keep_frames: bool, rank: int) -> Evaluation:
        try:
            return evaluate(models, share, settings, trials, self.seed, video_ids=ids, batch_size=self.batch_size,
                            keep_frames=keep_frames)
        except torch.linalg.LinAlgError as err:
            # a numerical failure (e.g. eigh on an untrained net) must not end training, nor leave
            # other ranks waiting in the gather: NaN scores
            warnings.warn(f"ExtrapolationCallback: {settings.method} rollout of videos {ids} failed "
                          f"(rank {rank}): {err}")
            nan = torch.full((trials, len(ids)), float("nan"), dtype=torch.float64)
            frames = torch.full((trials, len(ids), settings.steps + 2, *share.shape[2:]), float("nan"))
            return Evaluation(nan, nan.clone(), 0.0, frames)

    def _resolve_methods(self, pl_module: LightningModule) -> list[tuple[str, Models]]:
        if _is_vae(pl_module):
            self._vae = None
            return [("latent", Models(encode=pl_module.encode, decode=pl_module.decode))]
        methods = []
        for name in self.methods:
            if name == "latent":
                vae = self._load_vae(pl_module)
                if vae is not None:
                    methods.append(("latent", Models(encode=vae.encode, decode=vae.decode)))
                continue
            if not hasattr(pl_module, "denoise"):
                self._warn_once(name, f"ExtrapolationCallback: {type(pl_module).__name__} has no `denoise`; "
                                      f"method {name!r} skipped")
                continue
            methods.append((name, Models(denoise=pl_module.denoise)))
        return methods

    def set_vae(self, vae: LightningModule, path: str | Path | None = None) -> None:
        """The VAEModule for `latent`, loaded from `path` by `train.py` at start-up (`_load_vae` returns it)."""
        vae.freeze()
        self._vae, self._vae_path = vae, path

    def _load_vae(self, pl_module: LightningModule) -> LightningModule | None:
        if self._vae is None:
            from errors import InputError
            from lightning_modules import VAEModule
            from run_folders import describe, resolve_checkpoint

            try:  # an experiment folder (configs: runs/vae_<dataset>) names its newest checkpoint
                path = resolve_checkpoint(self.vae_checkpoint, setting="vae_checkpoint") if self.vae_checkpoint else None
            except InputError as err:
                path, reason = None, str(err)
            else:
                reason = "vae_checkpoint is not set"
            if path is None:  # train the VAE config first to compare all three methods
                self._warn_once("latent", f"ExtrapolationCallback: method 'latent' skipped: {reason}")
                return None
            rank_zero_info(f"ExtrapolationCallback: latent rollouts with the VAE {describe(path)}")
            self._vae = VAEModule.load_from_checkpoint(path, map_location=pl_module.device)
            self._vae.freeze()
        return self._vae.to(pl_module.device)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _write_table(self, trainer: Trainer, names: list[str], scores: Tensor, run_dir: Path) -> None:
        """Per-video scores (mean and std over trials, both readings) as CSV and W&B table."""
        scores = scores.cpu().double()  # (trials, methods, 2, V)
        trials = scores.shape[0]
        columns = ["video", "method", "dtw_ssid", "dtw_ssid_std", "dtw_ssid_cut", "dtw_ssid_cut_std"] + \
                  [f"dtw_ssid_trial{t}" for t in range(trials)]
        rows = []
        for v in range(scores.shape[-1]):
            for m, name in enumerate(names):
                s = scores[:, m, :, v]  # (trials, 2)
                std = s.std(0) if trials > 1 else torch.zeros(2)
                rows.append([v, name, s[:, 0].mean().item(), std[0].item(), s[:, 1].mean().item(),
                             std[1].item()] + s[:, 0].tolist())
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "test_dtw_ssid_per_video.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)
        for logger in _wandb_loggers(trainer):
            logger.log_table(key="test/dtw_ssid_per_video", columns=columns, data=rows)

    def _write_media(self, trainer: Trainer, dm, videos: Tensor, names: list[str], shown: list[Tensor],
                     stage: str, out_dir: Path) -> None:
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
def _is_vae(module) -> bool:
    return hasattr(module, "encode") and hasattr(module, "decode") and not hasattr(module, "denoise")


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


def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
