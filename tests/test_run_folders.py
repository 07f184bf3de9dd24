"""run_folders: atomic version folders, the one meaning of "last", checkpoint checks; the Ctrl-C-safe ModelCheckpoint."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from callbacks import ModelCheckpoint
from callbacks.checkpoint import deferred_sigint
from errors import InputError, MissingInputError
from run_folders import checkpoint_info, new_version_dir, newest_checkpoint, resolve_checkpoint


def _ckpt(path: Path, epoch: int, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": epoch, "global_step": 10 * epoch,
                "pytorch-lightning_version": "2.6.0"}, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_new_version_dirs_are_distinct_under_concurrency(tmp_path):
    exp = tmp_path / "runs" / "rot"
    (exp / "version_3").mkdir(parents=True)  # numbering continues after the highest
    got, barrier = [], threading.Barrier(8)

    def take():
        barrier.wait()
        got.append(new_version_dir(exp))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in got) == sorted(f"version_{n}" for n in range(4, 12))


def test_last_is_the_newest_complete_checkpoint_of_any_run(tmp_path):
    exp = tmp_path / "runs" / "rot"
    now = time.time()
    _ckpt(exp / "checkpoints" / "last.ckpt", 1, now - 50)  # the layout before version folders: still found
    _ckpt(exp / "version_0" / "checkpoints" / "last.ckpt", 2, now - 40)
    newest = _ckpt(exp / "version_1" / "checkpoints" / "epoch=3-step=30.ckpt", 3, now - 30)
    broken = exp / "version_2" / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(newest.read_bytes()[:500])  # newer, but truncated: skipped
    assert resolve_checkpoint("last", exp) == newest
    assert resolve_checkpoint(exp) == newest  # a folder names its newest checkpoint (vae_checkpoint: runs/vae_rot)
    assert resolve_checkpoint(exp / "version_0") == exp / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint_info(newest) == {"epoch": 3, "global_step": 30}


def test_checkpoint_errors_say_what_and_where(tmp_path):
    with pytest.raises(MissingInputError, match=r"--ckpt_path last: no complete checkpoint in .*empty/version_\*/checkpoints/"):
        resolve_checkpoint("last", tmp_path / "empty", setting="--ckpt_path")
    with pytest.raises(MissingInputError, match=r"--ckpt_path nope.ckpt: no such checkpoint file .*relative to"):
        resolve_checkpoint("nope.ckpt", tmp_path, setting="--ckpt_path")
    folder = tmp_path / "run" / "checkpoints"
    good = _ckpt(folder / "epoch=4-step=40.ckpt", 4)
    last = folder / "last.ckpt"
    last.write_bytes(good.read_bytes()[:-100])  # a truncated last.ckpt names the valid file beside it
    with pytest.raises(InputError, match=r"last.ckpt is not a usable checkpoint \(truncated.*beside it is .*epoch=4-step=40.ckpt"):
        resolve_checkpoint(last, setting="--ckpt_path")
    png = tmp_path / "image.ckpt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError, match="image.ckpt is not a usable checkpoint") as err:
        checkpoint_info(png)
    assert "weights_only" not in str(err.value)
    plain = tmp_path / "plain.ckpt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(InputError, match="no Lightning checkpoint: it has no state_dict or pytorch-lightning_version"):
        checkpoint_info(plain)


@pytest.fixture
def sigint_default():
    """Ctrl-C as in a terminal: a shell's background job (nohup, `&`) starts with SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_deferred_sigint_raises_after_the_block(sigint_default):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(1)  # the block runs to its end
    assert done == [1] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ctrl_c_between_the_epoch_file_and_last_ckpt(tmp_path, monkeypatch, sigint_default):
    """SIGINT while epoch 1's file is written: last.ckpt still follows, so both hold epoch 1."""
    trainer = pl.Trainer(max_epochs=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ModelCheckpoint(dirpath=str(tmp_path))])
    save, calls = trainer.save_checkpoint, []

    def save_and_interrupt(path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 3:  # epoch 0: epoch file, last.ckpt; epoch 1: epoch file <- Ctrl-C here
            os.kill(os.getpid(), signal.SIGINT)
        return save(path, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save_and_interrupt)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after KeyboardInterrupt
            trainer.fit(_Tiny())
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after one
    assert calls == ["epoch=0-step=2.ckpt", "last.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert checkpoint_info(tmp_path / "last.ckpt")["epoch"] == checkpoint_info(tmp_path / "epoch=1-step=4.ckpt")["epoch"] == 1
    assert newest_checkpoint(tmp_path) is not None
