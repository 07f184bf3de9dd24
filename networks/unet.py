"""UNet noise predictor phi(x) of Kadkhodaie, Guth, Simoncelli, Mallat (ICLR 2024), optionally bias-free.

Their public code (LabForComputationalVision/memorization_generalization_in_diffusion_models,
code/network.py): 3x3 convs, two conv+BN+ReLU per level, AvgPool2d(2) down, a middle block at
512 channels, ConvTranspose2d(2, stride 2) up, concatenated skip, two convs, a final conv to the
image channels, Kaiming-normal init, everything bias-free.

Sizes not divisible by 2**len(widths) (MNIST's 20x20 with three levels) are reflect-padded to the
next multiple and the output is cropped back. Reflect rather than zero padding keeps the noise
statistics at the border the same as inside (a zero border looks like a noise-free region), and
being linear and positively homogeneous it keeps the bias-free network homogeneous.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BiasFreeBatchNorm2d(nn.Module):
    """Batch norm without mean subtraction or shift: x / std_batch * gamma (running std in eval).

    The batch std is still the centred std (as in Kadkhodaie et al.); only the output is not
    centred, so in eval mode the layer is linear and homogeneous.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("running_std", torch.ones(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # float32 statistics, also under bfloat16 autocast
            std = torch.sqrt(x.float().var(dim=(0, 2, 3), keepdim=True, unbiased=False) + self.eps)
            with torch.no_grad():
                self.running_std.lerp_(std, self.momentum)
        else:
            std = self.running_std
        return x / std.to(x.dtype) * self.weight.to(x.dtype)


def _conv_block(cin: int, cout: int, bias: bool, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=bias))
        if norm:
            layers.append(nn.BatchNorm2d(cout) if bias else BiasFreeBatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Predicts the noise of a noisy image; the clean estimate is ``x - UNet(x)``.

    Args:
        in_channels: image channels (output has the same).
        widths: channels of the encoder levels; one AvgPool2d(2) after each level.
        mid_width: channels of the middle block (512 in the cited network).
        bias: False gives the bias-free network (no conv biases, :class:`BiasFreeBatchNorm2d`),
            positively homogeneous in eval mode: ``phi(a x) = a phi(x)`` for ``a > 0``.
            True adds conv biases and ordinary ``BatchNorm2d``.
        norm: batch norm after every 3x3 conv except the last.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256),
        mid_width: int = 512,
        bias: bool = True,
        norm: bool = True,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": dict(in_channels=in_channels, widths=list(widths), mid_width=mid_width, bias=bias, norm=norm),
        }
        self.multiple = 2 ** len(widths)
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_conv_block(cin, w, bias, norm))
            cin = w
        self.pool = nn.AvgPool2d(2)
        self.mid = _conv_block(cin, mid_width, bias, norm)
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        cin = mid_width
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2, bias=bias))
            self.dec.append(_conv_block(2 * w, w, bias, norm))
            cin = w
        self.out = nn.Conv2d(cin, in_channels, 3, padding=1, bias=bias)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if ph or pw:
            x = F.pad(x, pad, mode="reflect")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mid(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        x = self.out(x)
        return x[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]
