"""Networks, Lightning modules and the auto-offline W&B logger (fast: tiny widths)."""
import math
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_modules import DenoiserModule, VAEModule, WandbLogger
from lightning_modules.wandb_logger import has_wandb_credentials
from networks import VAE, UNet

TINY = dict(widths=(4, 8, 16), mid_width=16)


@pytest.mark.parametrize("channels,size", [(1, 20), (3, 20), (1, 64), (3, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_unet_shapes(channels, size, bias):
    net = UNet(channels, bias=bias, **TINY)
    x = torch.rand(2, channels, size, size)
    assert net(x).shape == x.shape
    assert net.eval()(x).shape == x.shape


def test_unet_default_is_the_cited_size():
    net = UNet()
    assert net.down[0][0].out_channels == 64 and net.mid[0].out_channels == 512
    assert net.down[0][0].bias is not None  # biased by default: bias-free fails on rotation (docs/choices.md)


def _trained_a_little(net, shape):
    """A few train-mode forwards so batch-norm running statistics are not the identity."""
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, *shape))
    return net.eval()


@pytest.mark.parametrize("size", [20, 32])  # 20: through the reflect padding
def test_bias_free_unet_is_homogeneous_in_eval(size):
    net = _trained_a_little(UNet(1, bias=False, **TINY), (1, size, size))
    x = torch.rand(4, 1, size, size)
    with torch.no_grad():
        y = net(x)
        for a in (0.5, 2.0, 3.0):
            torch.testing.assert_close(net(a * x), a * y, rtol=1e-4, atol=1e-5)
    assert all(p.bias is None for p in net.modules() if isinstance(p, torch.nn.Conv2d))


def test_biased_unet_is_not_homogeneous():
    net = _trained_a_little(UNet(1, bias=True, **TINY), (1, 20, 20))
    x = torch.rand(4, 1, 20, 20)
    with torch.no_grad():
        assert not torch.allclose(net(3.0 * x), 3.0 * net(x), rtol=1e-3, atol=1e-4)


def test_unet_output_depends_only_on_the_crop():
    """Padding/cropping keeps spatial alignment: a pixel change moves the output near that pixel."""
    net = UNet(1, **TINY).eval()
    x = torch.rand(1, 1, 20, 20)
    x2 = x.clone()
    x2[..., 0, 0] += 1.0
    with torch.no_grad():
        d = (net(x2) - net(x)).abs()[0, 0]
    assert d[:5, :5].sum() > d[10:, 10:].sum()


def _denoiser(**kw):
    return DenoiserModule(UNet(1, **TINY), **kw)


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    module = _denoiser()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    x = torch.rand(16, 1, 20, 20)

    def loss():  # seeded, so both evaluations see the same noise levels and noise
        return module.loss(x, torch.Generator().manual_seed(0))[0]

    module.train()  # batch statistics, as in training
    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before


def test_sigma_samplers():
    from lightning_modules import SqrtUniformSigma, UniformSigma

    gen = torch.Generator().manual_seed(0)
    u = _denoiser(sigma_sampler=UniformSigma(0.0, 0.4)).sample_sigma(20000, gen)
    s = _denoiser().sample_sigma(20000, gen)  # default: SqrtUniformSigma(0, 0.4)
    assert 0 <= u.min() and u.max() <= 0.4 and 0 <= s.min() and s.max() <= 0.4
    assert abs(u.mean() - 0.2) < 0.01
    assert abs(s.mean() - 0.4 / 3) < 0.01  # E[(0.4^0.5 U)^2] = 0.4 / 3
    for bad in ((0.3, 0.1), (-0.1, 0.2), (0.0, float("nan"))):
        with pytest.raises(ValueError, match="0 <= lo <= hi"):
            SqrtUniformSigma(*bad)


def test_denoise_is_x_minus_noise_prediction():
    module = _denoiser().eval()
    x = torch.rand(3, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(module.denoise(x), x - module.network(x))


def test_val_noise_is_fixed_across_calls():
    module = _denoiser().eval()
    logged = {}
    module.log = lambda name, value, **k: logged.setdefault(name, []).append(float(value))
    x = torch.rand(8, 1, 20, 20)
    with torch.no_grad():
        module.validation_step(x, 0)
        module.validation_step(x, 0)
    assert set(logged) >= {"val/loss", "val/mse", "val/psnr_15", "val/psnr_25", "val/psnr_50"}
    assert logged["val/loss"][0] == logged["val/loss"][1]
    assert logged["val/psnr_15"][0] > logged["val/psnr_50"][0] - 1  # untrained, but ordered noise


@pytest.mark.parametrize("channels,size", [(1, 20), (3, 64)])
def test_vae_shapes_and_api(channels, size):
    net = VAE(channels, size)
    x = torch.rand(4, channels, size, size)
    logits, mean, logvar = net(x)
    assert logits.shape == x.shape and mean.shape == logvar.shape == (4, 512)
    module = VAEModule(net).eval()
    with torch.no_grad():
        z = module.encode(x)
        y = module.decode(z)
        _, mean, _ = net(x)  # eval: batch-norm running statistics, z = posterior mean
    assert z.shape == (4, 512) and y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    torch.testing.assert_close(z, mean)


def test_vae_step_lowers_the_loss():
    torch.manual_seed(0)
    module = VAEModule(VAE(1, 20, latent_dim=16, widths=(8, 8, 8, 8, 8)), lr=1e-2)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    x = (torch.rand(16, 1, 20, 20) > 0.7).float()
    losses = []
    for _ in range(5):
        loss = module.loss(x)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


class _Frames(pl.LightningDataModule):
    def __init__(self, shape=(1, 20, 20)):
        super().__init__()
        self.data = torch.rand(16, *shape)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=8)

    val_dataloader = test_dataloader = train_dataloader


def _fit(module, tmp_path, dm=None):
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, dm or _Frames())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_denoiser_load_from_checkpoint_round_trip(tmp_path):
    module = DenoiserModule(UNet(1, bias=False, **TINY), lr=2e-3)
    path = _fit(module, tmp_path)
    loaded = DenoiserModule.load_from_checkpoint(path)
    assert isinstance(loaded.network, UNet) and loaded.hparams.lr == 2e-3
    assert loaded.hparams.lr == 2e-3
    assert loaded.network.down[0][0].bias is None  # init args restored
    x = torch.rand(2, 1, 20, 20)
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoise(x), module.denoise(x))
    # checkpoints from before the networks moved to `networks` name the class `lightning_modules.UNet`
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"]["network"]["class_path"] = "lightning_modules.UNet"
    torch.save(ckpt, path)
    assert isinstance(DenoiserModule.load_from_checkpoint(path).network, UNet)


def test_vae_load_from_checkpoint_round_trip(tmp_path):
    module = VAEModule(VAE(1, 20, latent_dim=8, widths=(4, 4, 4, 4, 4)), kl_weight=0.5)
    path = _fit(module, tmp_path)
    loaded = VAEModule.load_from_checkpoint(path).eval()
    module.eval()
    x = torch.rand(2, 1, 20, 20)
    assert loaded.hparams.kl_weight == 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), module.encode(x))


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "home").mkdir()
    yield
    import wandb

    wandb.teardown()  # wandb caches settings read from this test's environment


def test_wandb_logger_goes_offline_without_credentials(tmp_path, no_wandb_credentials):
    import wandb

    start = time.perf_counter()
    logger = WandbLogger(project="test", save_dir=str(tmp_path / "runs"))
    try:
        logger.log_metrics({"x": 1.0})
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    assert run_dir.name.startswith("offline-run-") and run_dir.is_dir()
    assert str(tmp_path / "runs") in str(run_dir)
    assert time.perf_counter() - start < 60


def test_wandb_logger_respects_wandb_mode_and_credentials(tmp_path, no_wandb_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbLogger(project="test", save_dir=str(tmp_path / "runs")).experiment.disabled
    monkeypatch.delenv("WANDB_MODE")
    assert not has_wandb_credentials()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert has_wandb_credentials()  # the logger then leaves the mode to wandb: online
    monkeypatch.delenv("WANDB_API_KEY")
    Path(os.environ["NETRC"]).write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    os.chmod(os.environ["NETRC"], 0o600)
    assert has_wandb_credentials()


class _Zero(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("weighting", ["none", "inverse_variance"])
def test_loss_weighting_matches_hand_computation(weighting):
    """Zero noise predictor: image i's summed error is ||noise_i||^2; the loss weighs it by 1 or 1/(s^2 + floor^2)."""
    from lightning_modules import InverseVarianceNoiseLoss, NoiseLoss

    floor = 0.02
    module = DenoiserModule(_Zero(), noise_loss=NoiseLoss() if weighting == "none" else InverseVarianceNoiseLoss(floor))
    sigmas = torch.tensor([0.0, 0.05, 0.3])
    module.sigma_sampler = lambda n, generator=None: sigmas
    x = torch.rand(3, 1, 8, 8)
    loss, _ = module.loss(x, torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * sigmas.view(3, 1, 1, 1)
    err = noise.pow(2).flatten(1).sum(1)
    w = torch.ones(3) if weighting == "none" else 1 / (sigmas**2 + floor**2)
    torch.testing.assert_close(loss, (w * err).sum() / w.sum())
    if weighting == "inverse_variance":  # the small-noise image counts far more than under eq. 2
        assert loss < err.mean() / 5


def test_loss_and_sampler_are_class_path_arguments_kept_by_checkpoints(tmp_path):
    """A config names the loss and the noise schedule by class_path; a checkpoint rebuilds the same objects."""
    import lightning.pytorch as pl

    from lightning_modules import InverseVarianceNoiseLoss, UniformSigma

    with pytest.raises(ValueError, match="sigma_floor must be > 0"):
        InverseVarianceNoiseLoss(0.0)
    module = DenoiserModule({"class_path": "networks.UNet", "init_args": dict(widths=[4, 8], mid_width=8)},
                            sigma_sampler={"class_path": "lightning_modules.UniformSigma", "init_args": {"hi": 0.3}},
                            noise_loss=InverseVarianceNoiseLoss(0.05))
    assert isinstance(module.sigma_sampler, UniformSigma) and module.sigma_sampler.hi == 0.3
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DenoiserModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert type(loaded.noise_loss) is InverseVarianceNoiseLoss and loaded.noise_loss.sigma_floor == 0.05
    assert (type(loaded.sigma_sampler), loaded.sigma_sampler.hi) == (UniformSigma, 0.3)
    with pytest.raises(ValueError, match="lr must be a non-negative number"):
        DenoiserModule(_Zero(), lr=float("nan"))


def test_warmup_then_cosine_schedule():
    """`lr_warmup`: linear rise over that fraction of the steps, then cosine to zero at the last step; 0 keeps
    Lightning's CosineAnnealingLR (checkpoints of the earlier recipe resume into the same scheduler)."""
    from types import SimpleNamespace

    from lightning_modules.common import configure_adam

    def lrs(warmup, total=100):
        module = torch.nn.Linear(2, 2)
        module.trainer = SimpleNamespace(estimated_stepping_batches=total)
        out = configure_adam(module, 1.0, "cosine", 100, 0.5, warmup)
        opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
        seen = []
        for _ in range(total):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return sched, seen

    sched, seen = lrs(0.1)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    assert seen[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])  # the rise
    assert seen[10] == pytest.approx(1.0) and seen[55] == pytest.approx(0.5)  # peak, then half-way down the cosine
    assert seen[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    plain, flat = lrs(0.0)
    assert isinstance(plain, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert flat[0] == 1.0 and flat[50] == pytest.approx(0.5)
