"""The networks (plain ``nn.Module``, no Lightning): the UNet noise predictor and the VAE baseline."""
from .unet import BiasFreeBatchNorm2d, UNet
from .vae import VAE

__all__ = ["BiasFreeBatchNorm2d", "UNet", "VAE"]
