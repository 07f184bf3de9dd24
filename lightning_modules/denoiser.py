"""Training a noise predictor phi (paper section 2.2, eq. 2): D(x) = x - phi(x) is the denoiser."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import nn

from errors import InputError

from .common import build_network, configure_adam, full_precision, input_shape, network_hparam, to_memory_format
from .losses import NoiseLoss, SqrtUniformSigma, UniformSigma, psnr


class DenoiserModule(pl.LightningModule):
    """Blind denoiser trained on a range of noise levels.

    Args:
        network: the noise predictor, ``(B, C, H, W) -> (B, C, H, W)`` (e.g. :class:`networks.UNet`).
        sigma_sampler: draws each training image's noise std, in units of a [0, 1] image (default
            :class:`~lightning_modules.losses.SqrtUniformSigma` ``(0, 0.4)``: uniform in sqrt(sigma), more small noise
            levels, the "quadratic" schedule of Kadkhodaie et al.; :class:`~lightning_modules.losses.UniformSigma`
            is uniform in sigma). A config names it by ``class_path``.
        noise_loss: scores the noise predictor (default :class:`~lightning_modules.losses.NoiseLoss`, eq. 2: each
            image's summed squared error weighs the same, so the large noise levels dominate and the fit at small
            sigma is loose; :class:`~lightning_modules.losses.InverseVarianceNoiseLoss` weighs each image by
            1 / (sigma^2 + sigma_floor^2), so every noise level is fitted to the same relative precision: the
            choice when extrapolating at small sigma). A config names it by ``class_path``.
        lr, lr_schedule, lr_warmup, lr_step_size, lr_gamma: Adam; "cosine" rises linearly over the first
            ``lr_warmup`` fraction of the run's steps, then anneals per step to zero at the end; "step" multiplies
            by ``lr_gamma`` every ``lr_step_size`` epochs.
        val_sigmas: fixed noise levels at which val/test report PSNR (``val/psnr_25`` for 25/255).
        val_seed: seed of the val/test noise, drawn per batch index so epochs are comparable
            (assumes an unshuffled val loader).
        channels_last: train with the network and batches in channels-last memory (the same numbers,
            faster convolutions). Under the trainer's ``precision: bf16-mixed`` only the training step
            runs in bfloat16: val/test (PSNR) always run in float32, and so do the rollouts.
    """

    def __init__(
        self,
        network: nn.Module,
        sigma_sampler: UniformSigma | None = None,
        noise_loss: NoiseLoss | None = None,
        lr: float = 1e-3,
        lr_schedule: Literal["cosine", "step", "none"] = "cosine",
        lr_warmup: float = 0.0,
        lr_step_size: int = 100,
        lr_gamma: float = 0.5,
        val_sigmas: Sequence[float] = (15 / 255, 25 / 255, 50 / 255),
        val_seed: int = 0,
        channels_last: bool = True,
    ):
        super().__init__()
        net = build_network(network)
        sampler = build_network(sigma_sampler) if sigma_sampler is not None else SqrtUniformSigma(0.0, 0.4)
        loss = build_network(noise_loss) if noise_loss is not None else NoiseLoss()
        if not (lr >= 0 and math.isfinite(lr)):  # 0 freezes the weights (tests/test_ddp.py)
            raise InputError(f"DenoiserModule: lr must be a non-negative number, got {lr}")
        if not 0 <= lr_warmup < 1:
            raise InputError(f"DenoiserModule: lr_warmup must be a fraction of the run in [0, 1), got {lr_warmup}")
        # save_hyperparameters reads these locals: class_path dicts, so checkpoints rebuild the objects
        network, sigma_sampler, noise_loss = network_hparam(net), network_hparam(sampler), network_hparam(loss)
        self.save_hyperparameters()
        self.network, self.sigma_sampler, self.noise_loss = net, sampler, loss
        self.frame_shape: tuple[int, ...] | None = None  # (C, H, W) of the training frames, saved in checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """Clean estimate ``D(x) = x - phi(x)``."""
        return x - self.network(x)

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n,)`` training noise levels (on the CPU)."""
        return self.sigma_sampler(n, generator)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss of the clean frames ``x (B, C, H, W)`` at sampled noise levels, without logging.

        Returns (loss, per-image summed squared error ``(B,)``). Noise levels and noise come from ``generator``
        (the global generator if None).
        """
        sigma = self.sample_sigma(x.shape[0], generator)
        return self.noise_loss(self.network, x, sigma, generator)

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def _step(self, x: torch.Tensor, stage: str, batch_idx: int) -> torch.Tensor:
        x = x[0] if isinstance(x, (list, tuple)) else x  # tolerate (frames, ...) batches
        x = to_memory_format(x, self.hparams.channels_last)
        if stage == "train":
            return self._loss_and_log(x, stage, batch_idx)
        with full_precision(x.device):  # held-out numbers in float32 whatever the training precision
            return self._loss_and_log(x, stage, batch_idx)

    def _loss_and_log(self, x: torch.Tensor, stage: str, batch_idx: int) -> torch.Tensor:
        b = x.shape[0]
        if stage == "train" and self.frame_shape is None:
            self.frame_shape = tuple(x.shape[1:])  # lets `predict` check user frames against it
        # val/test: the same sigmas and noise every epoch; drawn on the CPU so devices agree
        gen = None if stage == "train" else torch.Generator().manual_seed(self.hparams.val_seed * 100003 + batch_idx)
        loss, per_image = self.loss(x, gen)
        on_step = stage == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        self.log(f"{stage}/loss", loss, prog_bar=True, **kw)
        self.log(f"{stage}/mse", per_image.detach().mean() / x[0].numel(), **kw)  # per pixel, for readability
        if stage != "train":
            base = torch.randn(x.shape, generator=gen).to(x)
            for s in self.hparams.val_sigmas:
                name = round(s * 255)
                self.log(f"{stage}/psnr_{name}", psnr(self.denoise(x + s * base), x), prog_bar=name == 25, **kw)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test", batch_idx)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """The batch itself: `callbacks.ExtrapolationCallback` rolls out predict batches (frame pairs);
        without this, Lightning would call forward on them."""
        return batch

    def on_save_checkpoint(self, checkpoint):
        checkpoint["frame_shape"] = self.frame_shape

    def on_load_checkpoint(self, checkpoint):
        self.frame_shape = checkpoint.get("frame_shape")

    def input_shape(self) -> tuple[int | None, int | None, int | None]:
        """`(C, H, W)` of the frames this module takes (None where unknown): `predict` checks user frames against it."""
        return input_shape(self)

    def configure_optimizers(self):
        h = self.hparams
        return configure_adam(self, h.lr, h.lr_schedule, h.lr_step_size, h.lr_gamma, h.get("lr_warmup", 0.0))
