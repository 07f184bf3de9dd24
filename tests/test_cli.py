"""The configs through `train.main` in-process: fit, resume from `last`, test (cwd = tmp dir)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["rot", "trans", "weizmann", "vae_rot", "vae_trans", "vae_weizmann"]


@pytest.fixture(autouse=True)
def offline_in_tmp(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr("sys.argv", ["train.py"])  # pytest's own arguments are not the CLI's
    monkeypatch.chdir(tmp_path)  # relative run folders (runs/...) land here
    yield
    wandb.finish()  # two CLI runs in one process would share the open run
    wandb.teardown()  # and wandb caches the settings it read from the environment


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


def _args(name, strips, tiny):
    cfg = ROOT / "configs" / ("tiny" if tiny else "") / f"{name}.yaml"
    args = ["--config", str(cfg)]
    if "weizmann" in name:
        args.append(f"--data.init_args.data_dir={strips}")
        if not tiny:
            args += ["--data.init_args.num_val_frames=8", "--data.init_args.clip_length=3",
                     "--data.init_args.num_clips=2"]
    if not tiny:
        args += ["--data.init_args.batch_size=4"]
    return args


@pytest.mark.parametrize("name", CONFIGS)
def test_fit_fast_dev_run_every_config(name, strips):
    cli = train.main(["fit", *_args(name, strips, tiny=False), "--trainer.fast_dev_run=1"])
    metrics = cli.trainer.callback_metrics
    assert "train/loss" in metrics and "val/loss" in metrics
    assert torch.isfinite(metrics["val/loss"])
    if not name.startswith("vae"):
        assert {"val/psnr_15", "val/psnr_25", "val/psnr_50"} <= set(metrics)
    else:
        assert {"val/recon", "val/kl"} <= set(metrics)


@pytest.mark.parametrize("name", ["rot", "vae_weizmann"])
def test_fit_resume_and_test(name, strips, tmp_path, caplog):
    """Each run its own version folder; `--ckpt_path last` is the experiment's newest checkpoint for fit and test."""
    import logging

    import wandb

    caplog.set_level(logging.INFO)
    exp = tmp_path / "runs" / f"tiny_{name}"
    base = _args(name, strips, tiny=True)
    cli = train.main(["fit", *base])
    steps_per_epoch = cli.trainer.global_step
    ckpt = exp / "version_0" / "checkpoints" / "last.ckpt"
    assert steps_per_epoch > 0 and ckpt.is_file()
    assert (exp / "version_0" / "checkpoints" / f"epoch=0-step={steps_per_epoch}.ckpt").is_file()
    assert (exp / "version_0" / "metrics.csv").is_file() and (exp / "version_0" / "config.yaml").is_file()
    assert list((exp / "version_0" / "wandb").glob("offline-run-*"))  # W&B beside the CSV logs
    wandb.finish()

    cli = train.main(["fit", *base, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    assert f"fit: resuming from {Path('runs', f'tiny_{name}', 'version_0', 'checkpoints', 'last.ckpt')}" in caplog.text
    assert cli.trainer.current_epoch == 2
    assert cli.trainer.global_step == 2 * steps_per_epoch  # one more epoch, not two
    adam = cli.trainer.optimizers[0]
    state = adam.state[next(iter(cli.model.parameters()))]
    assert int(state["step"]) == 2 * steps_per_epoch  # optimiser state came from the checkpoint
    assert cli.trainer.log_dir == str(Path("runs", f"tiny_{name}", "version_1"))  # a folder of its own
    newest = exp / "version_1" / "checkpoints" / "last.ckpt"
    assert newest.is_file() and ckpt.is_file()  # the resumed run left version_0's files alone
    assert sorted(p.name for p in (exp / "version_1" / "checkpoints").iterdir()) == [
        f"epoch=1-step={2 * steps_per_epoch}.ckpt", "last.ckpt"]  # no last-v1.ckpt
    wandb.finish()

    caplog.clear()
    cli = train.main(["test", *base, "--ckpt_path", "last"])
    assert "test: loading runs/tiny_%s/version_1/checkpoints/last.ckpt (run runs/tiny_%s/version_1, epoch 1, step %d)" % (
        name, name, 2 * steps_per_epoch) in caplog.text
    assert cli.trainer.ckpt_path == str(Path("runs", f"tiny_{name}", "version_1", "checkpoints", "last.ckpt"))
    metrics = cli.trainer.callback_metrics
    assert "test/loss" in metrics and torch.isfinite(metrics["test/loss"])
    if name == "rot":
        assert {"test/psnr_15", "test/psnr_25", "test/psnr_50"} <= set(metrics)
    assert (exp / "version_2" / "config.yaml").is_file()

    # the CLI stores the network as a class_path dict: plain load_from_checkpoint rebuilds it
    loaded = type(cli.model).load_from_checkpoint(newest)
    assert type(loaded.network) is type(cli.model.network)
    for a, b in zip(loaded.state_dict().values(), cli.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_fit_without_wandb_credentials_goes_offline(tmp_path, monkeypatch):
    """No WANDB_MODE, no key: the config's WandbLogger logs offline instead of failing."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    cli = train.main(["fit", *_args("rot", None, tiny=True), "--trainer.limit_train_batches=1",
                      "--trainer.limit_val_batches=1"])
    assert cli.trainer.loggers[1].experiment.settings.mode == "offline"
    assert list((tmp_path / "runs" / "tiny_rot" / "version_0" / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("**/*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_last_checkpoint_is_the_latest_epoch(config):
    """With a `monitor`, Lightning 2.6 rewrites last.ckpt only when the monitored value improves: `--ckpt_path last`
    would resume (and the table would evaluate) an older epoch. Every ModelCheckpoint keeps monitor null."""
    import yaml

    callbacks = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("callbacks") or []
    for cb in callbacks:
        if cb["class_path"].endswith("ModelCheckpoint"):
            assert cb["init_args"].get("save_last") is True, config
            assert cb["init_args"].get("monitor") is None, f"{config}: monitor {cb['init_args']['monitor']!r}"
