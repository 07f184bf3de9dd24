"""The experiment library (`experiments`), the grid engine (`extrapolation.grid`) and the thin scripts on top of them
(`scripts.grid`, `scripts.reproduce_table1`, `benchmarks.bench_training`), on tiny checkpoints and configs."""
import dataclasses
import json
import math
import shutil
import statistics
from typing import ClassVar

import pytest
import torch

import experiments as ex
from errors import InputError
from extrapolation import METHODS, Method, Models, evaluate, load_settings, register
from extrapolation.grid import combine, flat, run_grid, select
from extrapolation.rollouts import RolloutInfo
from scripts import grid
from scripts import reproduce_table1 as table

TESTS = ex.ROOT / "tests" / "configs"
ROT = TESTS / "rot.yaml"


# ------------------------------------------------------------------------------------------- the selection rule
def cell(method="m", cut=0.5, whole=0.5, diverged=0.0, **kw):
    return dict(method=method, cut_mean=cut, whole_mean=whole, open_end_mean=0.1, diverged=diverged, **kw)


def test_select_lowest_criterion_diverged_after_clean_nan_never():
    rows = [cell(cut=0.30, whole=0.1, id=0), cell(cut=0.20, whole=0.9, id=1), cell(cut=0.05, diverged=0.1, id=2),
            cell(cut=math.nan, id=3), cell(cut=0.25, id=4)]
    assert select(rows)["id"] == 1  # lowest cut among cells where nothing diverged
    assert select(rows, "whole")["id"] == 0  # the older protocol's reading
    assert select([rows[2], rows[3]])["id"] == 2  # a partly diverged cell before a NaN one
    # rows read back from a CSV hold text; empty means NaN
    text = [{k: str(v) for k, v in r.items()} for r in rows[:2]] + [dict(method="m", cut_mean="", diverged="0")]
    assert select(text)["id"] == "1"
    with pytest.raises(ValueError, match="every cell of toy_blowup has a NaN cut reading.*nothing to select"):
        select([cell("toy_blowup", cut=math.nan, diverged=1.0)] * 3)
    with pytest.raises(ValueError, match="criterion"):
        select(rows, "bogus")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gain(Method):
    """A toy method: the second frame held, multiplied by `gain` at every step (no model); past `limit` the frames
    overflow and the rollout reports divergence at its first generated frame."""

    name: ClassVar[str] = "toy_gain"
    label: ClassVar[str] = "Toy gain"
    overrides: ClassVar[dict] = {"steps": "steps", "eta": "gain"}
    gain: float = 1.0
    limit: float = 1.5

    def rollout(self, models, first, generators):
        powers = self.gain ** torch.arange(1, self.steps + 1, dtype=first.dtype, device=first.device)
        frames = torch.cat([first, first[:, 1:2] * powers.view(1, -1, 1, 1, 1)], 1)
        blown = self.gain > self.limit
        if blown:
            frames[:, 2:] = math.inf
        return frames, RolloutInfo(torch.full((first.shape[0],), 2 if blown else -1))

    def grid(self, paper):
        return [self.with_overrides(gain=g) for g in (0.9, 1.0, 2.0)]


@pytest.fixture
def toy_method():
    """`Gain` in the method registry for one test."""
    yield register(Gain)
    METHODS.pop(Gain.name)


def test_a_registered_toy_method_runs_through_run_grid_and_select(toy_method):
    """One row schema for every cell; `on_row` after each; the diverged cell (gain 2) is never selected."""
    from datamodules import RotatedMNISTDataModule

    dm = RotatedMNISTDataModule(indices=[0, 1], num_frames=12, num_val_frames=4)
    dm.setup("test")
    seen = []
    points = Gain(steps=6).grid(Gain(steps=6))
    rows = run_grid(points, Models(), dm.videos, trials=2, seed=0, on_row=seen.append, dataset="rot", videos="0,1")
    assert seen == rows and [r["settings"]["gain"] for r in rows] == [0.9, 1.0, 2.0]
    r = rows[0]
    assert r["method"] == "toy_gain" and r["label"] == "Toy gain" and r["step"] == ""
    assert {"whole_mean", "whole_std", "cut_mean", "open_end_mean", "coverage_mean", "speed_ratio_median", "stalled",
            "diverged", "median_video", "worst_video", "per_video", "per_video_cut", "trials", "seed", "seconds",
            "applications", "rollouts", "diverged_rollouts"} <= set(r)
    assert r["dataset"] == "rot" and r["videos"] == "0,1" and r["trials"] == 2 and r["rollouts"] == 4
    assert rows[2]["diverged"] == 1.0 and math.isnan(rows[2]["cut_mean"]) and rows[2]["diverged_rollouts"] == 4
    best = select(rows, "cut")
    assert best is min(rows[:2], key=lambda x: x["cut_mean"])
    # the row is the summary of `evaluate`
    direct = evaluate(Models(), dm.videos, points[1], 2, 0).summary()
    assert rows[1]["whole_mean"] == pytest.approx(direct["whole_mean"]) and rows[1]["per_video"] == direct["per_video"]
    assert json.loads(flat(rows[0])["settings"]) == rows[0]["settings"]


def test_combine_over_checkpoints():
    rows = [dict(whole_mean=m, whole_std=s, cut_mean=m / 2, cut_std=0.0, diverged=d, rollouts=10, diverged_rollouts=k)
            for m, s, d, k in ((0.2, 0.01, 0.0, 0), (0.3, 0.03, 0.1, 1), (0.4, 0.02, 0.0, 0))]
    c = combine(rows, readings=("whole", "cut"))
    assert c["checkpoints"] == 3 and c["whole_mean"] == pytest.approx(0.3)
    assert c["whole_std"] == pytest.approx(statistics.stdev([0.2, 0.3, 0.4]))
    assert c["whole_trial_std"] == pytest.approx(0.02) and c["rollouts"] == 30 and c["diverged_rollouts"] == 1
    one = combine(rows[:1] + [dict(whole_mean=math.nan, whole_std=math.nan)], readings=("whole",))
    assert one["whole_mean"] == pytest.approx(0.2) and math.isnan(one["whole_std"])  # NaN rows left out


# ------------------------------------------------------------------------------------------- experiments
def test_data_overrides_and_settings_file():
    absolute = f"--data.init_args.data_dir={ex.ROOT.parent / 'mnist'}"  # however the folder is spelled
    assert ex.data_overrides("10..11", ex.ROOT / ".." / "mnist") == ["--data.init_args.indices=[10,11]", absolute]
    assert ex.data_overrides(clip_start=5, clip_length=16, num_frames=40) == [
        "--data.init_args.clip_start=5", "--data.init_args.clip_length=16", "--data.init_args.num_frames=40"]
    assert ex.data_overrides(step=1.8, config=ROT) == ["--data.init_args.step_deg=1.8"]
    assert ex.data_overrides(step=0.3, config=TESTS / "trans.yaml") == ["--data.init_args.step_px=0.3"]
    with pytest.raises(InputError, match="indices 'x1'"):
        ex.data_overrides("x1")
    assert ex.settings_file(ROT) == ex.ROOT / "configs" / "extrapolation" / "rot.yaml"
    assert ex.describe_overrides(ex.data_overrides("2,3")) == "indices=[2,3]" and ex.describe_overrides([]) == "config"
    dm = ex.load_datamodule(ROT, ex.data_overrides("3,4", num_frames=6, step=36.0, config=ROT))
    assert dm.videos.shape == (2, 6, 1, 20, 20)
    assert torch.allclose(dm.videos[:, 5], dm.videos[:, 0].rot90(2, (-2, -1)), atol=1e-4)  # 5 x 36 degrees


def test_checkpoint_provenance_models_and_wrong_class(tiny_checkpoints, tmp_path):
    run = tmp_path / "runs" / "rot" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoints["rot0"], run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text("# lightning.pytorch==2.6.6\nseed_everything: 7\ntrainer: {}\n")
    p = ex.checkpoint_provenance(run)  # a run folder: its newest checkpoint
    assert p["path"] == str(run / "checkpoints" / "last.ckpt") and p["training_seed"] == 7 and p["epoch"] == 0
    assert p["module"] == "lightning_modules.DenoiserModule" and len(p["sha256"]) == 12
    assert p["sha256"] == ex.checkpoint_provenance(tiny_checkpoints["rot0"])["sha256"]  # the same bytes
    assert ex.checkpoint_provenance(tiny_checkpoints["rot0"])["training_seed"] is None  # no run folder
    assert ex.checkpoint_provenance(tiny_checkpoints["vae"])["module"] == "lightning_modules.VAEModule"
    models = ex.load_models(tiny_checkpoints["rot1"], tiny_checkpoints["vae"])
    assert models.denoise is not None and models.encode is not None and models.decode is not None
    for call, match in ((lambda: ex.load_models(denoiser=tiny_checkpoints["vae"]), "holds a VAEModule, not a "
                         "DenoiserModule"),
                        (lambda: ex.load_models(vae=tiny_checkpoints["rot0"]), "holds a DenoiserModule, not a VAEModule"),
                        (lambda: ex.load_models(denoiser=tmp_path / "missing.ckpt"), "no such checkpoint file"),
                        (lambda: ex.checkpoint_provenance(tmp_path / "runs"), "no complete checkpoint")):
        with pytest.raises(InputError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="config bogus: no such file"):
        ex.config_path("bogus")


def test_commit_is_uncommitted_for_code_changes_not_for_tables_or_docs(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for name in ("code.py", "README.md", "docs/a.md", "results/t.csv", "configs/x.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    monkeypatch.setattr(ex, "ROOT", tmp_path)
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    clean = ex.commit()
    assert len(clean) >= 7 and "+" not in clean
    for name in ("README.md", "docs/a.md", "results/t.csv"):
        (tmp_path / name).write_text("1\n")
    assert ex.commit() == clean
    for name in ("code.py", "configs/x.yaml"):
        (tmp_path / name).write_text("1\n")
        assert ex.commit() == clean + "+uncommitted"
        git("checkout", "--", name)


def test_device_commit_and_json_files(tmp_path, monkeypatch):
    assert ex.device("cpu").type == "cpu" and ex.device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="accelerator 'tpu'"):
        ex.device("tpu")
    monkeypatch.setenv("GIT_COMMIT", "abc1234")
    assert ex.commit() == "abc1234"
    monkeypatch.delenv("GIT_COMMIT")
    assert ex.commit() != "abc1234" and ex.machine()
    path = tmp_path / "sub" / "x.json"
    ex.write_json_atomic(path, {"a": math.nan, "b": [1.0, math.inf], "c": (1, 2)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": [1, 2]}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    path.write_text('{"a": 1,')
    with pytest.raises(InputError, match=r"x\.json is not valid JSON"):
        ex.read_json(path)
    assert ex.parse_assignments(["rot=a", "rot=b"]) == [("rot", "a"), ("rot", "b")]
    with pytest.raises(InputError, match="--ckpt rot: expected EXPERIMENT=PATH"):
        ex.parse_assignments(["rot"])


# ------------------------------------------------------------------------------------------- scripts.grid
def test_grid_selection_write_append_and_paths(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """Selection writes every cell, prints the winners, replaces only the `selected` entries of the methods run
    (comments and other profiles kept; the file loads); --append keeps the other methods' rows; outputs are
    relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    original = ex.ROOT / "configs" / "extrapolation" / "rot.yaml"
    settings = tmp_path / "rot.yaml"
    settings.write_text(original.read_text())
    common = ["--dataset", "rot", "--configs", str(TESTS), "--indices", "2..3", "--trials", "1",
              "--settings", str(settings)]
    assert grid.main(common + ["--vae", str(tiny_checkpoints["vae"]), "--methods", "latent", "--write"]) == 0
    out = tmp_path / "results" / "grid_rot.csv"  # the default, under the working directory
    rows = ex.read_csv(out)
    assert [r["method"] for r in rows] == ["latent"] * 14 and {r["videos"] for r in rows} == {"indices=[2,3]"}
    assert rows[0]["checkpoint_sha256"] == ex.checkpoint_provenance(tiny_checkpoints["vae"])["sha256"]
    assert rows[0]["commit"] and rows[0]["checkpoint_path"] == str(tiny_checkpoints["vae"])
    best = select(rows, "cut")
    new = load_settings(settings, "selected")["latent"]
    assert new.settings() == {**json.loads(best["settings"]), "steps": new.steps}
    printed = capsys.readouterr().out
    assert "latent: selected eta" in printed and "by cut" in printed
    md = out.with_suffix(".md").read_text()
    assert md.count("**") == 4 and "re-encode" not in md.splitlines()[0]  # method name and winner in bold

    assert grid.main(common + ["--denoiser", str(tiny_checkpoints["rot0"]), "--methods", "linear", "--sigmas", "10",
                               "--etas", "0.5", "1.0", "--append", "--write", "--out", "sub/g.csv"]) == 0
    rows2 = ex.read_csv(tmp_path / "sub" / "g.csv")
    assert [r["method"] for r in rows2] == ["linear"] * 2  # nothing to keep in a new file
    assert grid.main(common + ["--denoiser", str(tiny_checkpoints["rot0"]), "--methods", "linear", "--sigmas", "10",
                               "--etas", "0.5", "--append"]) == 0
    rows3 = ex.read_csv(out)
    assert [r["method"] for r in rows3] == ["latent"] * 14 + ["linear"]
    assert [r["cut_mean"] for r in rows3[:14]] == [r["cut_mean"] for r in rows]  # kept as they were
    # the file: only the `selected` entries of latent and linear changed
    before, after = original.read_text().splitlines(), settings.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert [b.split(":")[0] for _, b in changed] == ["  linear", "  latent"]
    assert after[after.index("selected:") + 1] == before[before.index("selected:") + 1]  # tangent untouched
    for profile in ("paper", "reference"):
        assert load_settings(settings, profile) == load_settings(original, profile)
    assert load_settings(settings, "selected")["linear"].sigma == pytest.approx(10 / 255)


def test_write_selected_adds_missing_entries_and_block(tmp_path):
    from extrapolation.methods import Linear

    path = tmp_path / "s.yaml"
    path.write_text("# top comment\nsteps: 5\npaper:\n  linear: {eta: 1.0, sigma: 25/255}\n")
    grid.write_selected(path, {"linear": Linear(steps=5, eta=0.5, sigma=10 / 255)})
    assert path.read_text().startswith("# top comment\nsteps: 5\npaper:\n  linear: {eta: 1.0, sigma: 25/255}\n")
    assert "selected:\n  linear: {eta: 0.5, sigma: 10/255}\n" in path.read_text()
    assert load_settings(path, "selected")["linear"] == Linear(steps=5, eta=0.5, sigma=10 / 255)


@pytest.mark.parametrize("length", [None, 3, 5, 16, 30])
def test_grid_refuses_selection_clips_that_overlap_scored_ones(length, tiny_checkpoints, capsys):
    """Scored Weizmann clips: frames 0-2 (the tiny config's 3-frame clips) and 0-15 (--clip-length 16): a
    selection clip of any length must start at frame 16 or later."""
    scored = dict(clip_start=0, clip_length=3, data_dir="x")
    size = length or 3
    for start in (None, 0, 2, 3, 15, 16 - size + 1 if size < 16 else 1):
        why = grid.selection_overlap(scored, None, start, length)
        assert why and f"frames {start or 0}-{(start or 0) + size - 1}" in why and "--clip-start 16" in why
    assert grid.selection_overlap(scored, None, 16, length) is None
    code = grid.main(["--dataset", "weizmann", "--configs", str(TESTS), "--denoiser", str(tiny_checkpoints["rot0"]),
                      "--methods", "linear", "--clip-start", "4", *(["--clip-length", str(length)] if length else [])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: selection clips of frames 4-")
    assert "0-2 (3-frame clips), 0-15 (16-frame clips)" in err
    assert grid.selection_overlap(scored, None, 0, length, clips="unscored") is None  # other sequences: any frames


def test_grid_refuses_scored_digits_and_names_errors(tiny_checkpoints, capsys):
    assert grid.selection_overlap({"indices": [0, 1]}, "10..19", None, None) is None
    assert "selection digits [1]" in grid.selection_overlap({"indices": [0, 1]}, "1..3", None, None)
    common = ["--configs", str(TESTS), "--denoiser", str(tiny_checkpoints["rot0"])]
    for argv, message in (
            (["--dataset", "rot", "--methods", "linear"], "selection digits [0, 1] are scored by Table 1"),
            (["--dataset", "bogus"], "bogus.yaml: no such file"),
            (["--dataset", "rot", "--indices", "2", "--methods", "bogus"], "--methods: unknown ['bogus']"),
            (["--dataset", "rot", "--indices", "2", "--methods", "latent"], "method latent needs --vae"),
            (["--dataset", "rot", "--indices", "2", "--trials", "0"], "--trials must be at least 1"),
            (["--dataset", "rot", "--indices", "2", "--step", "{bad"], "--step {bad: not JSON")):
        assert grid.main(common + argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


# ------------------------------------------------------------------------------------------- Table 1
def run_table(tmp_path, *argv):
    return table.main(["--datasets", "rot", "--configs", str(TESTS), "--no-train", "--trials", "1",
                       "--out", str(tmp_path / "out"), *argv])


def test_table_cells_keyed_by_checkpoint_and_videos(tiny_checkpoints, tmp_path, capsys):
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    (cells / "rot_linear_paper.json").write_text(json.dumps({"dataset": "rot", "method": "linear"}))  # older schema
    base = ["--methods", "linear", "static", "--profiles", "paper", "reference", "--no-figures"]
    assert run_table(tmp_path, *base, "--ckpt", f"rot={tiny_checkpoints['rot0']}") == 0
    assert "1 cells of the older schema (no key: other checkpoints) ignored" in capsys.readouterr().out
    first = {p.name: p.stat().st_mtime_ns for p in cells.glob("rot_*_????????????????.json")}
    assert len(first) == 2
    assert run_table(tmp_path, *base, "--ckpt", f"rot={tiny_checkpoints['rot0']}") == 0  # all cached
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("rot_*_????????????????.json")} == first
    assert capsys.readouterr().out.count("cached in") == 2
    assert run_table(tmp_path, *base, "--ckpt", f"rot={tiny_checkpoints['rot0']}", "--indices", "2,3") == 0
    other_videos = set(p.name for p in cells.glob("rot_*_????????????????.json")) - set(first)
    assert len(other_videos) == 2  # both cells new: the videos differ
    assert capsys.readouterr().out.count("cached in") == 0
    assert run_table(tmp_path, *base, "--ckpt", f"rot={tiny_checkpoints['rot1']}") == 0
    other_ckpt = set(p.name for p in cells.glob("rot_*_????????????????.json")) - set(first) - other_videos
    assert [n.split("_")[1] for n in other_ckpt] == ["paper"]  # the no-motion row needs no checkpoint: reused
    c = ex.read_json(cells / other_ckpt.pop())
    assert c["checkpoint"]["sha256"] == ex.checkpoint_provenance(tiny_checkpoints["rot1"])["sha256"]
    assert c["key"]["checkpoint"] == c["checkpoint"]["sha256"] and c["videos"] == "config" and c["label"]
    # the table keeps the rows of other videos beside the config's
    rows = ex.read_csv(tmp_path / "out" / "table1.csv")
    assert sorted((r["videos"], r["method"]) for r in rows) == [
        ("config", "linear"), ("config", "static"), ("indices=[2,3]", "linear"), ("indices=[2,3]", "static")]
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "## Rotated MNIST\n" in md and "## Rotated MNIST, videos indices=[2,3]" in md


def test_table_truncated_cell_is_named_and_recomputed(tiny_checkpoints, tmp_path, capsys):
    base = ["--methods", "static", "--profiles", "reference", "--no-figures"]
    assert run_table(tmp_path, *base) == 0
    path = next((tmp_path / "out" / "cells").glob("rot_reference_static_*.json"))
    good = ex.read_json(path)
    path.write_text(path.read_text()[:40])
    capsys.readouterr()
    assert run_table(tmp_path, *base) == 0
    assert f"warning: {path} is not valid JSON" in capsys.readouterr().err
    assert ex.read_json(path)["whole_mean"] == good["whole_mean"]


def test_table_nan_shows_a_dash_alone():
    cells = [dict(dataset="rot", videos="config", clip_length=None, profile="selected", method="linear",
                  label="Denoiser baseline (Alg. 2)", step="", settings={"method": "linear", "eta": 2.0},
                  whole_mean=None, whole_std=None, cut_mean=None, cut_std=None, open_end_mean=None,
                  open_end_std=None, speed_ratio_median=None, diverged=1.0, rollouts=4, diverged_rollouts=4,
                  trials=2, seed=0, checkpoint={"sha256": "abcdef123456"}, commit="c0ffee1", machine="cpu",
                  date="2026-12-04")]
    md = table.table_markdown([flat(r) for r in table.table_rows(cells)])
    line = next(x for x in md.splitlines() if x.startswith("| Denoiser baseline"))
    assert "| — | — | — | — | 4/4 † | 0.700 | 1: abcdef1 |" in line and "± " not in line


def test_table_seed_aggregation_over_checkpoints(tiny_checkpoints, tmp_path):
    """Three checkpoints (training-seed replicates): mean ± std over them of each one's mean over trials, the trial
    std beside; checkpoints and commit named; figures of the first checkpoint only."""
    ckpts = [f"rot={tiny_checkpoints[f'rot{i}']}" for i in range(3)]
    assert run_table(tmp_path, "--methods", "linear", "--profiles", "paper", "--trials", "2",
                     *(a for c in ckpts for a in ("--ckpt", c))) == 0
    cells = [ex.read_json(p) for p in sorted((tmp_path / "out" / "cells").glob("rot_paper_linear_*.json"))]
    assert len(cells) == 3 and len({c["checkpoint"]["sha256"] for c in cells}) == 3
    assert all(c["trials"] == 2 and c["whole_std"] > 0 for c in cells)
    [r] = ex.read_csv(tmp_path / "out" / "table1.csv")
    means = [c["whole_mean"] for c in cells]
    assert float(r["whole_mean"]) == pytest.approx(statistics.mean(means))
    assert float(r["whole_std"]) == pytest.approx(statistics.stdev(means))
    assert float(r["whole_trial_std"]) == pytest.approx(statistics.mean(c["whole_std"] for c in cells))
    assert r["checkpoints"] == "3" and sorted(r["checkpoint_sha256"].split()) == sorted(
        c["checkpoint"]["sha256"] for c in cells) and r["commits"] == cells[0]["commit"]
    md = (tmp_path / "out" / "table1.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| Denoiser baseline"))
    assert f"| {float(r['whole_mean']):.3f} ± {float(r['whole_std']):.3f} ({float(r['whole_trial_std']):.3f}) |" in line
    assert "| 0/12 | 0.700 | 3: " in line and f"Commits: {cells[0]['commit']}." in md
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").glob("fig2_*_strip.png"))
    assert figures == ["fig2_rot_paper_linear_strip.png"]


def test_table_every_profile_of_the_settings_file(tiny_checkpoints, tmp_path):
    """Profiles come from the settings file (here one more, `fast`), labels from the registry."""
    settings = tmp_path / "rot_settings.yaml"
    settings.write_text((ex.ROOT / "configs" / "extrapolation" / "rot.yaml").read_text()
                        + "fast:\n  linear: {eta: 0.5, sigma: 10/255}\n")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "rot.yaml").write_text(f"config: {ROT}\nextrapolation.settings: {settings}\n")
    assert table.main(["--datasets", "rot", "--configs", str(configs), "--no-train", "--trials", "1", "--methods",
                       "linear", "--no-figures", "--ckpt", f"rot={tiny_checkpoints['rot0']}",
                       "--out", str(tmp_path / "out")]) == 0
    rows = ex.read_csv(tmp_path / "out" / "table1.csv")
    assert [r["profile"] for r in rows] == ["paper", "selected", "fast"]
    assert {r["label"] for r in rows} == {METHODS["linear"].label}


@pytest.mark.parametrize("argv, message", [
    (["--trials", "0"], "--trials must be at least 1, got 0"),
    (["--datasets", "bogus"], "argument --datasets: invalid choice: 'bogus'"),
    (["--methods", "bogus"], "--methods: unknown ['bogus']"),
    (["--ckpt", "rot=missing.ckpt"], "checkpoint missing.ckpt: no such checkpoint file"),
    (["--ckpt", "rot"], "--ckpt rot: expected EXPERIMENT=PATH"),
    (["--ckpt", "rot=VAE"], "holds a VAEModule, not a DenoiserModule"),
    (["--clip-length", "8"], "--clip-length needs --datasets weizmann"),
])
def test_table_one_line_errors(argv, message, tiny_checkpoints, tmp_path, capsys):
    argv = [a.replace("VAE", str(tiny_checkpoints["vae"])) for a in argv]
    code = table.main(["--datasets", "rot", "--configs", str(TESTS), "--no-train", "--methods", "linear",
                       "--profiles", "paper", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_table_weizmann_longer_clips(strips, tmp_path):
    """--clip-length scores longer Weizmann clips, every frame after the two given generated, in cells and a table
    section of their own (no paper value beside them)."""
    from conftest import save_module, tiny_denoiser

    save_module(tiny_denoiser(0, in_channels=3), tmp_path / "weizmann.ckpt")
    assert table.main(["--datasets", "weizmann", "--configs", str(TESTS), "--no-train", "--trials", "1",
                       "--methods", "linear", "static", "--profiles", "paper", "reference", "--no-figures",
                       "--data-dir", str(strips), "--clip-length", "8", "--ckpt", f"weizmann={tmp_path / 'weizmann.ckpt'}",
                       "--out", str(tmp_path / "out")]) == 0
    cells = [ex.read_json(p) for p in (tmp_path / "out" / "cells").glob("*.json")]
    assert {c["method"] for c in cells} == {"linear", "static"}
    assert all(c["settings"]["steps"] == 6 and c["clip_length"] == 8 and len(c["per_video"]) == 2 for c in cells)
    assert all("--data.init_args.clip_length=8" in c["data_args"] for c in cells)
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "## Weizmann Action, 8-frame clips" in md and "| Denoiser baseline (Alg. 2) | paper |  |" in md
    assert "0.158" not in md  # the paper scored 5-frame clips only
    # the config's clips, read from a data folder: the paper's own section, with the paper's value beside
    assert table.main(["--datasets", "weizmann", "--configs", str(TESTS), "--no-train", "--trials", "1",
                       "--methods", "linear", "--profiles", "paper", "--no-figures", "--data-dir", str(strips),
                       "--ckpt", f"weizmann={tmp_path / 'weizmann.ckpt'}", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "## Weizmann Action\n" in md and "videos data_dir" not in md and "| 0.158 |" in md
    assert md.index("## Weizmann Action\n") < md.index("## Weizmann Action, 8-frame clips")


# ------------------------------------------------------------------------------------------- benchmarks
def test_bench_training_side_by_side(capsys):
    from benchmarks import bench_training

    assert bench_training.autocast_dtype("bf16-mixed") == "bfloat16" and bench_training.autocast_dtype("32") is None
    assert bench_training.main(["--configs", "rot", "--configs-dir", str(TESTS), "--seconds", "0.2"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("rot "))
    fields = line.split()
    fp32, default, ratio = map(float, fields[4:7])
    assert fp32 > 0 and default > 0 and ratio == pytest.approx(default / fp32, rel=0.02)
    assert fields[7:9] == ["32", "1"] and "bfloat16 + channels-last" in line  # 40 - 8 frames per epoch, 1 epoch


def test_convergence_continues_a_resumed_run_and_interpolates(tmp_path, monkeypatch, capsys):
    """A run resumed from another's checkpoint (its config's ckpt_path, relative to the working directory) continues
    that run's curve from where it stopped; PSNR at a fraction of the images is linear between validations."""
    from benchmarks import convergence

    monkeypatch.chdir(tmp_path)

    def run(version, rows, ckpt_path):
        folder = tmp_path / "runs" / "exp" / version
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
        (folder / "config.yaml").write_text(f"data: {{init_args: {{batch_size: 10}}}}\nckpt_path: {ckpt_path}\n")
        lines = ["epoch,step,val/psnr_15,val/psnr_25,val/psnr_50,train/loss"]
        lines += [f"{e},{n},{p + 5},{p},{p - 5}," for e, n, p in rows] + ["9,95,,,,0.1"]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
        return folder

    run("version_0", [(0, 10, 20.0), (1, 20, 22.0), (2, 30, 23.0)], "null")  # stopped after step 30
    resumed = run("version_1", [(2, 30, 23.5), (3, 40, 24.0), (4, 50, 26.0)], "runs/exp/version_0/checkpoints/last.ckpt")
    images, psnr, seconds = convergence.read_run(resumed)
    assert images == [100, 200, 300, 400, 500] and psnr[25] == [20.0, 22.0, 23.5, 24.0, 26.0]
    assert psnr[50] == [15.0, 17.0, 18.5, 19.0, 21.0]
    assert convergence.at(images, psnr[25], 0.9) == pytest.approx(25.0)  # 450 images: half-way from 24 to 26
    assert convergence.at(images, psnr[25], 0.1) == 20.0  # before the first validation
    convergence.main([str(resumed)])
    assert "| 15 | 0k | nan | 27.75 | 29.00 | 30.00 | 31.00 | +1.000 |" in capsys.readouterr().out
    assert all(math.isnan(t) for t in seconds)  # these runs logged no wall clock


def test_convergence_reads_the_wall_clock_and_times_a_reference(tmp_path, capsys):
    """Minutes to come within 0.1 dB of a reference run's final PSNR, linear between validations."""
    from benchmarks import convergence

    def run(name, rows):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text("data: {init_args: {batch_size: 10}}\n")
        lines = ["epoch,step,time/fit_seconds,val/psnr_15,val/psnr_25,val/psnr_50"]
        lines += [f"{e},{n},{t},{p + 5},{p},{p - 5}" for e, (n, t, p) in enumerate(rows)]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
        return folder

    new = run("new", [(10, 60.0, 20.0), (20, 120.0, 22.0), (30, 180.0, 24.0)])
    ref = run("ref", [(10, 100.0, 21.0), (50, 600.0, 23.1)])
    images, psnr, seconds = convergence.read_run(new)
    assert seconds == [60.0, 120.0, 180.0]
    assert convergence.reached(seconds, psnr[25], 23.0) == pytest.approx(150.0)
    assert math.isnan(convergence.reached(seconds, psnr[25], 24.5))
    convergence.main([str(new), str(ref), "--labels", "new", "ref", "--reference", str(ref)])
    out = capsys.readouterr().out
    assert "| new | 2.5 | 2.5 | 2.5 | 2.5 |" in out and "| ref | 9.6 | 9.6 | 9.6 | 9.6 |" in out  # 100 s + 2/2.1 of 500 s


def test_table_cells_name_the_commit_the_script_started_from(tiny_checkpoints, tmp_path, monkeypatch):
    """A cell records the commit of the code the process loaded, not the checkout's when the cell ends."""
    commits = iter(["aaaaaaa", "bbbbbbb", "ccccccc"])
    monkeypatch.setattr(ex, "commit", lambda: next(commits))
    assert table.main(["--datasets", "rot", "--configs", str(TESTS), "--no-train", "--trials", "1", "--methods",
                       "linear", "static", "--profiles", "paper", "reference", "--no-figures",
                       "--ckpt", f"rot={tiny_checkpoints['rot0']}", "--out", str(tmp_path)]) == 0
    cells = [ex.read_json(p) for p in (tmp_path / "cells").glob("*.json")]
    assert len(cells) == 2 and {c["commit"] for c in cells} == {"aaaaaaa"}


def test_table_no_train_takes_the_newest_run_of_the_working_directory(tiny_checkpoints, tmp_path, monkeypatch,
                                                                      capsys):
    """--no-train without --ckpt: the experiment's newest checkpoint under the working directory's runs/ (none:
    its methods are skipped); the cell names the run's training seed."""
    monkeypatch.chdir(tmp_path)
    argv = ["--datasets", "rot", "--configs", str(TESTS), "--no-train", "--trials", "1", "--methods", "linear",
            "static", "--profiles", "paper", "reference", "--no-figures"]
    assert table.main(argv) == 0
    assert "no checkpoint of rot (--no-train); its methods are skipped" in capsys.readouterr().out
    assert [r["method"] for r in ex.read_csv(tmp_path / "results" / "table1.csv")] == ["static"]
    run = tmp_path / "runs" / "tiny_rot" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoints["rot2"], run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text("seed_everything: 3\n")
    assert table.main(argv) == 0
    [c] = [ex.read_json(p) for p in (tmp_path / "results" / "cells").glob("rot_paper_linear_*.json")]
    assert c["checkpoint"]["training_seed"] == 3
    assert c["checkpoint"]["path"] == "runs/tiny_rot/version_0/checkpoints/last.ckpt"  # relative: the caller's
    assert [r["method"] for r in ex.read_csv(tmp_path / "results" / "table1.csv")] == ["linear", "static"]


@pytest.mark.slow
def test_table_trains_then_reuses_the_finished_checkpoint(tmp_path, monkeypatch, capsys):
    """Without checkpoints the table trains each experiment it needs (`train.py fit` in a subprocess, runs/ under
    the working directory), then reuses the finished checkpoint."""
    monkeypatch.chdir(tmp_path)
    argv = ["--datasets", "rot", "--configs", str(TESTS), "--trials", "1", "--methods", "linear", "--profiles",
            "paper", "--no-figures", "--csv-only"]
    assert table.main(argv) == 0
    assert "rot: training" in capsys.readouterr().out
    ckpt = tmp_path / "runs" / "tiny_rot" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and ex.checkpoint_provenance(ckpt)["training_seed"] == 0
    assert table.main(argv) == 0
    assert "rot: reusing finished checkpoint" in capsys.readouterr().out


def test_grid_resume_reuses_the_cells_of_an_interrupted_run(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """--resume takes a cell from the CSV only when setting, checkpoint, videos, trials and seed are the same."""
    from scripts import grid

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "g.csv"
    base = ["--dataset", "rot", "--configs", str(TESTS), "--denoiser", str(tiny_checkpoints["rot0"]), "--indices",
            "2,3", "--methods", "linear", "--sigmas", "10", "--etas", "0.5", "1.0", "--trials", "1", "--out", str(out)]
    assert grid.main(base) == 0
    first = ex.read_csv(out)
    capsys.readouterr()
    assert grid.main([*base, "--resume"]) == 0
    assert capsys.readouterr().out.count("from the CSV") == 2 and ex.read_csv(out) == first
    assert grid.main([*base, "--resume", "--trials", "2"]) == 0  # other trials: computed again
    assert "from the CSV" not in capsys.readouterr().out

    # interrupted after its first new cell, a resumed run keeps the cells it had not reached yet

    calls = []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return run_grid(*args, **kwargs)

    monkeypatch.setattr(grid, "run_grid", interrupted)
    before = ex.read_csv(out)
    with pytest.raises(KeyboardInterrupt):
        grid.main([*base, "--resume", "--etas", "0.25", "0.3", "0.5", "1.0"])
    after = ex.read_csv(out)
    assert len(after) == len(before) + 1 and all(r in after for r in before)


def test_speed_shift_rows_reuse_only_an_equal_cell(tmp_path):
    """The speed shift's reference row (no checkpoint): a held frame never moves at any speed; a rerun computes
    nothing, and a rerun with other trials replaces the cells of that slot instead of adding to them."""
    from scripts import speed_shift

    out = tmp_path / "shift"
    args = ["--dataset", "rot", "--profiles", "reference", "--speeds", "1", "2", "--rotated-frames", "30",
            "--out", str(out)]
    assert speed_shift.main(args + ["--trials", "1"]) == 0
    rows = ex.read_csv(out.with_suffix(".csv"))
    assert [(r["method"], float(r["speed"]), int(r["trials"])) for r in rows] == [("static", 1.0, 1), ("static", 2.0, 1)]
    assert all(abs(float(r["speed_ratio_median"])) < 1e-9 and float(r["stalled"]) == 1.0 for r in rows)
    before = out.with_suffix(".csv").read_text()
    assert speed_shift.main(args + ["--trials", "1"]) == 0
    assert out.with_suffix(".csv").read_text() == before
    assert speed_shift.main(args + ["--trials", "2"]) == 0
    rows = ex.read_csv(out.with_suffix(".csv"))
    assert [(float(r["speed"]), int(r["trials"])) for r in rows] == [(1.0, 2), (2.0, 2)]
    assert "| reference |" in out.with_suffix(".md").read_text()


def test_paced_grid_has_a_substeps_axis_and_resume_fills_older_rows(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """The paced methods select over steps per frame too; a row written before `substeps` existed is the
    substeps-1 cell (the default) on --resume, written back with the setting named, never a substeps-2 cell."""
    from extrapolation import load_settings
    from scripts import grid

    paced = load_settings(ex.CONFIGS / "extrapolation" / "rot.yaml", "selected")["tangent_paced"]
    points = paced.grid(None)
    assert len(points) == 84 and {p.substeps for p in points} == {1, 2}
    assert [p.settings() for p in points[:42]] == [p.with_overrides(substeps=2).settings() | {"substeps": 1}
                                                    for p in points[42:]]

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "g.csv"
    base = ["--dataset", "rot", "--configs", str(TESTS), "--denoiser", str(tiny_checkpoints["rot0"]), "--indices",
            "2,3", "--methods", "linear_paced", "--sigmas", "10", "--etas", "1.0", "--substeps", "1", "2",
            "--trials", "1", "--out", str(out)]
    assert grid.main(base) == 0
    first = ex.read_csv(out)
    assert [json.loads(r["settings"])["substeps"] for r in first] == [1, 2]
    assert first[0]["cut_mean"] != first[1]["cut_mean"]

    def older(r):  # the row as written before the setting existed
        s = json.loads(r["settings"])
        s.pop("substeps")
        return {**r, "settings": json.dumps(s)}

    ex.write_csv_atomic(out, [older(first[0])], list(first[0]))  # the substeps-2 cell is not in the file
    capsys.readouterr()
    assert grid.main([*base, "--resume"]) == 0
    assert capsys.readouterr().out.count("from the CSV") == 1
    again = ex.read_csv(out)
    assert len(again) == 2 and again[0] == first[0]  # named again, numbers unchanged
    assert again[1]["cut_mean"] == first[1]["cut_mean"]  # computed, not taken from the substeps-1 row


def test_grid_markdown_takes_mean_and_std_over_selection_checkpoints():
    """A setting run with several selection models is one cell, mean ± std over them; never the last one alone."""
    from scripts.grid import grids_markdown, over_checkpoints

    def cell(eta, sha, cut):
        return {"method": "linear", "settings": json.dumps({"method": "linear", "eta": eta, "sigma": 0.1}),
                "videos": "v", "trials": "3", "seed": "0", "checkpoint_sha256": sha, "whole_mean": "0.5",
                "cut_mean": str(cut), "open_end_mean": "0.1", "diverged": "0", "step": ""}

    rows = [cell(1.0, "a", 0.10), cell(1.0, "b", 0.20), cell(1.0, "c", 0.30), cell(2.0, "a", 0.18)]
    merged = over_checkpoints(rows)
    assert len(merged) == 2 and merged[0]["checkpoints"] == 3
    assert merged[0]["cut_mean"] == pytest.approx(0.2) and merged[0]["cut_std"] == pytest.approx(0.1)
    # the same cell read again with one model (a second CSV, a rerun) counts once, its newest row
    again = over_checkpoints(rows + [cell(1.0, "a", 0.40)])
    assert again[0]["checkpoints"] == 3 and again[0]["cut_mean"] == pytest.approx(0.3)
    md = grids_markdown(rows, {}, "cut")
    assert "mean ± std over 3 checkpoints" in md
    assert "0.500 ± 0.000 / 0.200 ± 0.100 / 0.100 ± 0.000" in md and "**0.500 / 0.180 / 0.100**" in md


def test_grid_selects_on_the_mean_over_selection_checkpoints(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """Several --denoiser checkpoints: every cell runs with each, the winner is the lowest mean over them (not the
    first model's winner), --resume reuses each model's cells, and a checkpoint given twice is refused."""
    settings = tmp_path / "rot.yaml"
    settings.write_text((ex.ROOT / "configs" / "extrapolation" / "rot.yaml").read_text())
    ckpts = [str(tiny_checkpoints[f"rot{s}"]) for s in range(3)]
    shas = [ex.checkpoint_provenance(c)["sha256"] for c in ckpts]
    cuts = {(0.5, shas[0]): 0.10, (0.5, shas[1]): 0.50, (0.5, shas[2]): 0.10,  # first and last models' winner,
            (1.0, shas[0]): 0.20, (1.0, shas[1]): 0.20, (1.0, shas[2]): 0.20}  # mean 0.23; the mean's winner, 0.20
    calls = []

    def fake_run_grid(points, models, frames, trials, seed, on_row, /, checkpoint=None, **kw):
        for p in points:
            calls.append((p.eta, checkpoint["sha256"]))
            on_row(dict(method=p.name, label="", step="", settings=p.settings(), whole_mean=0.5, open_end_mean=0.1,
                        cut_mean=cuts[p.eta, checkpoint["sha256"]], diverged=0.0, trials=trials, seed=seed,
                        checkpoint=checkpoint, **{k: v for k, v in kw.items() if k != "batch_size"}))

    monkeypatch.setattr(grid, "run_grid", fake_run_grid)
    out = tmp_path / "g.csv"
    args = ["--dataset", "rot", "--configs", str(TESTS), "--indices", "2..3", "--trials", "1", "--settings",
            str(settings), "--methods", "linear", "--sigmas", "10", "--etas", "0.5", "1.0", "--out", str(out),
            "--denoiser", *ckpts]
    assert grid.main(args + ["--write"]) == 0
    assert sorted(calls) == sorted(cuts)  # each cell with each model, once
    assert load_settings(settings, "selected")["linear"].eta == 1.0
    assert "(mean over 3 checkpoints)" in capsys.readouterr().out
    rows = ex.read_csv(out)
    assert len(rows) == 6 and {r["checkpoint_sha256"] for r in rows} == set(shas)
    assert "mean ± std over 3 checkpoints" in out.with_suffix(".md").read_text()
    # one model alone picks its own winner; --resume computes nothing again
    calls.clear()
    assert grid.main(args[:-3] + [ckpts[0], "--resume", "--write"]) == 0
    assert calls == [] and load_settings(settings, "selected")["linear"].eta == 0.5
    assert grid.main(args + ["--resume"]) == 0 and calls == []
    capsys.readouterr()
    assert grid.main(args + [ckpts[0]]) == 2
    assert "--denoiser: the same checkpoint given twice" in capsys.readouterr().err
