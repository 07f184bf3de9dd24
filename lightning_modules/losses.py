"""The denoiser's training choices as small objects, one class per choice (as NVlabs/edm's training/loss.py).

A sigma sampler draws each training image's noise level; a noise loss scores the noise predictor phi on images
noised at those levels (paper eq. 2). ``DenoiserModule`` takes one of each (``sigma_sampler``, ``noise_loss``), so a
config names them by ``class_path`` and a new schedule or loss is one class. Each records its ``config``
(``{"class_path", "init_args"}``), which checkpoints keep. Pure PyTorch.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from errors import InputError


class _Configured:
    """Records how it was built: ``config = {"class_path", "init_args"}`` (what configs and checkpoints hold)."""

    def _record(self, **init_args) -> None:
        self.config = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": init_args}


class UniformSigma(_Configured):
    """Noise levels uniform in ``[lo, hi]``."""

    def __init__(self, lo: float = 0.0, hi: float = 0.4):
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise InputError(f"{type(self).__name__}: noise levels must satisfy 0 <= lo <= hi, got ({lo}, {hi})")
        self.lo, self.hi = float(lo), float(hi)
        self._record(lo=self.lo, hi=self.hi)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n,)`` noise levels, drawn on the CPU (so that devices draw the same ones)."""
        return self.lo + torch.rand(n, generator=generator) * (self.hi - self.lo)


class SqrtUniformSigma(UniformSigma):
    """``sqrt(sigma)`` uniform in ``[sqrt(lo), sqrt(hi)]``: more small noise levels (Kadkhodaie et al.'s
    "quadratic" schedule)."""

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        lo, hi = math.sqrt(self.lo), math.sqrt(self.hi)
        return (lo + torch.rand(n, generator=generator) * (hi - lo)) ** 2


class NoiseLoss(_Configured):
    """Paper eq. 2: each image's squared error of the predicted noise, summed over pixels; mean over the batch.

    Errors grow with sigma, so the large noise levels dominate and the small ones are fitted loosely.
    """

    def __init__(self):
        self._record()

    def __call__(self, net: Callable[[Tensor], Tensor], images: Tensor, sigma: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``images (B, C, H, W)`` noised at ``sigma (B,)`` -> (loss, per-image summed squared error ``(B,)``).

        The noise is drawn on the CPU from ``generator`` (the global generator if None).
        """
        sigma = sigma.to(images)
        noise = torch.randn(images.shape, generator=generator).to(images) * sigma.view(-1, 1, 1, 1)
        per_image = (net(images + noise) - noise).pow(2).flatten(1).sum(1)
        return self.reduce(per_image, sigma), per_image

    def reduce(self, per_image: Tensor, sigma: Tensor) -> Tensor:
        return per_image.mean()


class InverseVarianceNoiseLoss(NoiseLoss):
    """Eq. 2 with each image's error weighted by ``1 / (sigma^2 + sigma_floor^2)``, normalised over the batch.

    Every noise level is fitted to the same relative precision: the choice when extrapolating at small sigma.
    ``sigma_floor`` keeps the weight finite at sigma = 0.
    """

    def __init__(self, sigma_floor: float = 3 / 255):
        if not (math.isfinite(sigma_floor) and sigma_floor > 0):
            raise InputError(f"InverseVarianceNoiseLoss: sigma_floor must be > 0, got {sigma_floor}")
        self.sigma_floor = float(sigma_floor)
        self._record(sigma_floor=self.sigma_floor)

    def reduce(self, per_image: Tensor, sigma: Tensor) -> Tensor:
        weight = 1.0 / (sigma**2 + self.sigma_floor**2)
        return (weight * per_image).sum() / weight.sum()


def psnr(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of each image's PSNR in dB, peak 1 (images in [0, 1])."""
    mse = (estimate - target).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-12))).mean()
