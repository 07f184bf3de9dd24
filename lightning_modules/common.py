"""Helpers shared by the Lightning modules (`build_network` and `to_memory_format` are exported by the package):
injected-network hparams, memory format, fp32 evaluation and the optimiser."""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
from typing import Any

import torch
from torch import nn


def build_network(network: Any) -> Any:
    """Accept an object (a network, a loss, a sampler) or the ``{"class_path", "init_args"}`` dict that configs and
    checkpoints hold for it."""
    if not isinstance(network, dict):
        return network
    module_path, name = network["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_path), name)
    return cls(**dict(network.get("init_args") or {}))


def network_hparam(network: Any) -> Any:
    """What goes into the hparams for an injected object: its own class_path dict if it records one (``config``).

    Under LightningCLI the CLI's config dump is saved instead (same form), so ``load_from_checkpoint`` rebuilds
    it either way; an object without ``config`` is pickled.
    """
    return getattr(network, "config", network)


def input_shape(module: nn.Module) -> tuple[int | None, int | None, int | None]:
    """`(C, H, W)` of the frames a trained module takes; None where it does not say. C: the network's
    `in_channels` (its config, else its first conv); H, W: the recorded training frame size (`frame_shape`),
    else the network's `image_size` (the VAE's)."""
    net = getattr(module, "network", module)
    init_args = (getattr(net, "config", None) or {}).get("init_args", {})
    c = init_args.get("in_channels")
    if c is None:
        conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        c = conv.in_channels if conv is not None else None
    shape = getattr(module, "frame_shape", None)
    if shape is not None:
        return (c if c is not None else int(shape[0])), int(shape[-2]), int(shape[-1])
    size = init_args.get("image_size")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        return c, int(h), int(w)
    return c, None, None


def configure_adam(module, lr: float, lr_schedule: str, step_size: int, gamma: float, warmup: float = 0.0):
    """Adam with the schedule `lr_schedule`; "cosine" rises linearly over the first `warmup` fraction of the run's
    steps, then anneals to zero at the last step."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    if lr_schedule == "none":
        return optimizer
    if lr_schedule == "cosine":  # per step, over the whole run
        total = max(int(module.trainer.estimated_stepping_batches), 1)
        rise = int(round(warmup * total))
        if rise == 0:  # the same schedule as LambdaLR(_warmup_cosine), and earlier checkpoints resume into it
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_warmup_cosine, rise=rise,
                                                                                       total=total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    if lr_schedule == "step":  # the cited work: halve every 100 epochs
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    raise ValueError(f"lr_schedule must be 'cosine', 'step' or 'none', got {lr_schedule!r}")


def _warmup_cosine(step: int, rise: int, total: int) -> float:
    if step < rise:
        return (step + 1) / (rise + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - rise, total - rise) / max(total - rise, 1)))


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Image batches in channels-last memory (faster convolutions on CPU and GPU, same values)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def full_precision(device: torch.device):
    """Autocast off: validation, test and rollouts run in float32 even under `precision: bf16-mixed`."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else contextlib.nullcontext()
