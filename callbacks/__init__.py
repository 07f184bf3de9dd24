"""Lightning callbacks."""
from .checkpoint import ModelCheckpoint
from .clock import WallClock
from .ema import EMA
from .rollout_metrics import ExtrapolationCallback

__all__ = ["EMA", "ExtrapolationCallback", "ModelCheckpoint", "WallClock"]
