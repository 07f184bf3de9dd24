"""Lightning callbacks."""
from .rollout_metrics import ExtrapolationCallback
from .predict_writer import ExtrapolationWriter

__all__ = ["ExtrapolationCallback", "ExtrapolationWriter"]
