"""Training the VAE baseline (paper appendix A.5): negative ELBO with a Bernoulli (BCE) likelihood.

BCE rather than MSE: frames are in [0, 1] (MNIST nearly binary), BCE is the usual likelihood for
them and needs no noise-variance hyperparameter balancing it against the KL.
"""
from __future__ import annotations

import math
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from errors import InputError

from .common import build_network, configure_adam, full_precision, input_shape, network_hparam, to_memory_format


class VAEModule(pl.LightningModule):
    """Loss per image = BCE summed over pixels + ``kl_weight`` * KL(q(z|x) || N(0, I)), batch mean.

    Val/test reconstruct from the posterior mean (the network's eval mode), so their
    ``recon`` is deterministic and comparable across epochs. ``channels_last``: as in ``DenoiserModule``;
    under ``precision: bf16-mixed`` only the training step runs in bfloat16, the loss always in float32.
    """

    def __init__(
        self,
        network: nn.Module,
        lr: float = 5e-3,
        kl_weight: float = 1.0,
        lr_schedule: Literal["cosine", "step", "none"] = "cosine",
        lr_step_size: int = 100,
        lr_gamma: float = 0.5,
        channels_last: bool = True,
    ):
        super().__init__()
        if not (lr >= 0 and math.isfinite(lr)):
            raise InputError(f"VAEModule: lr must be a non-negative number, got {lr}")
        net = build_network(network)
        network = network_hparam(net)  # save_hyperparameters reads this local
        self.save_hyperparameters()
        self.network = net

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean ``(B, latent_dim)``."""
        return self.network.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1]."""
        return self.network.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, reconstruction BCE, KL) of the frames ``x (B, C, H, W)``, each per image, without logging."""
        b = x.shape[0]
        logits, mean, logvar = (t.float() for t in self.network(x))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum() / b
        return recon + self.hparams.kl_weight * kl, recon, kl

    def setup(self, stage: str) -> None:
        if self.hparams.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def _step(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        x = x[0] if isinstance(x, (list, tuple)) else x
        x = to_memory_format(x, self.hparams.channels_last)
        b = x.shape[0]
        if stage == "train":
            loss, recon, kl = self.loss(x)
        else:
            with full_precision(x.device):
                loss, recon, kl = self.loss(x)
        on_step = stage == "train"
        kw = dict(on_step=on_step, on_epoch=not on_step, batch_size=b, sync_dist=not on_step)
        self.log(f"{stage}/loss", loss, prog_bar=True, **kw)
        self.log(f"{stage}/recon", recon, **kw)
        self.log(f"{stage}/kl", kl, **kw)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def input_shape(self) -> tuple[int | None, int | None, int | None]:
        """`(C, H, W)` of the frames this module takes (None where unknown): `predict` checks user frames against it."""
        return input_shape(self)

    def configure_optimizers(self):
        h = self.hparams
        return configure_adam(self, h.lr, h.lr_schedule, h.lr_step_size, h.lr_gamma)
