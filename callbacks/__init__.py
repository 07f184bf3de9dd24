"""Lightning callbacks."""
from .checkpoint import ModelCheckpoint
from .rollout_metrics import ExtrapolationCallback
from .predict_writer import ExtrapolationWriter

__all__ = ["ExtrapolationCallback", "ExtrapolationWriter", "ModelCheckpoint"]
