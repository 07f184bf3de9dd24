"""`ModelCheckpoint` whose `epoch=E-step=S.ckpt` and `last.ckpt` always agree, even after Ctrl-C."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


@contextmanager
def deferred_sigint():
    """Hold back SIGINT (Ctrl-C) until the block ends, then raise it as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def hold(signum, frame):
        if not received:
            rank_zero_info("Ctrl-C: finishing the checkpoint first")
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and previous not in (signal.SIG_IGN, None):
            if callable(previous):
                previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt
            else:
                raise KeyboardInterrupt


class ModelCheckpoint(_ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, defaulting to `monitor=None, save_last=True`, that writes the epoch
    file and `last.ckpt` as one step: a Ctrl-C that arrives between the two waits for the second, so the
    newest `epoch=E-step=S.ckpt` and `last.ckpt` hold the same epoch. (Each file itself is written to a
    temporary file and moved into place by Lightning, so none is ever half-written.)

    `monitor=None`: with a monitor, Lightning 2.6 rewrites `last.ckpt` only when the monitored value
    improves, so a resume or an evaluation would silently use an older epoch.
    `dirpath=None`: `train.py` sets it to the run's own `version_N/checkpoints/`."""

    def __init__(self, *args, monitor: str | None = None, save_last: bool | str | None = True, **kwargs):
        super().__init__(*args, monitor=monitor, save_last=save_last, **kwargs)

    def on_train_batch_end(self, *args, **kwargs) -> None:
        with deferred_sigint():
            super().on_train_batch_end(*args, **kwargs)

    def on_train_epoch_end(self, *args, **kwargs) -> None:
        with deferred_sigint():
            super().on_train_epoch_end(*args, **kwargs)

    def on_validation_end(self, *args, **kwargs) -> None:
        with deferred_sigint():
            super().on_validation_end(*args, **kwargs)

    def on_train_end(self, trainer, *args, **kwargs) -> None:
        if trainer.fast_dev_run:  # Lightning 2.6 would save last.ckpt of a smoke run here: it must not become "last"
            return
        with deferred_sigint():
            super().on_train_end(trainer, *args, **kwargs)
