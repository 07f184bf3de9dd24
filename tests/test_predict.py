"""`train.py predict` on a checkpoint and the user's own frames (FramePairsDataModule + ExtrapolationCallback)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from PIL import Image

import train
from callbacks import ExtrapolationCallback
from datamodules import FramePairsDataModule
from errors import InputError, MissingInputError
from extrapolation import load_settings
from lightning_modules import DenoiserModule, VAEModule
from networks import VAE

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "configs/extrapolation/rot.yaml"  # relative: found from the project root whatever the cwd


def _finish_wandb():
    import wandb

    wandb.finish()


def _png(path: Path, size=(20, 20), mode="L", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def _video(path: Path, n: int = 4, size: int = 20) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((size, size, 3), 40 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny denoiser checkpoint made the way users make one: `train.py fit` with a config."""
    d = tmp_path_factory.mktemp("fit")
    cwd = Path.cwd()
    try:
        os.chdir(d)
        train.main(args=["fit", "--config", str(ROOT / "tests/configs/rot.yaml"), "--trainer.max_steps=1",
                         "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
                         "--trainer.enable_progress_bar=false"])
    finally:
        os.chdir(cwd)
        _finish_wandb()
    path = d / "runs/tiny_rot/version_0/checkpoints/last.ckpt"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def model(ckpt) -> DenoiserModule:
    return DenoiserModule.load_from_checkpoint(ckpt, map_location="cpu")


@pytest.fixture
def pngs(tmp_path) -> list[Path]:
    return [_png(tmp_path / f"f{i}.png", seed=i) for i in range(4)]


def writer(**kw) -> ExtrapolationCallback:
    return ExtrapolationCallback(**{**dict(settings=SETTINGS, methods=(), predict_method="linear", steps=3), **kw})


def _predict(model, dm, tmp_path, devices=1, **writer_kw) -> Path:
    out = tmp_path / "out"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[writer(predict_dir=str(out), **writer_kw)])
    dm.set_input_shape(model.input_shape())  # what train.py predict does before the trainer runs
    trainer.predict(model, datamodule=dm, return_predictions=False)
    return out


def _frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("frame_*.png"))])


def _cli_predict(ckpt, args):
    try:
        train.main(args=["predict", "--config", str(ROOT / "configs/rot.yaml"), *args, "--ckpt_path", str(ckpt),
                         "--trainer.enable_progress_bar=false"])
    finally:
        _finish_wandb()


@pytest.mark.parametrize("form", ["predict_config", "data_option"])
def test_cli_predict(ckpt, pngs, tmp_path, monkeypatch, form):
    """The documented commands, on the full-size training config (the checkpoint's hparams
    give the tiny network): with configs/predict.yaml, or switching the data on the command line; the
    extrapolation settings are the `extrapolation:` key of fit and test."""
    monkeypatch.chdir(tmp_path)
    pairs = f"[[{pngs[0]}, {pngs[1]}], [{pngs[2]}, {pngs[3]}]]"
    if form == "predict_config":
        args = ["--config", str(ROOT / "configs/predict.yaml"), "--data.pairs", pairs]
    else:
        args = ["--data", "datamodules.FramePairsDataModule", "--data.pairs", pairs]
    _cli_predict(ckpt, [*args, "--extrapolation.predict_method=linear", "--extrapolation.steps=3"])
    out = sorted(tmp_path.glob("runs/rot/version_*/predictions"))
    assert len(out) == 1
    for i, (a, b) in enumerate([(0, 1), (2, 3)]):
        pair = out[0] / f"pair_{i:03d}"
        frames = _frames(pair)
        assert frames.shape == (3 + 2, 20, 20)
        # the first two frames are the inputs, unchanged
        assert np.array_equal(frames[0], np.asarray(Image.open(pngs[a])))
        assert np.array_equal(frames[1], np.asarray(Image.open(pngs[b])))
        assert (pair / "rollout.gif").is_file() and (pair / "strip.png").is_file()
        strip = Image.open(pair / "strip.png")
        assert strip.height == 80 and strip.width > 5 * 80
        info = json.loads((pair / "info.json").read_text())
        assert info["method"] == "linear" and info["frames"] == 5 and str(pngs[a]) in info["source"]
        # the settings used: configs/extrapolation/rot.yaml, profile selected, steps overridden
        assert (info["settings_file"], info["profile"], info["steps"]) == (SETTINGS, "selected", 3)
        linear = load_settings(ROOT / SETTINGS, "selected")["linear"]
        assert info["eta"] == linear.eta and info["sigma"] == pytest.approx(linear.sigma)
    assert (out[0].parent / "config.yaml").is_file()  # the predict run's own config beside it


def test_predict_last_is_the_checkpoint_test_loads(ckpt, pngs, monkeypatch, capsys):
    """`--ckpt_path last` with the predict overlay (which drops the training callbacks) is the experiment's
    newest checkpoint, as for fit and test; a predict that fails on its input leaves no run folder behind."""
    import cli
    from run_folders import resolve_checkpoint

    fit_dir = ckpt.parents[4]  # <tmp>/runs/tiny_rot/version_0/checkpoints/last.ckpt
    monkeypatch.chdir(fit_dir)
    exp = Path("runs/tiny_rot")
    before = sorted(exp.glob("version_*"))
    base = ["predict", "--config", str(ROOT / "tests/configs/rot.yaml"), "--config", str(ROOT / "configs/predict.yaml"),
            "--ckpt_path", "last", "--trainer.enable_progress_bar=false"]
    c = cli.main([*base, "--data.pairs", f"[[{pngs[0]}, {pngs[1]}]]", "--extrapolation.predict_method=linear",
                  "--extrapolation.steps=3"])
    assert Path(c.trainer.ckpt_path) == resolve_checkpoint("last", exp) == exp / "version_0" / "checkpoints" / "last.ckpt"
    run = Path(c.trainer.log_dir)
    assert run.parent == exp and run not in before
    assert (run / "predictions" / "pair_000" / "frame_004.png").is_file()
    assert not (run / "wandb").exists()  # predict logs nothing: no W&B run
    capsys.readouterr()
    after = sorted(exp.glob("version_*"))
    for extra, expected in ((["--data.pairs", f"[[{pngs[0]}, nope.png]]"], "error: nope.png: no such file"),
                            ([], "error: FramePairsDataModule: give exactly one of `pairs` (image files) or `video`")):
        assert cli.run([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.strip() == expected, err
        assert sorted(exp.glob("version_*")) == after  # no empty run folder


@pytest.mark.parametrize("folder", ["experiment", "run"])
def test_predict_from_a_run_folder_alone(ckpt, pngs, tmp_path, monkeypatch, folder):
    """Like nanoGPT's sample.py: no --config; the run that wrote the checkpoint gives its config.yaml, and
    configs/predict.yaml swaps the data for the user's frames. The CLI hands the model's input shape to the data."""
    import cli

    monkeypatch.chdir(tmp_path)  # the run's config names nothing relative to where it was trained
    spec = ckpt.parents[2] if folder == "experiment" else ckpt.parents[1]  # runs/tiny_rot or its version_0
    c = cli.main(["predict", "--ckpt_path", str(spec), "--data.pairs", f"[[{pngs[0]}, {pngs[1]}]]",
                  "--extrapolation.predict_method=linear", "--extrapolation.steps=3",
                  "--trainer.enable_progress_bar=false"])
    _finish_wandb()
    assert Path(c.trainer.ckpt_path) == ckpt
    assert c.config.predict.experiment == "tiny_rot" and c.config.predict.data.class_path.endswith("FramePairsDataModule")
    assert c.datamodule.input_shape == c.model.input_shape() == (1, 20, 20)  # the training frames, from the checkpoint
    out = sorted(tmp_path.glob("runs/tiny_rot/version_*/predictions/pair_000/frame_004.png"))
    assert len(out) == 1


def test_predict_from_a_run_folder_needs_its_config(ckpt, tmp_path, monkeypatch, capsys):
    import shutil

    import cli

    monkeypatch.chdir(tmp_path)
    bare = tmp_path / "bare" / "checkpoints"
    bare.mkdir(parents=True)
    shutil.copy(ckpt, bare / "last.ckpt")
    for spec, expected in ((bare.parent, f"error: --ckpt_path {bare.parent}: no config.yaml in {bare.parent}, the run "
                                         f"that wrote {bare / 'last.ckpt'}; pass its training config with --config"),
                           ("last", "error: predict --ckpt_path last without --config: name the run or experiment "
                                    "folder instead")):
        assert cli.run(["predict", "--ckpt_path", str(spec), "--data.pairs", "[[a.png, b.png]]"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(expected) and "\n" not in err, err


@pytest.mark.parametrize("extra, expected", [
    (["--data.init_args.image_size=1", "--data.init_args.resize=true"],
     r"^error: predict frames of 1x1 \(HxW\) do not fit the checkpoint's network \(.*\); the checkpoint was trained "
     r"on 20x20 frames: choose another --data.init_args.image_size$"),
    (["--data.init_args.image_size=0"], r"^error: image_size must be a positive integer .*got 0$"),
    (["--data.init_args.frames=[[0,-1]]", "--data.init_args.video=v.mp4", "--data.init_args.pairs=null"],
     r"^error: frames must be a non-empty list of \[i, j\] non-negative frame indices"),
])
def test_predict_options_end_in_one_line(ckpt, pngs, tmp_path, monkeypatch, capsys, extra, expected):
    """image_size=1 with resize died with 105 lines from the UNet's padding, inside the rollout."""
    import re

    import cli

    monkeypatch.chdir(tmp_path)
    rc = cli.run(["predict", "--ckpt_path", str(ckpt), "--data.pairs", f"[[{pngs[0]}, {pngs[1]}]]", *extra,
                  "--extrapolation.predict_method=linear", "--extrapolation.steps=3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and re.search(expected, err), err
    assert not list(tmp_path.glob("runs/*/version_*"))


def test_same_seed_same_frames_any_batching(model, pngs, tmp_path):
    pairs = [[str(pngs[0]), str(pngs[1])], [str(pngs[2]), str(pngs[3])]]
    kw = dict(predict_method="tangent", steps=1, seed=7)  # the shipped A^2 v step
    a = _predict(model, FramePairsDataModule(pairs=pairs, batch_size=2), tmp_path / "a", **kw)
    b = _predict(model, FramePairsDataModule(pairs=pairs, batch_size=1), tmp_path / "b", **kw)
    for i in range(2):
        fa = _frames(a / f"pair_{i:03d}")
        assert fa.shape == (3, 20, 20)
        assert np.array_equal(fa, _frames(b / f"pair_{i:03d}"))
    # the seed matters (linear: cheap)
    lin = [_predict(model, FramePairsDataModule(pairs=pairs[:1]), tmp_path / f"l{s}", seed=s) for s in (0, 0, 1)]
    f = [_frames(d / "pair_000") for d in lin]
    assert np.array_equal(f[0], f[1]) and not np.array_equal(f[0][2:], f[2][2:])


def test_video_frames(model, tmp_path):
    video = _video(tmp_path / "clip.mp4", n=4)
    dm = FramePairsDataModule(video=str(video), frames=[[0, 1], [2, 3]])
    out = _predict(model, dm, tmp_path, media_format="mp4")
    for i in range(2):
        assert _frames(out / f"pair_{i:03d}").shape == (5, 20, 20)  # RGB video -> grey for a 1-channel net
        assert (out / f"pair_{i:03d}" / "rollout.mp4").stat().st_size > 0
    assert "clip.mp4#2" in json.loads((out / "pair_001/info.json").read_text())["source"]
    with pytest.raises(InputError, match=r"clip.mp4: frame index 9 is past the end .*4 frames"):
        _predict(model, FramePairsDataModule(video=str(video), frames=[[0, 9]]), tmp_path / "x")


def test_rgb_and_size_policy(model, tmp_path, caplog):
    rgb = [_png(tmp_path / f"c{i}.png", mode="RGB", seed=i) for i in range(2)]
    out = _predict(model, FramePairsDataModule(pairs=[[str(p) for p in rgb]]), tmp_path / "rgb")
    assert _frames(out / "pair_000").shape == (5, 20, 20)
    big = _png(tmp_path / "big.png", size=(24, 30))
    small = _png(tmp_path / "small.png")
    # no size recorded by the checkpoint: the first frame's size rules, a different one is refused
    with pytest.raises(InputError, match=r"big.png is 24x30 \(HxW\) but frames must be 20x20 .*resize=true"):
        _predict(model, FramePairsDataModule(pairs=[[str(small), str(big)]]), tmp_path / "x")
    out = _predict(model, FramePairsDataModule(pairs=[[str(small), str(big)]], resize=True), tmp_path / "r")
    assert _frames(out / "pair_000").shape == (5, 20, 20)
    out = _predict(model, FramePairsDataModule(pairs=[[str(big), str(big)]], image_size=[12, 16], resize=True),
                   tmp_path / "s")
    assert _frames(out / "pair_000").shape == (5, 12, 16)
    # a module that records its training frame size: that size rules
    model.frame_shape = (1, 24, 30)
    try:
        with pytest.raises(InputError, match=r"small.png is 20x20 .* must be 24x30 \(the checkpoint's"):
            _predict(model, FramePairsDataModule(pairs=[[str(small), str(big)]]), tmp_path / "y")
    finally:
        del model.frame_shape


def test_bad_inputs(model, tmp_path):
    good = str(_png(tmp_path / "good.png"))
    with pytest.raises(FileNotFoundError, match="nope.png: no such file"):
        _predict(model, FramePairsDataModule(pairs=[[good, str(tmp_path / "nope.png")]]), tmp_path / "x")
    with pytest.raises(MissingInputError, match="nope.mp4: no such file"):
        _predict(model, FramePairsDataModule(video=str(tmp_path / "nope.mp4")), tmp_path / "x")
    with pytest.raises(InputError, match="exactly one of"):
        FramePairsDataModule()
    with pytest.raises(InputError, match="non-empty list of"):
        FramePairsDataModule(pairs=[[good]])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.png: not an image file"):
        _predict(model, FramePairsDataModule(pairs=[[good, str(text)]]), tmp_path / "x")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="fake.mp4: cannot be decoded as a video"):
        _predict(model, FramePairsDataModule(video=str(fake)), tmp_path / "x")
    with pytest.raises(InputError, match="channels=3, but the checkpoint's network takes 1-channel"):
        _predict(model, FramePairsDataModule(pairs=[[good, good]], channels=3), tmp_path / "x")
    with pytest.raises(InputError, match="predict_method must be a registered method"):
        writer(predict_method="spline")
    with pytest.raises(InputError, match="has no settings for the predict_method 'static'"):
        _predict(model, FramePairsDataModule(pairs=[[good, good]]), tmp_path / "x", predict_method="static")
    vae = VAEModule(network=VAE(in_channels=1, image_size=20, latent_dim=4))
    with pytest.raises(InputError, match="predict_method 'linear' needs a module with denoise; got a VAEModule"):
        _predict(vae, FramePairsDataModule(pairs=[[good, good]]), tmp_path / "x")


def test_an_earlier_prediction_is_replaced_whole(model, pngs, tmp_path):
    """predict into the folder of an earlier predict run: no stale pair or frame survives, the count is right."""
    pairs = [[str(pngs[0]), str(pngs[1])], [str(pngs[2]), str(pngs[3])]]
    out = _predict(model, FramePairsDataModule(pairs=pairs), tmp_path, steps=4)
    assert len(list((out / "pair_001").glob("frame_*.png"))) == 6
    out = _predict(model, FramePairsDataModule(pairs=pairs[:1]), tmp_path, steps=2)
    assert sorted(p.name for p in out.iterdir()) == ["pair_000"]
    assert len(list((out / "pair_000").glob("frame_*.png"))) == 4
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files .notes.txt.; choose a new or empty folder"):
        _predict(model, FramePairsDataModule(pairs=pairs), tmp_path)
    assert (out / "notes.txt").exists()


def test_settings_file_profile_and_the_rollout_of_evaluate(model, pngs, tmp_path):
    """Without overrides the writer rolls out with the file's settings; pair i's frames are those
    `extrapolation.evaluate` gives video i in trial 0 (the same CPU generator), and info.json records them."""
    import torch

    from extrapolation import Models, load_settings, rollout, video_generators

    pairs = [[str(pngs[0]), str(pngs[1])], [str(pngs[2]), str(pngs[3])]]
    step = {"type": "eigen", "k": 1, "max_iters": 2}
    out = _predict(model, FramePairsDataModule(pairs=pairs), tmp_path, predict_method="tangent", steps=2,
                   profile="paper", step=step, seed=3)
    info = json.loads((out / "pair_001" / "info.json").read_text())
    paper = load_settings(ROOT / SETTINGS, "paper")["tangent"]
    assert (info["profile"], info["eta"], info["sigma"]) == ("paper", paper.eta, paper.sigma)
    assert info["step"] == step and info["method"] == "tangent"
    frames = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in pngs[2:]])).float().div(255).unsqueeze(1)
    settings = paper.override(steps=2, step=step)
    expected, _ = rollout(Models(denoise=model.eval().denoise), frames[None], settings, video_generators(3, 0, [1]))
    written = torch.from_numpy(_frames(out / "pair_001")).float().div(255)
    assert (written - expected[0, :, 0].clamp(0, 1)).abs().max() <= 1 / 255 + 1e-6
    # a k larger than the frame (20x20) is refused before any rollout
    with pytest.raises(InputError, match=r"tangent.step.k must be in \[1, 400\]"):
        _predict(model, FramePairsDataModule(pairs=pairs[:1]), tmp_path / "k", predict_method="tangent",
                 profile="paper", k=401)


@pytest.mark.slow
def test_ddp_each_pair_once(model, pngs, tmp_path):
    """Two processes split three pairs; each pair is written once, equal to the one-process frames."""
    pairs = [[str(pngs[0]), str(pngs[1])], [str(pngs[1]), str(pngs[2])], [str(pngs[2]), str(pngs[3])]]
    one = _predict(model, FramePairsDataModule(pairs=pairs, batch_size=1), tmp_path / "one")
    out = tmp_path / "two" / "out"
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[writer(predict_dir=str(out))])
    trainer.predict(model, datamodule=FramePairsDataModule(pairs=pairs, batch_size=1), return_predictions=False)
    assert sorted(p.name for p in out.iterdir()) == ["pair_000", "pair_001", "pair_002"]
    for i in range(3):
        assert np.array_equal(_frames(out / f"pair_{i:03d}"), _frames(one / f"pair_{i:03d}"))
