"""Manifold extrapolation with a denoiser (paper Alg. 1-4) and the DTW-SSID metric; pure PyTorch."""
from .dtw import aggregate_path, dtw_path, dtw_ssid, dtw_ssid_batch, ssid_matrix
from .rollouts import RolloutInfo, latent_rollout, linear_rollout, tangent_rollout
from .tangent import TangentInfo, subspace_sine, tangent_basis

__all__ = [
    "tangent_basis", "TangentInfo", "subspace_sine",
    "tangent_rollout", "linear_rollout", "latent_rollout", "RolloutInfo",
    "ssid_matrix", "dtw_path", "aggregate_path", "dtw_ssid", "dtw_ssid_batch",
]
