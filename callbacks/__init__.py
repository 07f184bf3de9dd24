"""Lightning callbacks."""
from .checkpoint import ModelCheckpoint
from .rollout_metrics import ExtrapolationCallback

__all__ = ["ExtrapolationCallback", "ModelCheckpoint"]
