"""DDP: the callback's DTW-SSID on 2 CPU ranks equals the single-process value.

`train.py fit` runs as a subprocess: in-process `ddp` relaunches pytest's command line.
The learning rate is 0 and the UNet has no normalisation, so training leaves the weights as
initialised in both runs and only the callback's split of the videos differs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
dataset: rot
experiment: {name}
trainer:
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  num_sanity_val_steps: 0
  check_val_every_n_epoch: 1
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  callbacks: []        # base.yaml's checkpoint and LR monitor: not what this test compares
extrapolation:
  methods: [tangent, linear]
  steps: 4
  sigma: 0.1
  step: {{type: eigen, k: 2, max_iters: 5}}
  num_media_videos: 3   # 5 videos: rank 0 rolls out 0, 2, 4 and rank 1 rolls out 1, 3; video 1's
                        # frames must be gathered for the media
model:
  class_path: lightning_modules.DenoiserModule
  init_args:
    lr: 0.0
    network:
      class_path: networks.UNet
      init_args: {{widths: [8, 16], mid_width: 16, norm: false}}
data:
  class_path: datamodules.RotatedMNISTDataModule
  init_args: {{indices: [0, 1, 2, 3, 4], num_frames: 12, num_val_frames: 16, batch_size: 16}}
"""

METRICS = ["val/dtw_ssid/tangent", "val/dtw_ssid/linear", "val/dtw_ssid_cut/tangent", "val/dtw_ssid_cut/linear"]


def run_fit(tmp_path: Path, name: str, devices: int) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(CONFIG.format(name=name))
    args = [sys.executable, str(ROOT / "train.py"), "fit", f"--config={config}", "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}"]
    if devices > 1:
        args.append("--trainer.strategy=ddp")
    # one intra-op thread per process: oversubscribed OpenMP threads slow small convs down 15x here
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the launched rank reuses the folder the first process chose (RUN_DIR_ENV), it does not take another
    assert [p.name for p in (tmp_path / "runs" / name).iterdir()] == ["version_0"]
    return tmp_path / "runs" / name / "version_0"


def logged(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {m: float(next(r[m] for r in rows if r.get(m))) for m in METRICS}


@pytest.mark.slow  # about a minute: two `train.py fit` subprocesses, one with 2 DDP ranks
def test_ddp_matches_single_process(tmp_path):
    single = run_fit(tmp_path, "single", devices=1)
    ddp = run_fit(tmp_path, "ddp", devices=2)
    a, b = logged(single), logged(ddp)
    for m in METRICS:
        assert b[m] == pytest.approx(a[m], abs=1e-5), m
    for run in (single, ddp):
        media = run / "media" / "val" / "epoch_000"
        assert sorted(p.name for p in media.glob("rollout_*.gif")) == [f"rollout_{i:02d}.gif" for i in range(3)]
    # the gathered frames of rank 1's video are the single-process frames
    frames = [np.stack([np.asarray(f.convert("RGB"), dtype=int) for f in ImageSequence.Iterator(
        Image.open(run / "media/val/epoch_000/rollout_01.gif"))]) for run in (single, ddp)]
    assert frames[0].shape == frames[1].shape and np.abs(frames[0] - frames[1]).max() <= 1
