"""DTW-SSID (paper A.2): cost matrix, DTW path, per-target-frame aggregation, the Metric; open-end readings."""
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from extrapolation import aggregate_path, dtw_path, dtw_ssid, dtw_ssid_batch, ssid_matrix
from extrapolation.dtw import open_end_path, readings, reference_dtw_path


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
    """Finite frames far outside [0, 1] overflow the SSIM's float32 moments: every reading is NaN, not a crash."""
    from extrapolation.evaluate import dtw_readings

    target = video(5, 0)
    r = dtw_readings(torch.full_like(target, 1e30), target)
    assert set(r) == {"whole", "cut", "open_end", "reached", "coverage", "speed_ratio"}
    assert all(x != x for x in r.values())


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




def reference_open_end(cost):
    """Open-end DTW by brute force: symmetric2 (diagonal steps weigh 2) over every rollout column, normalised
    distance min over ground-truth prefixes 0..j of acc / (T2 + j + 1) -> (value, j)."""
    c = np.asarray(cost, dtype=float).T  # rollout rows
    n, m = c.shape
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            acc[i, j] = c[0, 0] if i == j == 0 else min(
                acc[i - 1, j - 1] + 2 * c[i, j] if i and j else np.inf,
                acc[i - 1, j] + c[i, j] if i else np.inf, acc[i, j - 1] + c[i, j] if j else np.inf)
    norm = acc[-1] / (n + np.arange(m) + 1)
    return norm.min(), int(norm.argmin())


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 5), (5, 7), (30, 12), (100, 55)])
def test_dtw_path_matches_hand_written(shape):
    """dtw-python's symmetric1 path is the hand-written one, on ties too (small integer costs), and so are the
    aggregated readings."""
    g = torch.Generator().manual_seed(sum(shape))
    for cost in (torch.rand(shape, generator=g, dtype=torch.float64),
                 torch.randint(0, 3, shape, generator=g).double()):
        assert dtw_path(cost) == reference_dtw_path(cost)
        r = readings(cost)
        cut = cost[: min(shape)]
        assert abs(r["whole"] - aggregate_path(cost, reference_dtw_path(cost)).item()) < 1e-12
        assert abs(r["cut"] - aggregate_path(cut, reference_dtw_path(cut)).item()) < 1e-12
        value, reached = reference_open_end(cost)
        assert r["reached"] == reached and open_end_path(cost)[-1] == (reached, shape[1] - 1)
        assert abs(r["open_end"] - value) < 1e-12


def test_readings_by_hand():
    """Rows: ground truth (5), columns: rollout (3). Open end (symmetric2: diagonal steps count twice, first cell
    once): ending at ground-truth row 2 along the diagonal costs 0 + 2 * 0.2 + 2 * 0.4 = 1.2 over 3 + 3 = 0.2;
    one more row step to row 3 adds 0.1: 1.3 / 7 = 0.186 is lower (row 4: 2.3 / 8, row 1: 1.4 / 5, row 0: 2 / 4).
    Matched rows per rollout frame: 0, 1, mean(2, 3) = 2.5; slope over frames 1, 2 (n_given 2) = 1.5, over
    0, 1, 2 (n_given 1) = 2.5 / 2 = 1.25. Closed end (symmetric1): path (0,0) (1,1) (2,2) (3,2) (4,2): per row
    0, 0.2, 0.4, 0.1, 1 -> whole 0.34; cut (first 3 rows): (0 + 0.2 + 0.4) / 3 = 0.2."""
    cost = torch.tensor([[0.0, 1, 1], [1, 0.2, 1], [1, 1, 0.4], [1, 1, 0.1], [1, 1, 1]], dtype=torch.float64)
    assert open_end_path(cost) == [(0, 0), (1, 1), (2, 2), (3, 2)]
    assert dtw_path(cost) == [(0, 0), (1, 1), (2, 2), (3, 2), (4, 2)]
    want = dict(whole=0.34, cut=0.2, open_end=1.3 / 7, reached=3.0, coverage=0.75, speed_ratio=1.5)
    assert readings(cost) == pytest.approx(want, abs=1e-12, rel=0)
    assert readings(cost, n_given=1) == pytest.approx({**want, "speed_ratio": 1.25}, abs=1e-12, rel=0)


def blob_video(times, size=20, length=100):
    """A Gaussian blob (sigma 2 px) crossing the frame along a gentle curve: frame t of a `length`-frame video,
    at any real t (so slower playback has frames between the video's)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    frames = []
    for t in times:
        x, y = 3 + 14 * t / (length - 1), size / 2 - 3 * math.sin(t / 15)
        frames.append(torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)[None])
    return torch.stack(frames).float()


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0])
def test_readings_oracle_speed(speed):
    """The video itself played at 0.5x / 1x / 2x after its two given frames: the open-end reading is ~0 (where it
    went is right) and the speed ratio is the playback speed, whatever the pace does to the closed-end ones."""
    gt = blob_video(range(100))
    rollout = blob_video([0] + [1 + (k - 1) * speed for k in range(1, 30)])
    r = readings(ssid_matrix(gt, rollout))
    assert r["open_end"] < 0.02
    assert abs(r["speed_ratio"] - speed) < 0.1 * speed
    assert r["reached"] == pytest.approx(1 + 28 * speed, abs=1) and r["coverage"] == r["reached"] / 99
    if speed != 1.0:  # the closed-end readings do see the pace
        assert r["cut"] > 0.01


def test_readings_oracle_frozen():
    """A rollout that holds the second given frame: nothing of the video reached, no pace, nothing wrong with
    where it is (open end 0), while the closed-end readings are large."""
    gt = blob_video(range(100))
    r = readings(ssid_matrix(gt, blob_video([0] + [1] * 29)))
    assert r["coverage"] < 0.05 and abs(r["speed_ratio"]) < 1e-9 and r["open_end"] < 1e-6
    assert r["whole"] > 0.3 and r["cut"] > 0.2


def test_readings_non_finite():
    cost = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    for bad in (float("nan"), float("inf")):
        c = cost.clone()
        c[3, 2] = bad
        r = readings(c)
        assert len(r) == 6 and all(math.isnan(v) for v in r.values())
    with pytest.raises(ValueError, match="non-finite"):
        open_end_path(c)
