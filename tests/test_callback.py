"""ExtrapolationCallback: media helpers, metrics, media files, sanity check, test trials, VAE."""
from __future__ import annotations

import csv
import glob
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

os.environ.setdefault("WANDB_MODE", "offline")

import lightning.pytorch as pl  # noqa: E402
import wandb  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from callbacks import ExtrapolationCallback, media  # noqa: E402
from datamodules import RotatedMNISTDataModule  # noqa: E402
from extrapolation import EigenProjection, Models, PowerFilter, SettingsError, evaluate, latent_rollout  # noqa: E402
from lightning_modules import DenoiserModule, VAEModule, WandbLogger  # noqa: E402
from networks import VAE, UNet  # noqa: E402

SETTINGS = "configs/extrapolation/rot.yaml"  # relative: found from the project root whatever the cwd



def gif_frames(path) -> list[np.ndarray]:
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]


# ---------------------------------------------------------------- media helpers
def test_to_uint8_scales_floats():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0])
    assert media.to_uint8(x).tolist() == [0, 0, 128, 255, 255]


def test_side_by_side_pads_and_separates():
    a = torch.rand(5, 1, 4, 6)
    b = torch.rand(3, 1, 4, 6)
    out = media.side_by_side([a, b], scale=2, separator=3)
    assert out.shape == (5, 3, 8, 2 * 12 + 3)
    assert torch.equal(out[4, :, :, 15:], out[2, :, :, 15:])  # the short panel holds its last frame
    assert torch.all(out[:, :, :, 12:15] == media.SEPARATOR)
    labelled = media.side_by_side([a, b], labels=["gt", "x"])
    assert labelled.shape[2] > 4


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_write_video_is_not_black(tmp_path, fmt):
    t = torch.linspace(0, 1, 6).view(6, 1, 1, 1)
    frames = (torch.rand(6, 1, 20, 20) * 0.5 + 0.5 * t).clamp(0, 1)  # floats in [0, 1]
    path = media.write_video(media.side_by_side([frames], scale=2), tmp_path / f"v.{fmt}", fps=5)
    if fmt == "gif":
        decoded = gif_frames(path)
    else:
        import av

        with av.open(str(path)) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 6
    assert all(f.max() > 100 for f in decoded)
    assert abs(decoded[-1].mean() - 255 * float(frames[-1].mean())) < 20


def test_figures(tmp_path):
    cost = torch.rand(10, 6)
    path = torch.tensor([[0, 0], [1, 1], [2, 1], [9, 5]])
    p = media.save_figure(media.alignment_figure([cost, cost], [path, path], ["a", "b"]), tmp_path / "a.png")
    lat = torch.arange(10) * 36.0
    nearest = torch.tensor([0, 1, 2, 2, 3, 9])
    q = media.save_figure(media.manifold_figure(lat, [nearest], ["t"], circle=True), tmp_path / "m.png")
    r = media.save_figure(media.manifold_figure(lat, [nearest], ["t"], circle=False), tmp_path / "l.png")
    assert all(Image.open(x).size[0] > 100 for x in (p, q, r))


def test_rejects_bad_arguments():
    with pytest.raises(SettingsError, match=r"has no settings for \['spline'\]"):
        ExtrapolationCallback(SETTINGS, methods=("tangent", "spline"))
    with pytest.raises(SettingsError, match="media_format"):
        ExtrapolationCallback(SETTINGS, media_format="avi")
    with pytest.raises(SettingsError, match=r"predict_method must be a registered method"):
        ExtrapolationCallback(SETTINGS, predict_method="spline")


@pytest.mark.parametrize("bad, match", [
    (dict(profile="paper", k=0), "tangent.step.k must be a positive integer, got 0"),
    (dict(k=2), "k applies to an eigen-projection step, not A.2 v"),  # the selected step has no k
    (dict(sigma=-1), "sigma must be >= 0, got -1"),
    (dict(eta=float("nan")), "eta must be finite"),
    (dict(vae_eta=0), "latent.eta must be > 0"),
    (dict(step={"type": "lanczos"}), "step must be a mapping with `type` one of"),
    (dict(profile="best"), "no profile 'best'"),
    (dict(settings="configs/extrapolation/nope.yaml"), "nope.yaml does not exist"),
])
def test_bad_settings_fail_at_construction_in_one_line(bad, match):
    kw = dict(dict(settings=SETTINGS), **bad)
    with pytest.raises(SettingsError, match=match) as err:
        ExtrapolationCallback(**kw)
    assert str(err.value).startswith("ExtrapolationCallback: ") and "\n" not in str(err.value)


def test_bad_setting_in_a_config_stops_the_cli_before_training(tmp_path, monkeypatch, capsys):
    """Through `train.py`: one `error:` line naming the setting, exit 2, nothing trained or written."""
    import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    config = Path(__file__).parent / "configs" / "rot.yaml"
    rc = cli.run(["fit", "--config", str(config), "--extrapolation.sigma=-1", "--trainer.logger=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and "tangent.sigma must be >= 0, got -1.0" in err[-1]
    assert not (tmp_path / "runs").exists()


def test_settings_come_from_the_file_with_overrides():
    from extrapolation import load_settings

    want = load_settings(SETTINGS, "selected")
    cb = ExtrapolationCallback(SETTINGS)
    s = cb.method_settings
    assert s == want and s["tangent"].steps == 53  # rot.yaml, selected
    assert ExtrapolationCallback(SETTINGS, profile="paper").method_settings["tangent"].eta == 1.0
    s = ExtrapolationCallback(SETTINGS, steps=5, sigma="10/255", step={"type": "eigen", "max_iters": 3}, k=2,
                              vae_eta=0.5).method_settings
    assert len(s) == 5 and all(x.steps == 5 for x in s.values())
    assert s["tangent"].sigma == s["linear"].sigma == pytest.approx(10 / 255)
    assert (s["tangent"].step, s["latent"].eta) == (EigenProjection(k=2, max_iters=3), 0.5)
    assert s["linear"].eta == want["linear"].eta  # overrides only what is given


def test_k_larger_than_the_frame_fails_in_setup_before_the_first_epoch(tmp_path):
    cb = make_cb(profile="paper", k=401)  # 20x20 frames: C*H*W = 400
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0)
    with pytest.raises(SettingsError, match=r"^ExtrapolationCallback: tangent.step.k must be in \[1, 400\]"):
        trainer.fit(make_denoiser(), make_dm())
    assert trainer.global_step == 0


# ---------------------------------------------------------------- with a Trainer
V, T, STEPS = 3, 16, 5


def make_cb(**kw):
    return ExtrapolationCallback(SETTINGS, **dict(dict(steps=STEPS), **kw))  # the shipped tangent step (A^2 v)


@pytest.fixture
def rollouts(monkeypatch):
    """The `evaluate` calls the callback makes: [(method name, Evaluation)]."""
    import callbacks.rollout_metrics as rm

    calls = []

    def spy(models, videos, method, *args, **kwargs):
        result = evaluate(models, videos, method, *args, **kwargs)
        calls.append((method.name, result))
        return result

    monkeypatch.setattr(rm, "evaluate", spy)
    return calls


def make_dm():
    return RotatedMNISTDataModule(indices=list(range(V)), num_frames=T, num_val_frames=16, batch_size=16)


def make_denoiser():
    torch.manual_seed(0)
    return DenoiserModule(UNet(widths=(8, 16), mid_width=16))


def make_trainer(tmp_path, callback, max_epochs=1, wandb_logger=True, **kw):
    loggers = [CSVLogger(str(tmp_path / "runs"), name="tiny")]
    if wandb_logger:
        loggers.append(WandbLogger(project="test", save_dir=str(tmp_path / "runs" / "tiny")))
    kw = dict(dict(limit_train_batches=2, limit_val_batches=1, limit_test_batches=1), **kw)
    return pl.Trainer(max_epochs=max_epochs, logger=loggers, callbacks=[callback] + kw.pop("callbacks", []),
                      accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **kw)


def read_metrics(trainer) -> list[dict]:
    with open(Path(trainer.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def finish_wandb():
    yield
    wandb.finish()


def test_fit_logs_metrics_and_media(tmp_path, finish_wandb, rollouts):
    cb = make_cb(every_n_epochs=2, batch_size=2, num_media_videos=2)
    trainer = make_trainer(tmp_path, cb, max_epochs=3, num_sanity_val_steps=1)
    trainer.fit(make_denoiser(), make_dm())

    # due: epoch 2 (every_n_epochs=2) and 3 (the last), not 1 nor the sanity check; each time one
    # `evaluate` call per method
    assert len(rollouts) == 2 * 2
    rows = read_metrics(trainer)
    for metric, low, high in (("dtw_ssid", 0, 2), ("dtw_ssid_cut", 0, 2), ("dtw_ssid_open", 0, 2),
                              ("coverage", 0, 1), ("speed_ratio", -50, 50), ("diverged", 0, 1),
                              ("rollout_seconds", 0, 600)):
        for method in ("tangent", "linear"):
            name = f"val/{metric}/{method}"
            value = float(trainer.callback_metrics[name])
            assert low <= value <= high, name
        logged = [(int(r["epoch"]), float(r[name])) for r in rows if r.get(name)]
        assert [e for e, _ in logged] == [1, 2] and logged[-1][1] == pytest.approx(value)

    run_media = Path(trainer.log_dir) / "media" / "val" / "epoch_001"
    for i in range(2):
        assert (run_media / f"alignment_{i:02d}.png").exists()
        assert (run_media / f"manifold_{i:02d}.png").exists()  # rotated MNIST has latents
        frames = gif_frames(run_media / f"rollout_{i:02d}.gif")
        assert len(frames) == T  # padded to the longest panel (ground truth: T > STEPS + 2)
        assert all(f.max() > 0 for f in frames)
        assert frames[0][:, :, 0].mean() > 10  # the digits are visible, not a black frame
    assert not (run_media / "rollout_02.gif").exists()

    offline = glob.glob(str(tmp_path / "runs" / "tiny" / "wandb" / "offline-run-*" / "files" / "media"))
    assert len(offline) == 1
    gifs = glob.glob(f"{offline[0]}/videos/val/rollouts_*.gif")
    # 2 videos x 2 due epochs
    assert len(gifs) == 4 and all(max(f.max() for f in gif_frames(g)) > 0 for g in gifs)
    assert len(glob.glob(f"{offline[0]}/images/val/alignment_*.png")) == 4
    assert len(glob.glob(f"{offline[0]}/images/val/manifold_*.png")) == 4


def test_restores_train_mode_and_runs_without_wandb(tmp_path, rollouts):
    cb = make_cb(methods=("linear", "latent"), num_media_videos=0, vae_checkpoint=str(tmp_path / "not_trained_yet.ckpt"))
    model = make_denoiser()
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="latent"):
        trainer.fit(model, make_dm())
    assert [name for name, _ in rollouts] == ["linear"]  # latent skipped
    assert "val/dtw_ssid/linear" in trainer.callback_metrics
    assert "val/dtw_ssid/latent" not in trainer.callback_metrics
    assert model.training  # Lightning's train mode came back after validation
    assert not (Path(trainer.log_dir) / "media").exists()


def test_test_reports_mean_and_std_over_trials(tmp_path, finish_wandb, rollouts):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    cb = make_cb(methods=("linear",), test_trials=3, num_media_videos=1)
    trainer = make_trainer(tmp_path, cb, callbacks=[ckpt], num_sanity_val_steps=0, limit_val_batches=0)
    model, dm = make_denoiser(), make_dm()
    trainer.fit(model, dm)
    assert not rollouts  # no validation
    trainer.test(model, dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(rollouts) == 1  # 3 trials of 1 method in one `evaluate` call
    m = trainer.callback_metrics
    for method in ("linear",):
        assert 0 <= float(m[f"test/dtw_ssid/{method}"]) < 2
        assert float(m[f"test/dtw_ssid_std/{method}"]) > 0  # trials differ in their noise
        assert f"test/dtw_ssid_cut_std/{method}" in m

    with open(Path(trainer.log_dir) / "test_dtw_ssid_per_video.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == V
    per_trial = np.array([[float(r[f"dtw_ssid_trial{t}"]) for t in range(3)] for r in rows])  # (V, trials)
    assert per_trial.mean() == pytest.approx(float(m["test/dtw_ssid/linear"]), abs=1e-6)
    assert per_trial.mean(0).std(ddof=1) == pytest.approx(float(m["test/dtw_ssid_std/linear"]), abs=1e-6)
    assert (Path(trainer.log_dir) / "media" / "test" / "epoch_001" / "rollout_00.gif").exists()
    assert glob.glob(str(tmp_path / "runs" / "tiny" / "wandb" / "offline-run-*" / "files" / "media" / "table" / "test" / "*.json"))


def test_same_seed_same_numbers_as_evaluate(tmp_path):
    def run(seed, **kw):
        cb = make_cb(methods=("linear",), seed=seed, num_media_videos=0, **kw)
        trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0, max_steps=0)
        trainer.validate(make_denoiser(), make_dm())
        return {k: float(v) for k, v in trainer.callback_metrics.items()}, cb

    (a, cb), (b, _), (c, _) = run(0), run(0, batch_size=1), run(1)
    assert a["val/dtw_ssid/linear"] == pytest.approx(b["val/dtw_ssid/linear"], abs=1e-6)
    assert a["val/dtw_ssid/linear"] != c["val/dtw_ssid/linear"]
    # the very numbers of `extrapolation.evaluate` on the whole set
    dm = make_dm()
    dm.setup("validate")
    expected = evaluate(Models(denoise=make_denoiser().eval().denoise), dm.videos, cb.method_settings["linear"],
                        seed=0).summary()
    for metric, key in (("dtw_ssid", "whole_mean"), ("dtw_ssid_cut", "cut_mean"), ("dtw_ssid_open", "open_end_mean"),
                        ("coverage", "coverage_mean"), ("speed_ratio", "speed_ratio_median")):
        assert a[f"val/{metric}/linear"] == pytest.approx(expected[key], abs=1e-6), metric


def test_latent_method_with_vae(tmp_path, rollouts):
    # a VAE being trained (configs/vae_*.yaml: methods [latent]): the callback rolls out with the module itself
    torch.manual_seed(0)
    vae = VAEModule(VAE(image_size=20, latent_dim=8, widths=(4, 8)))
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "vae"), save_last=True)
    cb = make_cb(methods=("latent",), num_media_videos=1)
    trainer = make_trainer(tmp_path, cb, callbacks=[ckpt], wandb_logger=False, num_sanity_val_steps=0)
    trainer.fit(vae, make_dm())
    assert "val/dtw_ssid/latent" in trainer.callback_metrics
    assert "val/dtw_ssid/tangent" not in trainer.callback_metrics

    # a denoiser run compares the methods with the VAE from its checkpoint
    cb = make_cb(methods=("linear", "latent"), vae_eta=0.5, num_media_videos=1)
    cb.set_vae(VAEModule.load_from_checkpoint(tmp_path / "vae" / "last.ckpt"))  # what train.py hands over
    trainer = make_trainer(tmp_path / "d", cb, wandb_logger=False, num_sanity_val_steps=0)
    rollouts.clear()
    trainer.fit(make_denoiser(), make_dm())
    for method in ("linear", "latent"):
        assert f"val/dtw_ssid/{method}" in trainer.callback_metrics
    # the latent rollouts are the checkpoint's VAE's, in eval mode (batch-norm running statistics)
    vae = VAEModule.load_from_checkpoint(tmp_path / "vae" / "last.ckpt").eval()
    gt = trainer.datamodule.videos[:1].float()
    with torch.no_grad():
        expected, _ = latent_rollout(vae.encode, vae.decode, gt[:, 0], gt[:, 1], STEPS, 0.5)
    shown = dict(rollouts)["latent"].frames[0, :1]
    torch.testing.assert_close(shown, expected)
    frames = gif_frames(Path(trainer.log_dir) / "media" / "val" / "epoch_000" / "rollout_00.gif")
    assert frames[0].shape[1] > 3 * 80  # three panels: ground truth | linear | latent


def test_numerical_failure_gives_nan_not_a_crash(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise torch.linalg.LinAlgError("eigh failed to converge")

    monkeypatch.setattr(PowerFilter, "__call__", failing)
    cb = make_cb(num_media_videos=1)
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=r"tangent: 3 of 3 rollouts diverged \(videos \[0, 1, 2\], from frame 2\)"):
        trainer.fit(make_denoiser(), make_dm())
    assert torch.isnan(trainer.callback_metrics["val/dtw_ssid/tangent"])
    assert float(trainer.callback_metrics["val/diverged/tangent"]) == 1
    assert torch.isfinite(trainer.callback_metrics["val/dtw_ssid/linear"])
    assert (Path(trainer.log_dir) / "media" / "val" / "epoch_000" / "rollout_00.gif").exists()


class ExplodingDenoiser(DenoiserModule):
    """Returns inf for video 1 (and any frame pair 1) from its third `denoise` call in a rollout on (`armed`)."""

    armed = False

    def denoise(self, x):
        out = super().denoise(x)
        if self.armed and x.shape[0] > 1:
            self.calls += 1
            if self.calls >= 3:
                out = out.clone()
                out[1] = float("inf")
        return out


def test_a_diverging_denoiser_scores_counts_draws_and_predicts(tmp_path, monkeypatch, rollouts):
    """Divergence at frame 4 of video 1: NaN readings left out of the means and counted, media drawn from the finite
    frames, predict writes the finite frames and says where it diverged; training goes on."""
    import json

    torch.manual_seed(0)
    model = ExplodingDenoiser(UNet(widths=(8, 16), mid_width=16))
    real = evaluate

    def armed(models, *args, **kwargs):  # restart the count in every rollout
        model.armed, model.calls = True, 0
        try:
            return real(models, *args, **kwargs)
        finally:
            model.armed = False

    import callbacks.rollout_metrics as rm
    monkeypatch.setattr(rm, "evaluate", armed)
    cb = make_cb(methods=("linear",), num_media_videos=2)
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0, max_epochs=2)
    with pytest.warns(UserWarning, match=r"linear: 1 of 3 rollouts diverged \(videos \[1\], from frame 4\)"):
        trainer.fit(model, make_dm())
    assert trainer.current_epoch == 2  # training went on
    m = trainer.callback_metrics
    assert float(m["val/diverged/linear"]) == pytest.approx(1 / 3)
    assert torch.isfinite(m["val/dtw_ssid/linear"]) and torch.isfinite(m["val/dtw_ssid_cut/linear"])
    assert any(r.get("val/diverged/linear") for r in read_metrics(trainer))  # in the CSV too
    media_dir = Path(trainer.log_dir) / "media" / "val" / "epoch_001"
    frames = gif_frames(media_dir / "rollout_01.gif")
    assert len(frames) == T and (media_dir / "alignment_01.png").exists() and (media_dir / "manifold_01.png").exists()

    # predict: the writer keeps frames 0-3 and reports frame 4
    from datamodules import FramePairsDataModule

    dm = make_dm()
    dm.setup("fit")
    pairs = []
    for i in range(2):
        for j in range(2):
            path = tmp_path / f"p{i}{j}.png"
            Image.fromarray((dm.videos[i, j, 0].numpy() * 255).astype(np.uint8)).save(path)
        pairs.append([str(tmp_path / f"p{i}0.png"), str(tmp_path / f"p{i}1.png")])
    cb = make_cb(methods=("linear",), predict_method="linear", predict_dir=str(tmp_path / "pred"))
    predictor = pl.Trainer(logger=False, callbacks=[cb], accelerator="cpu", enable_progress_bar=False)
    model.armed, model.calls = True, 0
    with pytest.warns(UserWarning, match="pair 1 .*diverged at frame 4; frames 0-3 written"):
        predictor.predict(model, FramePairsDataModule(pairs=pairs, batch_size=2), return_predictions=False)
    info = json.loads((tmp_path / "pred" / "pair_001" / "info.json").read_text())
    assert info["diverged_at_frame"] == 4 and info["frames"] == 4 and info["method"] == "linear"
    assert sorted(p.name for p in (tmp_path / "pred" / "pair_001").glob("frame_*.png")) == [
        f"frame_{t:03d}.png" for t in range(4)]
    assert json.loads((tmp_path / "pred" / "pair_000" / "info.json").read_text())["diverged_at_frame"] is None


def test_skipped_under_fast_dev_run(tmp_path, rollouts):
    cb = make_cb(methods=("linear",))
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, fast_dev_run=1)
    trainer.fit(make_denoiser(), make_dm())
    assert not rollouts


def test_a_registered_toy_method_runs_in_the_callback(tmp_path, toy_method):
    """A fourth method is one class plus one settings entry: the callback logs and draws it like the others."""
    settings = tmp_path / "s.yaml"
    settings.write_text("steps: 5\nselected:\n  toy_drift: {speed: 1.0}\n  linear: {eta: 1.0, sigma: 0.1}\n")
    cb = ExtrapolationCallback(str(settings), methods=("toy_drift", "linear"), num_media_videos=1, eta=2.0)
    assert cb.method_settings["toy_drift"].speed == 2.0  # the flat override reaches the method's own field
    trainer = make_trainer(tmp_path, cb, wandb_logger=False, num_sanity_val_steps=0)
    trainer.fit(make_denoiser(), make_dm())
    for metric in ("dtw_ssid", "dtw_ssid_cut", "dtw_ssid_open", "speed_ratio", "diverged"):
        assert f"val/{metric}/toy_drift" in trainer.callback_metrics
    assert (Path(trainer.log_dir) / "media" / "val" / "epoch_000" / "rollout_00.gif").exists()
