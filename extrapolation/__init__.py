"""Manifold extrapolation with a denoiser (paper Alg. 1-4) and the DTW-SSID metric; pure PyTorch."""
from .dtw import aggregate_path, dtw_path, dtw_ssid, dtw_ssid_batch, ssid_matrix
from .evaluate import Evaluation, Models, evaluate, rollout, video_generators
from .rollouts import RolloutInfo, latent_rollout, linear_rollout, tangent_rollout
from .settings import MethodSettings, SettingsError, load_settings
from .tangent import TangentInfo, subspace_sine, tangent_basis, tangent_filter

__all__ = [
    "tangent_basis", "tangent_filter", "TangentInfo", "subspace_sine",
    "tangent_rollout", "linear_rollout", "latent_rollout", "RolloutInfo",
    "evaluate", "rollout", "Models", "Evaluation", "video_generators",
    "MethodSettings", "SettingsError", "load_settings",
    "ssid_matrix", "dtw_path", "aggregate_path", "dtw_ssid", "dtw_ssid_batch",
]
