"""Manifold extrapolation with a denoiser (paper Alg. 1-4) and the DTW-SSID metric; pure PyTorch."""
from .dtw import READINGS, aggregate_path, dtw_path, dtw_ssid, dtw_ssid_batch, readings, ssid_matrix
from .evaluate import Evaluation, evaluate, rollout, video_generators
from .grid import combine, row, run_grid, select
from .methods import METHODS, Method, Models, SettingsError, method_class, register
from .rollouts import RolloutInfo, latent_rollout, linear_rollout, tangent_rollout
from .settings import load_settings, parse_profile
from .tangent import (
                      STEPS,
                      EigenProjection,
                      PowerFilter,
                      TangentInfo,
                      TangentStep,
                      subspace_sine,
                      tangent_basis,
                      tangent_filter,
)

__all__ = [
    "tangent_basis", "tangent_filter", "TangentInfo", "subspace_sine", "TangentStep", "EigenProjection", "PowerFilter",
    "STEPS", "tangent_rollout", "linear_rollout", "latent_rollout", "RolloutInfo",
    "evaluate", "rollout", "Models", "Evaluation", "video_generators", "row", "select", "run_grid", "combine",
    "METHODS", "Method", "register", "method_class", "SettingsError", "load_settings", "parse_profile",
    "READINGS", "readings", "ssid_matrix", "dtw_path", "aggregate_path", "dtw_ssid", "dtw_ssid_batch",
]
