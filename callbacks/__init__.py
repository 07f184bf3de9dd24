"""Lightning callbacks."""
from .checkpoint import ModelCheckpoint
from .extrapolation import ExtrapolationCallback
from .predict_writer import ExtrapolationWriter

__all__ = ["ExtrapolationCallback", "ExtrapolationWriter", "ModelCheckpoint"]
