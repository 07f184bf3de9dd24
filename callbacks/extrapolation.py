"""`ExtrapolationCallback`: roll out the ground-truth videos from their first two frames (paper
Alg. 1-3), score them with DTW-SSID (A.2) and log videos, alignment heat maps (Fig. 4) and latent
manifold plots (Fig. 3)."""
from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from callbacks import media

DENOISER_METHODS = ("tangent", "linear")
ALL_METHODS = DENOISER_METHODS + ("latent",)


class ExtrapolationCallback(Callback):
    """Extrapolate every ground-truth video of `trainer.datamodule.videos` from its first two
    frames and log the DTW-SSID to the ground truth, per method.

    Runs after a validation epoch when due (never in the sanity check) and in `trainer.test`.

    Args:
        methods: any of "tangent" (Alg. 1), "linear" (Alg. 2, the denoiser baseline) and
            "latent" (Alg. 3, VAE). Tangent and linear use `pl_module.denoise`; latent uses
            `pl_module` itself when it is a VAE module (then it is the only method) or the
            VAEModule loaded from `vae_checkpoint` (skipped with a warning if neither, or if
            that file does not exist yet).
        steps: frames generated after the two given ones; rollouts have `steps + 2` frames.
        eta, sigma: step size and noise level of Alg. 1-2 (sigma in units of a [0, 1] image).
        k: tangent-space dimension of Alg. 1.
        vae_eta: step size of Alg. 3.
        vae_checkpoint: VAEModule checkpoint, for comparing all three methods in one run: a file, or an
            experiment folder such as `runs/vae_rot` for its newest checkpoint (`run_folders.resolve_checkpoint`).
        trials: rollouts per video after validation; `test_trials` in `trainer.test` (paper: 5).
        seed: noise seed. Chunk `c` of trial `t` draws from its own generator seeded by
            (seed, t, c), so results do not depend on how many devices share the chunks.
        every_n_epochs: run after the validation of every n-th epoch (counted from 1) and of the
            last epoch; choose a multiple of the trainer's `check_val_every_n_epoch`.
        videos_per_chunk: videos rolled out together in one batch. Chunks are dealt round-robin
            to the ranks; the numbers depend on this value (noise draws, solver stopping) but
            not on the number of devices.
        num_media_videos: videos (the first ones) that get media, on rank zero; 0 for none.
        media_format: "gif" or "mp4".
        fps: frame rate of the media videos.
        media_scale: nearest-neighbour upscaling of media frames; None: to about 80 px high.
        solver: keyword arguments for `tangent_rollout`'s eigen-solver (`tangent_basis`).
    """

    def __init__(
        self,
        methods: Sequence[str] = DENOISER_METHODS,
        steps: int = 53,
        eta: float = 1.0,
        sigma: float = 25 / 255,
        k: int = 4,
        vae_eta: float = 0.8,
        vae_checkpoint: str | None = None,
        trials: int = 1,
        test_trials: int = 5,
        seed: int = 0,
        every_n_epochs: int = 1,
        videos_per_chunk: int = 5,
        num_media_videos: int = 4,
        media_format: str = "gif",
        fps: int = 10,
        media_scale: int | None = None,
        solver: dict | None = None,
    ):
        super().__init__()
        unknown = set(methods) - set(ALL_METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
        if media_format not in ("gif", "mp4"):
            raise ValueError(f"media_format must be 'gif' or 'mp4', got {media_format!r}")
        for name, v in (("steps", steps), ("trials", trials), ("test_trials", test_trials),
                        ("every_n_epochs", every_n_epochs), ("videos_per_chunk", videos_per_chunk)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.methods = tuple(methods)
        self.steps, self.eta, self.sigma, self.k = int(steps), float(eta), float(sigma), int(k)
        self.vae_eta, self.vae_checkpoint = float(vae_eta), vae_checkpoint
        self.trials, self.test_trials, self.seed = int(trials), int(test_trials), int(seed)
        self.every_n_epochs, self.videos_per_chunk = int(every_n_epochs), int(videos_per_chunk)
        self.num_media_videos, self.media_format, self.fps = int(num_media_videos), media_format, int(fps)
        self.media_scale = media_scale
        self.solver = dict(solver or {})
        self._vae: LightningModule | None = None
        self._warned: set[str] = set()
        self.num_rollouts = 0  # rollout calls made by this process (tests count them)
        self.last_scores: dict[str, Tensor] = {}  # {method: (trials, 2, V)} of the latest run
        self.last_seconds: dict[str, float] = {}
        self.last_shown: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ hooks
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
        """Roll out, gather, log. Every rank must call this (it holds collectives).
        Returns the per-video scores {method: (trials, 2, V)}, [:, 0] whole GT, [:, 1] cut GT."""
        dm = trainer.datamodule
        videos = getattr(dm, "videos", None)
        if videos is None:
            self._warn_once("novideos", "ExtrapolationCallback: the datamodule has no `videos`; skipped")
            return {}
        device = pl_module.device
        n_videos = videos.shape[0]
        roll_len = self.steps + 2
        world, rank = trainer.world_size, trainer.global_rank
        n_media = min(self.num_media_videos, n_videos)

        with torch.inference_mode(False):  # Lightning's val/test loops run in inference mode
            methods = self._resolve_methods(pl_module)
            if not methods:
                return {}
            names = [m for m, _ in methods]
            # scores[t, m, r, v]: trial t, method m, reading r (0 whole GT, 1 cut GT), video v;
            # zeros where another rank owns the video, so the gathered sum is exact
            scores = torch.zeros(trials, len(methods), 2, n_videos, device=device)
            owned = torch.zeros(n_videos, device=device)
            shown = torch.zeros(len(methods), n_media, roll_len, *videos.shape[2:], device=device)
            chunks = range(0, n_videos, self.videos_per_chunk)
            timings = dict.fromkeys(names, 0.0)
            with _eval_mode(pl_module, self._vae):
                for t in range(trials):
                    for c, start in enumerate(chunks):
                        if c % world != rank:
                            continue
                        stop = min(start + self.videos_per_chunk, n_videos)
                        gt = videos[start:stop].to(device, torch.float32).clone()
                        for m, (name, rollout) in enumerate(methods):
                            # CPU generator: the same draws on every device type
                            gen = torch.Generator().manual_seed(self._chunk_seed(t, c))
                            tic = time.perf_counter()
                            try:
                                frames = rollout(gt[:, 0], gt[:, 1], gen).detach()
                            except torch.linalg.LinAlgError as err:
                                # a numerical failure (e.g. eigh on an untrained net) must not end
                                # training, nor leave other ranks waiting in the gather: NaN scores
                                warnings.warn(f"ExtrapolationCallback: {name} rollout of videos "
                                              f"{start}-{stop - 1} failed (rank {rank}): {err}")
                                frames = torch.full((stop - start, roll_len, *gt.shape[2:]), float("nan"),
                                                    device=device)
                            timings[name] += time.perf_counter() - tic
                            self.num_rollouts += 1
                            with torch.no_grad():
                                if frames.isnan().any():
                                    scores[t, m, :, start:stop] = float("nan")
                                else:
                                    scores[t, m, 0, start:stop] = _dtw_batch(frames, gt)
                                    scores[t, m, 1, start:stop] = _dtw_batch(frames, gt[:, :roll_len])
                            if t == 0 and start < n_media:
                                shown[m, start:min(stop, n_media)] = frames[: n_media - start]
                        owned[start:stop] = 1
                    if trials > 1:  # long in `test`: say how far it got
                        rank_zero_info(f"[{stage}] extrapolation trial {t + 1}/{trials} done")
            # collectives on every rank before anything rank-zero-only
            scores = _gather_sum(trainer, scores)
            owned = _gather_sum(trainer, owned)
            shown = _gather_sum(trainer, shown) if n_media else shown
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
                self._write_media(trainer, dm, videos, names, shown.cpu().nan_to_num(), stage, out_dir)
        self.last_scores = {name: scores[:, m].cpu() for m, name in enumerate(names)}
        self.last_seconds = timings  # this rank's rollout time per method
        self.last_shown = dict(zip(names, shown.cpu()))  # {method: (n_media, steps + 2, C, H, W)}, trial 0
        return self.last_scores

    # ------------------------------------------------------------------ pieces
    def _chunk_seed(self, trial: int, chunk: int) -> int:
        return int(np.random.SeedSequence([self.seed, trial, chunk]).generate_state(1)[0])

    def _resolve_methods(self, pl_module: LightningModule) -> list[tuple[str, Callable]]:
        from extrapolation import latent_rollout, linear_rollout, tangent_rollout

        steps = self.steps

        if _is_vae(pl_module):
            vae = pl_module
            self._vae = None
            return [("latent", _no_grad(lambda u0, u1, g: latent_rollout(vae.encode, vae.decode, u0, u1, steps, self.vae_eta)))]
        methods = []
        for name in self.methods:
            if name == "latent":
                vae = self._load_vae(pl_module)
                if vae is not None:
                    methods.append(("latent", _no_grad(
                        lambda u0, u1, g, vae=vae: latent_rollout(vae.encode, vae.decode, u0, u1, steps, self.vae_eta))))
                continue
            if not hasattr(pl_module, "denoise"):
                self._warn_once(name, f"ExtrapolationCallback: {type(pl_module).__name__} has no `denoise`; "
                                      f"method {name!r} skipped")
                continue
            if name == "tangent":
                methods.append(("tangent", _grad(lambda u0, u1, g: tangent_rollout(
                    pl_module.denoise, u0, u1, steps, self.eta, self.sigma, self.k, generator=g, **self.solver))))
            else:
                methods.append(("linear", _no_grad(lambda u0, u1, g: linear_rollout(
                    pl_module.denoise, u0, u1, steps, self.eta, self.sigma, generator=g))))
        return methods

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

    def _write_media(self, trainer: Trainer, dm, videos: Tensor, names: list[str], shown: Tensor,
                     stage: str, out_dir: Path) -> None:
        scale = self.media_scale or media.auto_scale(videos.shape[-2])
        latents = getattr(dm, "latents", None)
        latent_name = getattr(dm, "latent_name", None) or ""
        circle = latent_name.startswith("angle")
        video_paths, heat_paths, manifold_paths, captions = [], [], [], []
        for i in range(shown.shape[1]):
            gt = videos[i].float().cpu()
            caption = f"video {i}"
            clip = media.side_by_side([gt] + [shown[m, i] for m in range(len(names))],
                                      labels=["ground truth"] + names, scale=scale)
            video_paths.append(media.write_video(clip, out_dir / f"rollout_{i:02d}.{self.media_format}", self.fps))
            aligned = [_alignment(shown[m, i], gt) for m in range(len(names))]
            titles = [f"{n}: DTW-SSID {a[2]:.3f}" for n, a in zip(names, aligned)]
            fig = media.alignment_figure([a[0] for a in aligned], [a[1] for a in aligned], titles, caption)
            heat_paths.append(media.save_figure(fig, out_dir / f"alignment_{i:02d}.png"))
            if latents is not None:
                # Fig. 3: each extrapolated frame sits at the latent of its nearest ground-truth
                # frame by SSID (1 - SSIM, the metric's own frame distance): column argmin of the cost
                nearest = [a[0].argmin(0) for a in aligned]
                fig = media.manifold_figure(latents[i], nearest, names, circle, latent_name, caption)
                manifold_paths.append(media.save_figure(fig, out_dir / f"manifold_{i:02d}.png"))
            captions.append(caption)
        step = trainer.global_step
        for logger in _wandb_loggers(trainer):
            # file paths: W&B uploads the very files written above (no second encoding)
            logger.log_video(f"{stage}/rollouts", videos=[str(p) for p in video_paths], step=step,
                             caption=captions, format=[self.media_format] * len(video_paths))
            logger.log_image(f"{stage}/alignment", images=[str(p) for p in heat_paths], step=step, caption=captions)
            if manifold_paths:
                logger.log_image(f"{stage}/manifold", images=[str(p) for p in manifold_paths], step=step,
                                 caption=captions)


# ---------------------------------------------------------------------- helpers
def _is_vae(module) -> bool:
    return hasattr(module, "encode") and hasattr(module, "decode") and not hasattr(module, "denoise")


def _grad(fn):
    def wrapped(*args):
        with torch.enable_grad():  # tangent bases take JVPs / VJPs through the network
            return fn(*args)
    return wrapped


def _no_grad(fn):
    def wrapped(*args):
        with torch.no_grad():  # no graph kept across the rollout's steps
            return fn(*args)
    return wrapped


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


def _dtw_batch(prediction: Tensor, target: Tensor) -> Tensor:
    from extrapolation import dtw_ssid_batch

    return dtw_ssid_batch(prediction, target).to(prediction.device, torch.float32)


def _alignment(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor, float]:
    """(cost (T_gt, T_pred), path (L, 2) of (gt index, prediction index), DTW-SSID)."""
    from extrapolation import dtw_ssid

    value, cost, path = dtw_ssid(prediction, target, return_alignment=True)
    return cost.cpu(), torch.tensor(path), float(value)


def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
