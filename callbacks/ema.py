"""`EMA`: Lightning's weight averaging with a half-life in training images and a ramp-up (as NVlabs/edm's training loop).

Lightning's `EMAWeightAveraging` (fixed decay) swaps the average in for validation and back at the end of the
validation epoch, so a callback that rolls out in `on_validation_epoch_end` can run before the swap back or after
it, by callback order. Here the average stays in until `on_validation_end`, after every epoch-end hook and before
`ModelCheckpoint` (which Lightning always runs last): validation PSNR, the extrapolation callback's rollouts and
the checkpoint's `state_dict` all hold the average; the raw weights travel in `current_model_state` and a resumed
fit continues both (Lightning's own checkpoint hooks).
"""
from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging

from errors import InputError


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and BatchNorm buffers), updated after every optimizer step.

    Args:
        half_life: images after which an old weight's share of the average halves (NVlabs/edm's
            `ema_halflife_kimg`, here in images); the decay per step is ``0.5 ** (images per step / half_life)``.
        rampup: early on the half-life is at most ``rampup`` x the images seen so far (edm's `ema_rampup_ratio`),
            so the average does not drag the random initial weights along; None: the fixed half-life from step 1.
    """

    def __init__(self, half_life: float = 20_000, rampup: float | None = 0.1):
        if not (isinstance(half_life, (int, float)) and half_life > 0):
            raise InputError(f"EMA: half_life must be a positive number of images, got {half_life!r}")
        if rampup is not None and not (isinstance(rampup, (int, float)) and rampup > 0):
            raise InputError(f"EMA: rampup must be a positive ratio or null, got {rampup!r}")
        self.half_life, self.rampup = float(half_life), rampup
        self._beta = 0.0
        super().__init__(use_buffers=True, multi_avg_fn=self._lerp)

    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        # AveragedModel copies the weights at its first update (num_averaged 0) and calls this from the second on
        # AveragedModel groups the tensors by dtype: integer buffers (BatchNorm's batch count) are copied
        if averaged and averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - self._beta)
        else:
            torch._foreach_copy_(averaged, current)

    def decay(self, images_seen: float, images_per_step: float) -> float:
        """The per-step decay after `images_seen` training images (all devices)."""
        half = self.half_life if self.rampup is None else min(self.half_life, images_seen * self.rampup)
        return 0.5 ** (images_per_step / max(half, 1e-8))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        frames = batch[0] if isinstance(batch, (list, tuple)) else batch
        per_step = len(frames) * trainer.world_size * trainer.accumulate_grad_batches
        self._beta = self.decay(trainer.global_step * per_step, per_step)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        """The average stays in until `on_validation_end` (rollouts run in other callbacks' epoch-end hooks)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        # which weights `state_dict` holds: what test, predict and the scripts load
        checkpoint["weights"] = "ema" if "current_model_state" in checkpoint else "raw"
