"""Convolutional VAE of the paper's appendix A.5 (the latent-extrapolation baseline, Algorithm 3).

Encoder: five 3x3 stride-2 convs (32-64-128-256-512) with batch norm and LeakyReLU, then FC layers
to the mean and log-variance. Decoder: FC, then 3x3 stride-2 transposed convs in reverse order and
a final 3x3 conv to the image channels. Each transposed conv gets the ``output_padding`` (0 or 1)
that reproduces the encoder's spatial size at that level exactly (20-10-5-3-2-1 for MNIST,
64-32-16-8-4-2 for Weizmann), so any input size round-trips without interpolation or cropping.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class VAE(nn.Module):
    """``forward(x) -> (logits, mean, logvar)``; ``decode`` returns images in [0, 1]."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 20,
        latent_dim: int = 512,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": dict(in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, widths=list(widths)),
        }
        sizes = [image_size]
        for _ in widths:
            sizes.append((sizes[-1] + 1) // 2)  # 3x3, stride 2, padding 1
        enc, cin = [], in_channels
        for w in widths:
            enc += [nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True)]
            cin = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.bottom = (widths[-1], sizes[-1], sizes[-1])
        flat = widths[-1] * sizes[-1] ** 2
        self.fc_mean = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, flat)
        dec, outs = [], list(widths[-2::-1]) + [widths[0]]  # 512 -> 256 -> ... -> 32 -> 32
        for i, w in enumerate(outs):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            dec += [
                nn.ConvTranspose2d(cin, w, 3, stride=2, padding=1, output_padding=size_out - (2 * size_in - 1)),
                nn.BatchNorm2d(w),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cin = w
        self.decoder = nn.Sequential(*dec, nn.Conv2d(cin, in_channels, 3, padding=1))

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mean(h), self.fc_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fc_dec(z).view(-1, *self.bottom))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, logvar = self.encode_stats(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if self.training else mean
        return self.decode_logits(z), mean, logvar
