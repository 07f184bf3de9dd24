"""The configs through `train.main` in-process: fit, resume from `last`, test (cwd = tmp dir); the one-line errors
of `train.py` (`cli.run`); two fits at once."""
import csv
import os
import re
from pathlib import Path

import pytest
import torch

import train

ROOT = Path(__file__).resolve().parents[1]
# every experiment config: configs/*.yaml but the shared base and the predict overlay
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem not in ("base", "predict"))


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


def _args(name, strips, tiny):
    cfg = (ROOT / "tests" / "configs" if tiny else ROOT / "configs") / f"{name}.yaml"
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
    assert not Path("runs").exists()  # a smoke run writes nothing: no checkpoint that `last` could pick up
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
    cli = train.main(["fit", *base, "--ckpt_path", "last"])
    assert f"no checkpoint of runs/tiny_{name} yet; training from random weights" in caplog.text
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


def test_fit_without_wandb_credentials_goes_offline(tmp_path, monkeypatch, caplog, recwarn):
    """No WANDB_MODE, no key: the config's WandbLogger logs offline instead of failing. The first screen carries
    no noise: no W&B git-root warning, no Lightning tips, no deprecation warning of ours or Lightning's."""
    import logging

    import wandb

    caplog.set_level(logging.INFO)
    wandb_warnings = []
    monkeypatch.setattr(wandb, "termwarn", lambda msg, *a, **k: wandb_warnings.append(msg))
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
    assert "W&B: no credentials configured, logging offline" in caplog.text
    assert not [w for w in wandb_warnings if "git root" in w], wandb_warnings
    assert "Tip:" not in caplog.text
    ours = [w for w in recwarn if "deprecat" in str(w.message).lower()
            and (str(ROOT) in w.filename or "LeafSpec" in str(w.message))]  # the Leafspec one shows on every run
    assert not ours, [f"{w.filename}: {w.message}" for w in ours]


# every config file but the settings files and configs/base.yaml, which lies under each of them
CONFIG_FILES = sorted(p for p in [*(ROOT / "configs").glob("**/*.yaml"), *(ROOT / "tests" / "configs").glob("*.yaml")]
                      if p.parent.name != "extrapolation" and p.name != "base.yaml")


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_composes(config):
    """Each file validates as used: an experiment config alone (over base.yaml), an overlay after configs/rot.yaml.
    With a `monitor`, Lightning 2.6 rewrites last.ckpt only when the monitored value improves: `--ckpt_path last`
    would resume (and the table would evaluate) an older epoch. Every ModelCheckpoint keeps monitor null."""
    from cli import experiment_folder, load_config

    overlay = config.stem == "predict" or config.parent.name == "predict"  # comes after a training config
    cfg = load_config([*(["--config", ROOT / "configs/rot.yaml"] if overlay else []), "--config", config])
    assert experiment_folder(cfg).parent == Path("runs") and (ROOT / cfg.extrapolation.settings).is_file()
    checkpoints = [cb for cb in cfg.trainer.callbacks if cb.class_path.endswith("ModelCheckpoint")]
    assert len(checkpoints) == 1  # an overlay keeps the training config's callbacks: `--ckpt_path last` finds them
    if overlay:  # predict writes with the training config's extrapolation settings
        assert cfg.extrapolation.settings == "configs/extrapolation/rot.yaml"
    for cb in checkpoints:
        assert cb.init_args.save_last is True and cb.init_args.monitor is None, config


# ---------------------------------------------------------------------- one clear line for user mistakes
def _run(args, capsys):
    """`train.py ARGS` in-process: (exit status, the `error:` lines, all of stderr)."""
    import cli

    rc = cli.run(args)
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.startswith("error:")], err


def _runs(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs").glob("*/version_*")) \
        if (tmp_path / "runs").is_dir() else []


@pytest.mark.parametrize("sub", ["test", "validate", "predict"])
def test_evaluation_needs_a_loaded_checkpoint(sub, tmp_path, capsys):
    """test / validate / predict never run random weights: no --ckpt_path, 'last' with nothing, a missing file."""
    config = ["--config", str(ROOT / "tests/configs/vae_trans.yaml")]
    if sub == "predict":
        config = ["--config", str(ROOT / "tests/configs/rot.yaml"), "--config", str(ROOT / "configs/predict.yaml"),
                  "--data.pairs", "[[a.png, b.png]]"]
    exp = "tiny_rot" if sub == "predict" else "tiny_vae_trans"
    cases = {(): re.escape(f"{sub} needs trained weights: pass --ckpt_path last (the newest checkpoint of runs/{exp})"),
             ("--ckpt_path", "last"): rf"--ckpt_path last: no complete checkpoint in runs/{exp}/version_\*/checkpoints/ "
                                      rf"\(relative to {tmp_path}\)",
             ("--ckpt_path", "nope.ckpt"): r"--ckpt_path nope.ckpt: no such checkpoint file or experiment folder"}
    for extra, expected in cases.items():
        rc, errors, err = _run([sub, *config, *extra], capsys)
        assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert re.search(expected, errors[0]), errors[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_a_checkpoint_of_another_model_is_one_line(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.0"},
               tmp_path / "other.ckpt")
    rc, errors, err = _run(["test", "--config", str(ROOT / "tests/configs/rot.yaml"), "--ckpt_path", "other.ckpt"], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"--ckpt_path other.ckpt does not fit the config's model DenoiserModule \(missing keys network\.\S+, "
                     r".*\(\+\d+ more\); unexpected keys w\): pass the training config", errors[0]), errors[0]
    assert _runs(tmp_path) == []


def _truncated_idx(folder: Path) -> Path:
    folder.mkdir()
    header = (0x0803).to_bytes(4, "big") + (12).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(28 * 28 * 11 + 5))
    return folder


@pytest.mark.parametrize("args, expected", [
    (["--trainer.max_epochs=x"], r"--trainer.max_epochs: Expected a <class 'int'>; Given value: x"),
    (["--model.init_args.noise_loss=bogus"], r"--model \(lightning_modules.DenoiserModule\): .*noise_loss"),
    (["--data.init_args.nope=1"], r"--data \(datamodules.RotatedMNISTDataModule\): Option 'nope' is not accepted"),
    (["--data.init_args.batch_size=0"], r"batch_size must be a positive integer, got 0"),
    (["--model.init_args.lr_schedule=bogus"], r"lr_schedule"),
    (["--data.init_args.indices=[0,99]"], r"MNIST indices \[99\] need data_dir"),
    (["--data.init_args.indices=[10]", "--data.init_args.data_dir=idx"], r"idx/train-images-idx3-ubyte has 8645 bytes, expected 9424 .*\(truncated\)"),
    (["--extrapolation.methods=[bogus]"], r"has no settings for \['bogus'\]"),
    # an extrapolation.SettingsError is an InputError: one line
    (["--extrapolation.profile=bogus"], r"ExtrapolationCallback: .*rot.yaml: no profile 'bogus'; it has \['paper', 'selected', 'substeps1', 'reference'\]"),
    (["--dataset=mnist"], r"settings file configs/extrapolation/mnist.yaml does not exist"),
    (["--extrapolation.profile=paper", "--extrapolation.k=100000"], r"tangent.step.k must be in \[1, 400\]"),  # raised in the callback's setup, in fit
    (["--extrapolation.k=2"], r"tangent: k applies to an eigen-projection step, not A\^2 v"),  # the selected step has no k
    (["--config", "nonexist.yaml"], r"--config: File does not exist: .*nonexist.yaml"),
    (["--model.init_args.lr=-1"], r"DenoiserModule: lr must be a non-negative number, got -1.0"),
    (["--model.init_args.lr=.nan"], r"DenoiserModule: lr must be a non-negative number, got nan"),
    (["--trainer.max_epochs=-5"], r"--trainer: `max_epochs` must be a non-negative integer or -1. You passed in -5"),
    (["--data.init_args.step_deg=.nan"], r"step_deg must be a finite number, got nan"),
])
def test_user_mistakes_end_in_one_line(args, expected, tmp_path, capsys):
    _truncated_idx(tmp_path / "idx")
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), *args], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(expected, errors[0]), errors[0]
    assert _runs(tmp_path) == []  # a run that failed on its input leaves no folder behind


@pytest.mark.parametrize("text, expected", [
    ("", r"settings.yaml is empty or not a mapping"),
    ("steps: 3\nselected:\n  tangent: {eta: 1, sigma: 0.1}\n  bogus: {eta: 1}\n", r"unknown method 'bogus'"),
    ("steps: 3\nselected:\n  tangent: {eta: 1}\n", r"tangent: missing settings \['sigma'\]"),
    ("steps: 3\nselected:\n  linear: {eta: 1, sigma: 0.1, nope: 2}\n", r"linear: .*nope"),
    ("steps: 3\nselected:\n  linear: {eta: 1, sigma: 40/0}\n", r"settings.yaml \[selected\]: linear.sigma .*division by zero"),
    ("steps: 3\nselected:\n  linear: {eta: 1\n", r"settings.yaml is not valid YAML at line \d+, column \d+"),
    (None, r"settings file .*missing.yaml does not exist"),
])
def test_settings_file_mistakes_end_in_one_line(text, expected, tmp_path, capsys):
    settings = tmp_path / "settings.yaml"
    if text is None:
        settings = tmp_path / "missing.yaml"
    else:
        settings.write_text(text)
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), f"--extrapolation.settings={settings}",
                            "--extrapolation.methods=[linear]"], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(expected, errors[0]), errors[0]
    assert _runs(tmp_path) == []


def test_translated_nan_step_is_one_line(tmp_path, capsys):
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/trans.yaml"), "--data.init_args.step_px=.nan"],
                           capsys)
    assert rc == 2 and errors == ["error: step_px must be a finite number, got nan"] and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_asked_for_on_a_machine_without_one_is_one_line(tmp_path, capsys):
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), "--trainer.accelerator=gpu"], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"--trainer: No supported gpu backend found! \(accelerator=gpu", errors[0]), errors[0]


def test_a_constructor_error_inside_the_logger_list_is_one_line(tmp_path, monkeypatch, capsys):
    """jsonargparse tries each type of trainer.logger's Union and reports a constructor's error only as text;
    the InputError the WandbLogger raises (an unknown WANDB_MODE) still ends in its own one line."""
    monkeypatch.setenv("WANDB_MODE", "bogus")
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml")], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("error: WANDB_MODE=bogus is not a W&B mode: set it to online, offline"), errors[0]
    assert _runs(tmp_path) == []


# ---------------------------------------------------------------------- a checkpoint must not change the experiment
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One-step checkpoints of the tiny rotated and translated denoisers and of the rotated VAE, made by `fit`."""
    import wandb

    root = tmp_path_factory.mktemp("checkpoints")
    cwd = Path.cwd()
    try:
        os.chdir(root)
        for name in ("rot", "trans", "vae_rot"):
            train.main(["fit", "--config", str(ROOT / f"tests/configs/{name}.yaml"), "--trainer.max_steps=1",
                        "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.logger=false",
                        "--extrapolation.methods=[latent]" if name.startswith("vae") else "--extrapolation.methods=[linear]",
                        "--trainer.enable_progress_bar=false"])
            wandb.finish()
    finally:
        os.chdir(cwd)
    found = {name: root / "runs" / f"tiny_{name}" for name in ("rot", "trans", "vae_rot")}
    assert all((f / "version_0" / "checkpoints" / "last.ckpt").is_file() for f in found.values())
    return found


def test_a_checkpoint_of_another_model_class_is_refused(checkpoints, tmp_path, capsys):
    """A denoiser checkpoint under the VAE config trained a DenoiserModule into runs/tiny_vae_rot; a VAE checkpoint
    under the denoiser config tested the VAE: both stop before anything runs."""
    cases = [("fit", "vae_rot", "rot", "holds a DenoiserModule (lightning_modules.DenoiserModule), but the config's "
                                       "model is lightning_modules.VAEModule"),
             ("test", "rot", "vae_rot", "holds a VAEModule (lightning_modules.VAEModule), but the config's model is "
                                        "lightning_modules.DenoiserModule")]
    for sub, config, ckpt, expected in cases:
        rc, errors, err = _run([sub, "--config", str(ROOT / f"tests/configs/{config}.yaml"), "--ckpt_path",
                                str(checkpoints[ckpt])], capsys)
        assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert expected in errors[0] and f"tiny_{ckpt}/version_0/config.yaml" in errors[0], errors[0]
    assert not (tmp_path / "runs").exists()


def test_a_command_line_model_option_that_contradicts_the_checkpoint_is_refused(checkpoints, tmp_path, capsys):
    """Lightning rebuilds the model from the checkpoint's hyper-parameters: the option would be dropped silently."""
    for option, expected in (("--model.init_args.network.init_args.widths=[8,16,32]",
                              r"--model.init_args.network.init_args.widths=\[8, 16, 32\] contradicts --ckpt_path "
                              r".*tiny_rot/version_0/checkpoints/last.ckpt, whose model has network.widths=\[4, 8, 16\]"),
                             ("--model.init_args.lr=0.01", r"--model.init_args.lr=0.01 contradicts .* lr=0.001")):
        rc, errors, err = _run(["test", "--config", str(ROOT / "tests/configs/rot.yaml"), "--ckpt_path",
                                str(checkpoints["rot"]), option], capsys)
        assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert re.search(expected, errors[0]), errors[0]
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_of_other_data_or_network_is_said(checkpoints, tmp_path, capsys, caplog):
    """A translated checkpoint scored under the rotated config, and the full-size network of configs/rot.yaml
    replaced by the checkpoint's: each said in a warning line; an option that agrees with the checkpoint is fine."""
    import logging

    caplog.set_level(logging.INFO)
    cli = train.main(["validate", "--config", str(ROOT / "configs/rot.yaml"), "--ckpt_path", str(checkpoints["trans"]),
                      "--data.init_args.indices=[0,1]", "--data.init_args.num_frames=20", "--trainer.logger=false",
                      "--data.init_args.num_val_frames=8", "--trainer.limit_val_batches=1",
                      "--data.init_args.batch_size=8", "--extrapolation.methods=[linear]", "--extrapolation.steps=2",
                      "--model.init_args.network.init_args.widths=[4,8,16]", "--trainer.enable_progress_bar=false"])
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert re.search(r"holds another network than the config's \(mid_width 256 -> 16\); the checkpoint's network is "
                     r"used", warnings[0]), warnings
    assert re.search(r"was trained on other data than this run's \(datamodules.TranslatedMNISTDataModule instead of "
                     r"datamodules.RotatedMNISTDataModule\)", warnings[1]), warnings
    assert type(cli.datamodule).__name__ == "RotatedMNISTDataModule"  # as configured: said, not refused
    assert list(cli.model.network.config["init_args"]["widths"]) == [4, 8, 16]


def test_vae_checkpoint_is_resolved_and_checked_at_start_up(checkpoints, tmp_path, monkeypatch, capsys, caplog):
    """A vae_checkpoint that holds a denoiser stops the run before the trainer starts (it was found after a whole
    training epoch); a VAE is loaded by the CLI and handed to the callback; a folder without a checkpoint yet
    skips `latent` with one warning."""
    import functools
    import logging

    import lightning.pytorch as pl

    from lightning_modules import VAEModule

    started, fit = [], pl.Trainer.fit

    @functools.wraps(fit)  # LightningCLI reads the subcommand's options from its signature
    def no_fit(self, *args, **kwargs):
        started.append(1)

    monkeypatch.setattr(pl.Trainer, "fit", no_fit)
    base = ["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), "--extrapolation.methods=[linear,latent]",
            "--trainer.logger=false"]
    rc, errors, err = _run([*base, f"--extrapolation.vae_checkpoint={checkpoints['rot']}"], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"error: extrapolation.vae_checkpoint .*tiny_rot/version_0/checkpoints/last.ckpt holds a "
                     r"DenoiserModule, expected a VAEModule", errors[0]), errors[0]
    assert not started and _runs(tmp_path) == []

    cli = train.main([*base, f"--extrapolation.vae_checkpoint={checkpoints['vae_rot']}"])
    callback = cli.config_init.fit.extrapolation
    assert started and isinstance(callback.vae, VAEModule) and not callback.vae.training  # handed over at start-up

    caplog.set_level(logging.INFO)
    cli = train.main([*base, f"--extrapolation.vae_checkpoint={tmp_path / 'runs' / 'vae_not_trained_yet'}"])
    warnings = [r.getMessage() for r in caplog.records if "latent" in r.getMessage() and "skipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: extrapolation: method 'latent' skipped"), warnings
    assert cli.config_init.fit.extrapolation.methods == ("linear",)


def test_weizmann_data_folder_from_the_environment(strips, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WEIZMANN_DIR", raising=False)
    rc, errors, _ = _run(["fit", "--config", str(ROOT / "tests/configs/weizmann.yaml")], capsys)
    assert rc == 2 and re.search(r"data_dir data/weizmann does not exist .*WEIZMANN_DIR", errors[0]), errors
    monkeypatch.setenv("WEIZMANN_DIR", str(strips))
    for name in ("weizmann", "vae_weizmann"):
        cli = train.main(run=False, args=["--config", str(ROOT / "configs" / f"{name}.yaml"), "--trainer.logger=false"])
        assert Path(cli.datamodule.data_dir) == strips


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import cli
    from datamodules import RotatedMNISTDataModule

    def broken(self):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr(RotatedMNISTDataModule, "load_videos", broken)
    with pytest.raises(ValueError, match="internal mistake"):
        cli.run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml")])


def test_fit_without_a_logger(tmp_path):
    """--trainer.logger=false: no LearningRateMonitor crash; checkpoints and config still in the run folder."""
    cli = train.main(["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), "--trainer.logger=false",
                      "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                      "--extrapolation.methods=[linear]"])
    assert not cli.trainer.loggers
    run = tmp_path / "runs" / "tiny_rot" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert not (run / "wandb").exists()


# ---------------------------------------------------------------------- W&B without a reachable server
def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections are refused


def _wandb_with_a_key(tmp_path, monkeypatch, port: int) -> None:
    """An empty home, a (fake) API key and the W&B server at a loopback port; wandb forgets earlier settings."""
    import wandb

    home = tmp_path / "home"
    home.mkdir()
    for var in ("WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    wandb.teardown()  # forget settings read from another test's environment


@pytest.fixture
def unreachable_wandb(tmp_path, monkeypatch):
    """A stale key and a W&B server that does not answer (a closed loopback port)."""
    import wandb

    _wandb_with_a_key(tmp_path, monkeypatch, _closed_port())
    yield
    wandb.finish()
    wandb.teardown()


def test_wandb_goes_offline_within_seconds_when_its_server_is_unreachable(tmp_path, unreachable_wandb):
    import time

    from lightning_modules import WandbLogger

    start = time.perf_counter()
    logger = WandbLogger(project="test", save_dir=str(tmp_path / "runs"))
    run = logger.experiment
    assert time.perf_counter() - start < 20  # wandb's own retries last about 100 s
    assert run.settings.mode == "offline" and logger._offline_reason.startswith("cannot reach http://127.0.0.1:")


def test_wandb_online_asked_for_but_unreachable_is_one_line(tmp_path, unreachable_wandb, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml")], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"W&B server http://127.0.0.1:\d+ cannot be reached .*set WANDB_MODE=offline", errors[0])
    assert _runs(tmp_path) == []


@pytest.fixture
def refusing_wandb(tmp_path, monkeypatch):
    """A key that a W&B server refuses: a local server that answers every request with 401."""
    import http.server
    import threading

    import wandb

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"errors": [{"message": "user is not logged in"}]}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _wandb_with_a_key(tmp_path, monkeypatch, server.server_address[1])
    yield
    server.shutdown()
    wandb.finish()
    wandb.teardown()


def test_a_wandb_server_that_refuses_the_key_is_one_line(tmp_path, refusing_wandb, capsys):
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml")], capsys)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(r"W&B run could not start at http://127.0.0.1:\d+ \(CommError: .*401.*\): check WANDB_API_KEY .*"
                     r"or set WANDB_MODE=offline", errors[0]), errors[0]
    assert _runs(tmp_path) == []


# ---------------------------------------------------------------------- faults: a full disk, SIGTERM
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """Every write to metrics.csv fails as on a full disk (it is /dev/full): one line naming where, no traceback
    and none of W&B's own errors."""
    import cli

    real = cli.new_version_dir

    def full_disk(experiment):
        run = real(experiment)
        (run / "metrics.csv").symlink_to("/dev/full")
        return run

    monkeypatch.setattr(cli, "new_version_dir", full_disk)
    rc, errors, err = _run(["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), "--extrapolation.methods=[linear]",
                            "--trainer.enable_progress_bar=false"], capsys)
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err and "Logging error" not in err, err
    assert re.fullmatch(r"error: cannot write runs/tiny_rot/version_0: No space left on device", errors[0]), errors[0]


def test_sigterm_stops_fit_with_a_failure_status_and_a_complete_checkpoint(tmp_path):
    """A scheduler that ends a job with SIGTERM must not read it as finished (exit 0): exit 143, after Lightning
    stopped at a batch boundary; the checkpoints are complete and `--ckpt_path last` resumes from them."""
    import signal
    import subprocess
    import sys
    import time

    from run_folders import checkpoint_info, is_complete

    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "tests/configs/rot.yaml"),
                             "--trainer.max_epochs=100000", "--extrapolation.methods=[linear]", "--trainer.logger=false",
                             "--extrapolation.every_n_epochs=100000", "--trainer.enable_progress_bar=false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "runs" / "tiny_rot" / "version_0" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not last.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert last.is_file(), proc.communicate(timeout=30)[0] if proc.poll() is not None else "no checkpoint in 120 s"
        time.sleep(0.5)  # into a later epoch
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output
    assert "Traceback" not in output and "stopped by SIGTERM (exit status 143)" in output, output
    files = sorted((last.parent).iterdir())
    assert all(is_complete(f) for f in files) and len(files) == 2, files
    epochs = {checkpoint_info(f)["epoch"] for f in files}
    assert len(epochs) == 1, files  # last.ckpt and the epoch file agree


# ---------------------------------------------------------------------- two fits at once
@pytest.mark.slow  # 45 s on 2 busy cores (two processes import Lightning and train at once)
def test_two_fits_at_once_keep_their_own_runs(tmp_path):
    """Started together, two fits of one config get two version folders with their own config, metrics and
    checkpoints; their first screen carries no noise (W&B git-root warning, Lightning tips, deprecations)."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = ["--config", str(ROOT / "tests/configs/rot.yaml"), "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--extrapolation.methods=[linear]",
            "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    procs = {lr: subprocess.Popen([sys.executable, str(ROOT / "train.py"), "fit", *args, f"--model.init_args.lr={lr}"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr in ("0.001", "0.002")}
    outputs = {lr: p.communicate(timeout=300)[0] for lr, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), outputs
    runs = sorted((tmp_path / "runs" / "tiny_rot").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    lrs = []
    for run in runs:
        lrs.append(re.search(r"\n    lr: ([\d.e-]+)\n", (run / "config.yaml").read_text()).group(1))
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert rows and any(r.get("train/loss") for r in rows) and all(r["epoch"] in ("", "0") for r in rows)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert sorted(float(x) for x in lrs) == [0.001, 0.002]
    for text in outputs.values():
        for noise in ("git root", "Tip:", "LeafSpec", "Traceback", "exists and is not empty"):
            assert noise not in text, text
    print(f"two fits at once: {time.perf_counter() - start:.1f} s")
