"""The Lightning training modules (the networks they train are in ``networks``) and the W&B logger."""
from .common import build_network, to_memory_format
from .denoiser import DenoiserModule
from .losses import InverseVarianceNoiseLoss, NoiseLoss, SqrtUniformSigma, UniformSigma, psnr
from .vae_module import VAEModule
from .wandb_logger import WandbLogger

__all__ = ["DenoiserModule", "VAEModule", "WandbLogger",
           "NoiseLoss", "InverseVarianceNoiseLoss", "UniformSigma", "SqrtUniformSigma", "psnr",
           "build_network", "to_memory_format"]

_MOVED_TO_NETWORKS = ("BiasFreeBatchNorm2d", "UNet", "VAE")


def __getattr__(name):
    # Checkpoints and configs written before the networks moved name `lightning_modules.UNet` / `.VAE`;
    # `load_from_checkpoint` resolves that class path through this module.
    if name in _MOVED_TO_NETWORKS:
        import warnings

        import networks

        warnings.warn(f"lightning_modules.{name} moved to networks.{name}", DeprecationWarning, stacklevel=2)
        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
