"""`WallClock`: the fit's wall-clock seconds beside each validation, for curves against time."""
from __future__ import annotations

import time

from lightning.pytorch import Callback


class WallClock(Callback):
    """Logs `time/fit_seconds` with each validation of a fit: wall-clock seconds since the fit started (training,
    validation, earlier rollouts and checkpoints; start-up excluded), continued across a resume."""

    def __init__(self):
        self._before = 0.0  # seconds of the run this fit resumed
        self._start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return self._before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            pl_module.log("time/fit_seconds", self.elapsed(), sync_dist=False, rank_zero_only=True)

    def state_dict(self) -> dict:
        return {"fit_seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._before = float(state_dict.get("fit_seconds", 0.0))
