"""DTW-SSID (paper A.2): cost matrix, DTW path, per-target-frame aggregation, the Metric."""
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from extrapolation import aggregate_path, dtw_path, dtw_ssid, dtw_ssid_batch, ssid_matrix




def video(t=5, seed=0, size=16):
    return torch.rand(t, 1, size, size, generator=torch.Generator().manual_seed(seed))


# Rows = target (N1 = 3), columns = prediction (N2 = 4). Accumulated cost (steps up, left, diagonal):
#   0.2  1.2  3.2  6.2
#   1.2  0.6  1.2  3.2
#   4.2  2.6  1.6  1.5
# Backtracking from (2,3): (1,2)=1.2 < (2,2)=1.6 < (1,3)=3.2; from (1,2): (1,1)=0.6; from (1,1): (0,0).
# Path (0,0) (1,1) (1,2) (2,3), total 1.5. Per target row: 0.2, mean(0.4, 0.6) = 0.5, 0.3 -> DTW-SSID 1/3
# (a plain mean over the path would give 1.5 / 4 = 0.375).
COST = torch.tensor([[0.2, 1.0, 2.0, 3.0], [1.0, 0.4, 0.6, 2.0], [3.0, 2.0, 1.0, 0.3]], dtype=torch.float64)


def test_dtw_path_by_hand():
    path = dtw_path(COST)
    assert path == [(0, 0), (1, 1), (1, 2), (2, 3)]
    torch.testing.assert_close(aggregate_path(COST, path), torch.tensor(1 / 3, dtype=torch.float64))
    # Transposed: one value per column of COST instead: (0.2 + 0.4 + 0.6 + 0.3) / 4.
    path_t = dtw_path(COST.T)
    assert path_t == [(j, i) for i, j in path]
    torch.testing.assert_close(aggregate_path(COST.T, path_t), torch.tensor(0.375, dtype=torch.float64))


def test_dtw_path_edges():
    assert dtw_path(torch.zeros(1, 1)) == [(0, 0)]
    assert dtw_path(torch.ones(1, 3)) == [(0, 0), (0, 1), (0, 2)]
    assert dtw_path(torch.ones(3, 1)) == [(0, 0), (1, 0), (2, 0)]
    path = dtw_path(torch.rand(7, 5, generator=torch.Generator().manual_seed(0)))
    assert path[0] == (0, 0) and path[-1] == (6, 4)
    steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(path, path[1:])}
    assert steps <= {(1, 0), (0, 1), (1, 1)}
    with pytest.raises(ValueError, match="non-finite"):  # NaN compares false: the walk back would leave the matrix
        dtw_path(torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]]))


def test_overflowing_rollout_scores_nan():
    """Finite frames far outside [0, 1] overflow the SSIM's float32 moments: both readings are NaN, not a crash."""
    from extrapolation.evaluate import dtw_readings

    target = video(5, 0)
    assert all(x != x for x in dtw_readings(torch.full_like(target, 1e30), target))


def test_ssid_matrix_matches_torchmetrics():
    a, b = video(3, 0), video(4, 1)
    m = ssid_matrix(a, b)
    assert m.shape == (3, 4)
    ref = 1 - ssim(a[1:2], b[2:3], data_range=1.0, gaussian_kernel=True, kernel_size=11, sigma=1.5, k1=0.01, k2=0.03)
    torch.testing.assert_close(m[1, 2], ref)
    torch.testing.assert_close(ssid_matrix(b, a), m.T)
    g = torch.Generator().manual_seed(0)
    for shape in ((1, 20, 20), (3, 17, 23)):  # every entry, grey and colour, non-square
        x, y = torch.rand(6, *shape, generator=g), torch.rand(5, *shape, generator=g)
        ia, ib = torch.meshgrid(torch.arange(6), torch.arange(5), indexing="ij")
        want = 1 - ssim(x[ia.flatten()], y[ib.flatten()], reduction="none", data_range=1.0, gaussian_kernel=True,
                        kernel_size=11, sigma=1.5, k1=0.01, k2=0.03).reshape(6, 5)
        torch.testing.assert_close(ssid_matrix(x, y), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(ssid_matrix(x, y, chunk=7), want, atol=1e-5, rtol=0)


def test_identical_and_repeated_frames_give_zero():
    gt = video(5)
    assert dtw_ssid(gt, gt).abs().item() < 1e-5
    doubled = gt.repeat_interleave(2, dim=0)  # each GT frame twice: DTW absorbs the slower time
    assert dtw_ssid(doubled, gt).abs().item() < 1e-5
    assert dtw_ssid(gt, doubled).abs().item() < 1e-5


def test_asymmetric_by_design():
    f0, g, f1 = video(3, 2)
    target, prediction = torch.stack([f0, f1]), torch.stack([f0, g, f1])
    value, cost, path = dtw_ssid(prediction, target, return_alignment=True)
    assert cost.shape == (2, 3) and path[0] == (0, 0) and path[-1] == (1, 2)
    d = min(cost[0, 1], cost[1, 1])  # g joins whichever target frame it resembles more
    # Per target frame: one of them averages (0, d) -> d / 2, the other 0; mean over 2 target frames.
    torch.testing.assert_close(value, d / 4)
    # Swapped: g is now a target frame of its own, with distance d: mean over 3 target frames.
    torch.testing.assert_close(dtw_ssid(target, prediction), d / 3)


def test_batch_matches_pairs():
    pred = torch.stack([video(6, s) for s in range(3)])
    gt = torch.stack([video(4, 10 + s) for s in range(3)])
    values = dtw_ssid_batch(pred, gt)
    assert values.shape == (3,)
    for v in range(3):
        torch.testing.assert_close(values[v], dtw_ssid(pred[v], gt[v]))
