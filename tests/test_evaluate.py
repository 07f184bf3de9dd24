"""The one evaluation path: batch independence (chunks, shares of the set, trials batched), readings, divergence,
settings files and the method registry."""
import dataclasses
import math
from typing import ClassVar

import pytest
import torch

from extrapolation import (
    METHODS,
    EigenProjection,
    Method,
    Models,
    PowerFilter,
    SettingsError,
    evaluate,
    load_settings,
)
from extrapolation.methods import Linear, Tangent
from extrapolation.rollouts import RolloutInfo
from networks import UNet


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = UNet(in_channels=1, widths=[8, 16, 32], mid_width=32).eval()
    g = torch.Generator().manual_seed(0)
    base = torch.rand(10, 1, 1, 20, 20, generator=g)
    videos = torch.cat([torch.roll(base, s, dims=-1) for s in range(12)], 1)  # (10, 12, 1, 20, 20)
    return Models(denoise=lambda x: x - 0.3 * net(x)), videos


STEPS = {"block": EigenProjection(k=2, tol=1e-2, max_iters=10), "filter": PowerFilter(power=2)}


@pytest.mark.parametrize("name", [pytest.param("block", marks=pytest.mark.slow), "filter"])  # block: ~40 s
def test_a_video_scores_the_same_alone_in_any_chunk_and_any_share(setup, name):
    models, videos = setup
    s = Tangent(steps=4, eta=0.5, sigma=0.1, step=STEPS[name])
    full = evaluate(models, videos, s, trials=2, seed=7, keep_frames=True)
    for batch_size in (1, 3) if name == "filter" else (3,):  # block: chunks of 1 cost minutes; `alone` below
        chunked = evaluate(models, videos, s, trials=2, seed=7, batch_size=batch_size, keep_frames=True)
        torch.testing.assert_close(chunked.frames, full.frames, atol=1e-4, rtol=0)
        for reading in ("whole", "cut", "open_end"):
            torch.testing.assert_close(chunked.readings[reading], full.readings[reading], atol=1e-4, rtol=0)
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


def test_every_reading_is_there_and_the_ground_truth_itself_reads_zero(setup):
    _, videos = setup

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Replay(Method):  # not registered: evaluate takes any Method
        name: ClassVar[str] = "replay"

        def rollout(self, models, first, generators):
            return videos[:, : self.steps + 2].clone(), RolloutInfo(torch.full((first.shape[0],), -1))

    res = evaluate(Models(), videos, Replay(steps=6))
    assert set(res.readings) == {"whole", "cut", "open_end", "reached", "coverage", "speed_ratio"}
    assert res.cut.abs().max() < 1e-6 and res.readings["open_end"].abs().max() < 1e-6
    assert (res.whole > 0.05).all()  # the missing frames 8-11 cost
    torch.testing.assert_close(res.readings["speed_ratio"], torch.ones(1, 10, dtype=torch.float64), atol=1e-6, rtol=0)
    summary = res.summary()
    assert summary["diverged"] == 0 and summary["speed_ratio_median"] == pytest.approx(1.0)


class Exploding:
    """A denoiser that returns inf for the videos of `videos` from its `after`-th call on."""

    def __init__(self, models, after, videos):
        self.models, self.after, self.videos, self.calls = models, after, videos, 0

    def __call__(self, x):
        self.calls += 1
        out = self.models.denoise(x)
        if self.calls >= self.after:
            out = out.clone()
            out[self.videos] = math.inf
        return out


def test_a_diverged_rollout_reads_nan_and_is_counted(setup):
    models, videos = setup
    s = Linear(steps=5, eta=0.5, sigma=0.1)  # one denoiser call per step: call 2 makes frame 3
    res = evaluate(Models(denoise=Exploding(models, 2, [3, 7])), videos, s, keep_frames=True)
    assert res.diverged[0].tolist() == [-1, -1, -1, 3, -1, -1, -1, 3, -1, -1]
    for name, values in res.readings.items():
        assert values[0, [3, 7]].isnan().all() and values[0, [0, 1, 2, 4, 5, 6, 8, 9]].isfinite().all(), name
    assert res.frames[0, 3, 3:].isnan().all() and res.frames[0, 3, :3].isfinite().all()
    summary = res.summary()
    ok = res.whole[0, [0, 1, 2, 4, 5, 6, 8, 9]]
    assert summary["diverged"] == pytest.approx(0.2) and summary["whole_mean"] == pytest.approx(ok.mean().item())
    everything = evaluate(Models(denoise=Exploding(models, 1, list(range(10)))), videos, s).summary()
    assert everything["diverged"] == 1 and math.isnan(everything["whole_mean"])


def test_a_failed_eigen_solve_reads_nan_not_a_crash(setup, monkeypatch):
    models, videos = setup

    def failing(*args, **kwargs):
        raise torch.linalg.LinAlgError("eigh failed to converge")

    monkeypatch.setattr(EigenProjection, "__call__", failing)
    res = evaluate(models, videos[:2], Tangent(steps=3, eta=0.5, sigma=0.1), keep_frames=True)
    assert res.whole.isnan().all() and res.diverged.eq(2).all() and res.summary()["diverged"] == 1


@pytest.mark.parametrize("bad, match", [
    (dict(eta=0), "eta must be > 0"), (dict(eta=float("nan")), "eta must be finite"), (dict(sigma=-1), "sigma"),
    (dict(steps=0), "steps"), (dict(sigma="40/0"), "division by zero"),
])
def test_method_settings_are_checked(bad, match):
    with pytest.raises(SettingsError, match=match):
        Tangent(**{**dict(steps=3, eta=0.5, sigma=0.1), **bad})


def test_steps_and_overrides():
    t = Tangent(steps=3, eta=0.5, sigma="25/255")
    assert t.sigma == pytest.approx(25 / 255) and isinstance(t.step, EigenProjection)
    with pytest.raises(SettingsError, match="k must be in"):
        t.with_overrides(k=500).check_frame(400)
    f = t.override(step={"type": "filter", "power": 3}, sigma=0.2, vae_eta=9)
    assert f.step == PowerFilter(power=3) and f.sigma == 0.2 and f.eta == 0.5
    with pytest.raises(SettingsError, match="k applies to an eigen-projection"):
        f.override(k=2)
    assert METHODS["latent"](steps=3, eta=1.0).override(vae_eta=0.5, sigma=0.3).eta == 0.5
    for bad, match in (({"type": "lanczos"}, "type"), ({"type": "eigen", "k": 0}, "k must be"),
                       ({"type": "eigen", "solver": "qr"}, "solver"), ({"type": "filter", "nope": 1}, "unknown")):
        with pytest.raises(SettingsError, match=match):
            t.override(step=bad)


@pytest.mark.parametrize("text, match", [
    ("", "is empty"), ("steps: 3\npaper: {tangent: {eta: 1.0}}\n", r"tangent: missing settings \['sigma'\]"),
    ("steps: 3\npaper: {tangent: {eta: 1.0, sigma: 40/0}}\n", "division by zero"),
    ("steps: 3\npaper: {spline: {eta: 1.0}}\n", "unknown method 'spline'"),
    ("steps: 3\npaper: {linear: {eta: 1.0, sigma: 0.1, k: 2}}\n", r"unknown settings \['k'\]"),
    ("steps: 3\npaper: {linear: {eta: 1.0, sigma: 0.1}\n", "not valid YAML at line"),
    ("paper: {linear: {eta: 1.0, sigma: 0.1}}\n", "no `steps`"),
])
def test_settings_file_errors_name_the_file_in_one_line(tmp_path, text, match):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=match) as err:
        load_settings(path, "paper")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_every_settings_file_loads_every_profile():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "configs" / "extrapolation").glob("*.yaml"))
    assert {f.stem for f in files} >= {"rot", "trans", "weizmann"}
    for f in files:
        assert {"tangent", "linear", "latent"} <= set(load_settings(f, "paper")), f
        assert {"tangent", "linear", "latent", "tangent_paced", "linear_paced"} <= set(load_settings(f, "selected")), f
        assert set(load_settings(f, "reference")) == {"static"}
    with pytest.raises(SettingsError, match="no profile"):
        load_settings(files[0], "nope")


def test_a_registered_toy_method_runs_from_a_settings_file(tmp_path, setup, toy_method):
    Drift = toy_method
    _, videos = setup
    path = tmp_path / "s.yaml"
    path.write_text("steps: 4\npaper:\n  toy_drift: {speed: 1.0}\n")
    method = load_settings(path, "paper")["toy_drift"]
    assert method == Drift(steps=4, speed=1.0) and method.override(eta=2.0).speed == 2.0
    res = evaluate(Models(), videos, method)
    assert res.whole.shape == (1, 10) and res.diverged.eq(-1).all()
    assert [p.speed for p in method.grid(method)] == [0.5, 1.0, 2.0]
