"""Networks (plain ``nn.Module``) and their Lightning training modules."""
from .denoiser import DenoiserModule
from .unet import BiasFreeBatchNorm2d, UNet
from .vae import VAE
from .vae_module import VAEModule
from .wandb_logger import WandbLogger

__all__ = ["BiasFreeBatchNorm2d", "DenoiserModule", "UNet", "VAE", "VAEModule", "WandbLogger"]
