"""The EMA of the weights (`callbacks.EMA`): the average is what validates, rolls out, saves, resumes, tests and
predicts; the raw weights travel beside it in the checkpoint."""
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image

import train
from callbacks import EMA

ROOT = Path(__file__).resolve().parents[1]


class Probe(Callback):
    """Records the module's weights where the EMA matters (`--trainer.callbacks+=test_ema.Probe`)."""

    def __init__(self):
        self.at_train_start = self.at_rollout = self.average_at_train_start = None

    def on_train_start(self, trainer, pl_module):
        self.at_train_start = _weights(pl_module)
        ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
        self.average_at_train_start = _weights(ema._average_model.module)

    def on_validation_epoch_end(self, trainer, pl_module):  # listed after the extrapolation callback: its rollouts
        if not trainer.sanity_checking:
            self.at_rollout = _weights(pl_module)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "network" in k}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def offline_in_tmp(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr("sys.argv", ["train.py"])
    monkeypatch.chdir(tmp_path)
    yield
    wandb.finish()
    wandb.teardown()


def test_ema_validates_rolls_out_saves_resumes_tests_and_predicts(tmp_path):
    import wandb

    config = ["--config", str(ROOT / "tests/configs/rot.yaml"), "--extrapolation.methods=[linear]",
              "--model.init_args.lr=1e-2"]
    ema = ["--trainer.callbacks+=callbacks.EMA", "--trainer.callbacks.init_args.half_life=50",
           "--trainer.callbacks+=test_ema.Probe"]
    cli = train.main(["fit", *config, *ema])
    ckpt_path = tmp_path / "runs" / "tiny_rot" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["weights"] == "ema"
    average = {k: v for k, v in ckpt["state_dict"].items() if "network" in k}
    raw = {k: v for k, v in ckpt["current_model_state"].items() if "network" in k}
    assert not _same(average, raw)  # the average lags the raw weights
    probe = next(c for c in cli.trainer.callbacks if isinstance(c, Probe))
    assert _same(probe.at_rollout, average)  # the callback rolled out the average
    fit_psnr = float(cli.trainer.callback_metrics["val/psnr_25"])
    fit_dtw = float(cli.trainer.callback_metrics["val/dtw_ssid_cut/linear"])
    wandb.finish()

    # validate from the checkpoint: the numbers the fit logged, so the fit validated the average too
    cli = train.main(["validate", *config, "--ckpt_path", str(ckpt_path)])
    assert float(cli.trainer.callback_metrics["val/psnr_25"]) == pytest.approx(fit_psnr, abs=1e-4)
    assert float(cli.trainer.callback_metrics["val/dtw_ssid_cut/linear"]) == pytest.approx(fit_dtw, abs=1e-5)
    assert _same(_weights(cli.model), average)
    wandb.finish()

    cli = train.main(["test", *config, "--ckpt_path", str(ckpt_path)])
    assert _same(_weights(cli.model), average)
    wandb.finish()
    pngs = [tmp_path / f"f{i}.png" for i in range(2)]
    for i, png in enumerate(pngs):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 20), dtype=np.uint8)).save(png)
    cli = train.main(["predict", *config, "--config", str(ROOT / "configs/predict.yaml"), "--ckpt_path",
                      str(ckpt_path), "--data.pairs", f"[[{pngs[0]}, {pngs[1]}]]", "--extrapolation.predict_method=linear"])
    assert _same(_weights(cli.model), average)

    # resume: the raw weights continue training and the average continues from the saved one
    cli = train.main(["fit", *config, *ema, "--trainer.max_epochs=2", "--ckpt_path", str(ckpt_path)])
    probe = next(c for c in cli.trainer.callbacks if isinstance(c, Probe))
    assert _same(probe.at_train_start, raw) and _same(probe.average_at_train_start, average)
    assert cli.trainer.global_step == 2 * ckpt["global_step"]


def test_ema_decay_ramps_up_then_holds_the_half_life():
    ema = EMA(half_life=1000, rampup=0.1)
    assert ema.decay(0, 10) == 0.0  # the first update copies the weights
    assert ema.decay(2000, 10) == pytest.approx(0.5 ** (10 / 200))  # half-life 10% of the images seen
    assert ema.decay(10**6, 10) == pytest.approx(0.5 ** (10 / 1000))
    assert EMA(half_life=1000, rampup=None).decay(0, 10) == pytest.approx(0.5 ** (10 / 1000))
    with pytest.raises(Exception, match="half_life must be a positive number"):
        EMA(half_life=0)
