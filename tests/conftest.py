import os

# One thread per process: on a small shared CPU, torch's default of one thread per core makes the
# small convolutions here ~10x slower. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import dataclasses  # noqa: E402
from typing import ClassVar  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def toy_method():
    """A fourth method, registered for the test: one class, no model; adds `speed` x (u1 - u0) per step."""
    from extrapolation import METHODS, Method, register
    from extrapolation.rollouts import RolloutInfo

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Drift(Method):
        name: ClassVar[str] = "toy_drift"
        label: ClassVar[str] = "Toy drift"
        overrides: ClassVar[dict] = {"steps": "steps", "eta": "speed"}
        speed: float = 1.0

        def rollout(self, models, first, generators):
            step = first[:, 1] - first[:, 0]
            out = [first[:, 0], first[:, 1]]
            for _ in range(self.steps):
                out.append(out[-1] + self.speed * step)
            return torch.stack(out, 1), RolloutInfo(torch.full((first.shape[0],), -1))

        def grid(self, paper=None):
            return [self.with_overrides(speed=s) for s in (0.5, 1.0, 2.0)]

    register(Drift)
    yield Drift
    del METHODS[Drift.name]


@pytest.fixture
def strips(tmp_path):
    """Synthetic Weizmann strips: RGB, 64x64 frames side by side, one folder per action."""
    rng = np.random.default_rng(0)
    root = tmp_path / "strips"
    for action in ("0", "1"):
        (root / action).mkdir(parents=True)
        for i in range(2):
            t = 12
            yy, xx = np.mgrid[:64, :64]
            frames = [(127 + 120 * np.sin((xx + 3 * k + 7 * i) / 6.0 + rng.uniform(0, 6, 3)[:, None, None]
                                          * (yy / 64.0))).transpose(1, 2, 0) for k in range(t)]
            strip = np.concatenate(frames, axis=1).astype(np.uint8)
            Image.fromarray(strip, "RGB").save(root / action / f"{i:08d}.png")
    return root


def save_module(module, path) -> None:
    """Write a Lightning checkpoint of `module` (untrained) without a training run."""
    import lightning.pytorch as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


def tiny_denoiser(seed: int, in_channels: int = 1):
    """A tiny untrained `DenoiserModule`, weights scaled near zero: long rollouts of it stay finite."""
    from lightning_modules import DenoiserModule
    from networks import UNet

    torch.manual_seed(seed)
    module = DenoiserModule(UNet(in_channels=in_channels, widths=(4, 8), mid_width=8))
    with torch.no_grad():
        for param in module.network.parameters():
            param.mul_(0.1)
    return module


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict:
    """Untrained tiny checkpoints for the scripts: three denoisers of different seeds (`rot0`..`rot2`, training-seed
    replicates) and a VAE (`vae`), 20x20 single-channel frames as in tests/configs/rot.yaml."""
    from lightning_modules import VAEModule
    from networks import VAE

    d = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for seed in range(3):
        out[f"rot{seed}"] = d / f"rot{seed}.ckpt"
        save_module(tiny_denoiser(seed), out[f"rot{seed}"])
    torch.manual_seed(0)
    out["vae"] = d / "vae.ckpt"
    save_module(VAEModule(VAE(in_channels=1, image_size=20, latent_dim=8, widths=[4, 4, 8, 8, 8])), out["vae"])
    return out
