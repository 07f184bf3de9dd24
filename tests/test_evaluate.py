"""The one evaluation path: batch independence (chunks, shares of the set, trials batched), settings checks."""
import pytest
import torch

from extrapolation import Models, MethodSettings, SettingsError, evaluate, load_settings
from networks import UNet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = UNet(in_channels=1, widths=[8, 16, 32], mid_width=32).eval()
    g = torch.Generator().manual_seed(0)
    base = torch.rand(10, 1, 1, 20, 20, generator=g)
    videos = torch.cat([torch.roll(base, s, dims=-1) for s in range(12)], 1)  # (10, 12, 1, 20, 20)
    return Models(denoise=lambda x: x - 0.3 * net(x)), videos


SOLVERS = {
    "block": dict(k=2, solver=dict(method="block", tol=1e-2, max_iters=10)),
    "filter": dict(solver=dict(method="filter", power=2)),
}


@pytest.mark.parametrize("name", [pytest.param("block", marks=pytest.mark.slow), "filter"])  # block: ~40 s
def test_a_video_scores_the_same_alone_in_any_chunk_and_any_share(setup, name):
    models, videos = setup
    s = MethodSettings("tangent", steps=4, eta=0.5, sigma=0.1, **SOLVERS[name])
    full = evaluate(models, videos, s, trials=2, seed=7, keep_frames=True)
    for batch_size in (1, 3) if name == "filter" else (3,):  # block: chunks of 1 cost minutes; `alone` below
        chunked = evaluate(models, videos, s, trials=2, seed=7, batch_size=batch_size, keep_frames=True)
        torch.testing.assert_close(chunked.frames, full.frames, atol=1e-4, rtol=0)
        torch.testing.assert_close(chunked.whole, full.whole, atol=1e-4, rtol=0)
        torch.testing.assert_close(chunked.cut, full.cut, atol=1e-4, rtol=0)
    alone = evaluate(models, videos[4:5], s, trials=2, seed=7, video_ids=[4], keep_frames=True)
    torch.testing.assert_close(alone.frames[:, 0], full.frames[:, 4], atol=1e-4, rtol=0)
    torch.testing.assert_close(alone.whole[:, 0], full.whole[:, 4], atol=1e-4, rtol=0)
    # two ranks, each with its share (every other video), match one
    shares = [evaluate(models, videos[r::2], s, trials=2, seed=7, video_ids=range(r, 10, 2)) for r in (0, 1)]
    for r, share in enumerate(shares):
        torch.testing.assert_close(share.whole, full.whole[:, r::2], atol=1e-4, rtol=0)
        torch.testing.assert_close(share.cut, full.cut[:, r::2], atol=1e-4, rtol=0)
    assert not torch.allclose(full.frames[0, :, 2:], full.frames[1, :, 2:])  # trials differ
    other = evaluate(models, videos, s, trials=1, seed=8)
    assert not torch.allclose(other.whole, full.whole[:1])


def test_readings_and_the_ground_truth_itself(setup):
    """The ground truth played back scores 0 cut; the whole reading penalises the missing frames."""
    models, videos = setup

    class Replay:  # a 'latent' model whose rollout replays the video: encode = frame index, decode = frame
        def encode(self, u):
            return torch.stack([(videos[:, :1] - f.unsqueeze(1)).abs().flatten(1).sum(1).argmin() for f in u]).float()

    s = MethodSettings("linear", steps=4, eta=1.0, sigma=0.0)
    ident = Models(denoise=lambda x: x)  # noise-free linear extrapolation of a shift is not the video: > 0
    res = evaluate(ident, videos, s)
    assert res.whole.shape == (1, 10) and (res.cut >= 0).all() and (res.whole >= res.cut - 1e-9).all()


def test_settings_are_checked():
    ok = dict(steps=3, eta=0.5, sigma=0.1)
    for bad, match in ((dict(eta=0), "eta"), (dict(eta=float("nan")), "eta"), (dict(sigma=-1), "sigma"),
                       (dict(steps=0), "steps"), (dict(k=0), "k"), (dict(solver={"method": "lanczos"}), "solver"),
                       (dict(solver={"tol": 0}), "tol"), (dict(solver={"nope": 1}), "unknown")):
        with pytest.raises(SettingsError, match=match):
            MethodSettings("tangent", **{**ok, **bad})
    assert MethodSettings("tangent", **{**ok, "sigma": "25/255"}).sigma == pytest.approx(25 / 255)
    with pytest.raises(SettingsError, match="k must be in"):
        MethodSettings("tangent", **ok, k=500).check_frame(400)
    MethodSettings("tangent", **ok, k=500, solver={"method": "filter"}).check_frame(400)  # k unused


def test_every_settings_file_loads_both_profiles():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "extrapolation").glob("*.yaml"))
    assert {f.stem for f in files} >= {"rot", "trans", "weizmann"}
    for f in files:
        for profile in ("paper", "selected"):
            s = load_settings(f, profile)
            assert set(s) == {"tangent", "linear", "latent"}, (f, profile)
    with pytest.raises(SettingsError, match="no profile"):
        load_settings(files[0], "nope")
