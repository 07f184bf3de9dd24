"""scripts/: the sweep (grid, CSV, solver specs, re-plotting) and Table 1 (cells through `extrapolation.evaluate`,
the writer: paper numbers, machines, gaps), on tiny checkpoints."""
import csv
import json
from types import SimpleNamespace

import pytest
import torch

from datamodules import parse_indices

from scripts import reproduce_table1, select_settings, sweep

ROOT = reproduce_table1.ROOT


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict:
    """Untrained tiny denoiser and VAE checkpoints (the tests/configs networks): rollouts cost little."""
    import lightning.pytorch as pl

    from lightning_modules import DenoiserModule, VAEModule
    from networks import VAE, UNet

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    modules = {"rot": DenoiserModule(UNet(in_channels=1, widths=[4, 8, 16], mid_width=16)),
               "vae_rot": VAEModule(VAE(in_channels=1, image_size=20, latent_dim=8, widths=[4, 4, 8, 8, 8]))}
    with torch.no_grad():  # near the identity: 53-step rollouts of an untrained net stay finite
        for param in modules["rot"].network.parameters():
            param.mul_(0.1)
    for name, module in modules.items():
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.strategy.connect(module)
        trainer.save_checkpoint(d / f"{name}.ckpt")
    return {name: d / f"{name}.ckpt" for name in modules}


def test_index_list_and_data_args():
    assert parse_indices("10..12") == parse_indices("10-12") == [10, 11, 12]
    assert parse_indices("0,3,5..6") == [0, 3, 5, 6]
    assert reproduce_table1.data_args("10..11", "mnist") == ["--data.init_args.indices=[10,11]",
                                                             "--data.init_args.data_dir=mnist"]
    assert reproduce_table1.settings_file(ROOT / "tests" / "configs" / "rot.yaml") == \
        ROOT / "configs" / "extrapolation" / "rot.yaml"


def test_sweep_grid_csv_and_numbers(ckpts, tmp_path, monkeypatch, capsys):
    from extrapolation import MethodSettings, Models, evaluate
    from lightning_modules import DenoiserModule

    monkeypatch.chdir(tmp_path)  # the sweep moves to the repo root; come back afterwards
    sweep.main(["--dataset", "rot", "--configs", str(ROOT / "tests" / "configs"), "--ckpt", str(ckpts["rot"]),
                "--vae-ckpt", str(ckpts["vae_rot"]), "--indices", "0..1", "--methods", "tangent", "linear", "latent",
                "--steps", "3", "--sigmas", "10", "25", "--etas", "0.5", "--ks", "1", "2",
                "--solvers", "", "method=block,max_iters=2", "--vae-etas", "0.5", "--reencode", "true", "false",
                "--trials", "2", "--out", str(tmp_path), "--name", "selection_rot"])
    with open(tmp_path / "selection_rot.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == sweep.COLUMNS
    # tangent: 2 sigmas x (the file's A^2 v step, which has no k, + block at k 1 and 2); linear: 2; latent: 2
    assert [r["method"] for r in rows] == ["tangent"] * 6 + ["linear"] * 2 + ["latent"] * 2
    assert {r["step"] for r in rows[:6]} == {"A^2 v (fd)", "eigen-projection (block)"}
    assert [r["k"] for r in rows[:3]] == ["", "1", "2"] and [r["reencode"] for r in rows[8:]] == ["True", "False"]
    assert all(r["trials"] == "2" and r["steps"] == "3" and r["profile"] == "selected" for r in rows)
    assert float(rows[6]["whole_std"]) > 0 and float(rows[8]["whole_std"]) == 0  # linear draws noise, latent none
    assert all(float(r["median_video"]) <= float(r["worst_video"]) for r in rows)
    assert "best tangent:" in capsys.readouterr().out and (tmp_path / "selection_rot.png").stat().st_size > 1000
    # a row is the number `extrapolation.evaluate` gives
    dm = reproduce_table1.load_datamodule(ROOT / "tests" / "configs" / "rot.yaml")
    denoise = DenoiserModule.load_from_checkpoint(ckpts["rot"]).eval().denoise
    res = evaluate(Models(denoise=denoise), dm.videos, MethodSettings("linear", steps=3, eta=0.5, sigma=10 / 255), 2)
    assert float(rows[6]["whole_mean"]) == pytest.approx(res.whole.mean().item(), abs=1e-9)


def test_parse_solver_specs():
    assert sweep.parse_solver("") == {}
    assert sweep.parse_solver("track_iters=1,oversample=0,tol=5e-2,method=power") == {
        "track_iters": 1, "oversample": 0, "tol": 0.05, "method": "power"}
    with pytest.raises(ValueError, match="key=value"):
        sweep.parse_solver("track_iters")


def test_replot_reads_the_csv_and_names_a_missing_one(tmp_path):
    rows = [dict(method="tangent", sigma_255=s, eta=1.0, k=4, solver="", steps=3, trials=1,
                 whole_mean=0.1 * s, cut_mean=0.05 * s, seconds=1.0, device="cpu") for s in (10, 25)]
    rows.append(dict(rows[0], method="linear", k=""))
    rows.append(dict(rows[0], method="latent", sigma_255="", k=""))  # no sigma: not on the plot
    with open(tmp_path / "sweep_rot_x.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    sweep.main(["--dataset", "rot", "--tag", "x", "--out", str(tmp_path), "--replot"])
    assert (tmp_path / "sweep_rot_x.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="sweep_rot_y.csv does not exist"):
        sweep.main(["--dataset", "rot", "--tag", "y", "--out", str(tmp_path), "--replot"])


def test_table_writer(tmp_path):
    (tmp_path / "cells").mkdir()
    def cell(ds, method, mean, machine):
        return dict(dataset=ds, method=method, dtw_ssid_mean=mean, dtw_ssid_std=0.01, trials=5, seconds=2.0,
                    dtw_ssid_cut_mean=mean / 2, dtw_ssid_cut_std=0.0, settings={"steps": 3}, train_args=[],
                    commit="abc1234", machine=machine)
    for c in (cell("rot", "tangent", 0.3, "cpu X"), cell("rot", "linear", 0.7, "cpu X"),
              cell("weizmann", "latent", 0.2, "NVIDIA H200"), cell("rot", "static", 0.8, "cpu X")):
        (tmp_path / "cells" / f"{c['dataset']}_{c['method']}.json").write_text(json.dumps(c))
    sel = dict(cell("rot", "tangent", 0.25, "cpu X"), profile="selected", step="A^2 v (fd)", median_video=0.2,
               worst_video=0.6, settings={"steps": 3, "eta": 0.75, "sigma": 0.1})
    (tmp_path / "cells" / "rot_tangent_selected.json").write_text(json.dumps(sel))
    reproduce_table1.write_tables(type("Args", (), {"out": tmp_path})())
    lines = (tmp_path / "table1.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["dataset", "method", "profile", "step", "dtw_ssid_mean", "dtw_ssid_std"]
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["rot", "linear", "legacy (abc1234)"], ["rot", "tangent", "selected"], ["rot", "tangent", "legacy (abc1234)"],
        ["rot", "static", "reference"], ["weizmann", "latent", "legacy (abc1234)"]]
    md = (tmp_path / "table1.md").read_text()
    assert "## Rotated MNIST" in md and "## Weizmann Action" in md and "## Translated" not in md
    # ours, median and worst video, then the paper's value beside it
    assert "| Ours: tangent (Alg. 1) | selected | A^2 v (fd) | 0.250 ± 0.010 | 0.125 ± 0.000 | 0.200 | 0.600 | 0.273 |" \
        in md and "eta 0.75, sigma 25.5/255, 5 trials |" in md
    assert "| Reference, not in the paper: frame 2 repeated | reference |" in md


def test_static_reference_cell(tmp_path):
    """Frame 2 repeated: frames 0 and 1 match exactly, so a 3-frame video scores (0 + 0 + ssid(f1, f2)) / 3."""
    import torch
    from extrapolation.dtw import ssid_matrix

    (tmp_path / "cells").mkdir()
    args = SimpleNamespace(out=tmp_path, configs=ROOT / "tests" / "configs", indices=None, data_dir=None,
                           clip_length=None)
    reproduce_table1.static_reference("rot", args)
    c = json.loads((tmp_path / "cells" / "rot_static.json").read_text())
    assert c["method"] == "static" and c["trials"] == 1 and c["settings"]["steps"] >= 1
    assert 0 < c["dtw_ssid_mean"] < 1 and len(c["per_video"]) >= 1
    v = reproduce_table1.load_datamodule(ROOT / "tests" / "configs" / "rot.yaml").videos.float()[0]
    # steps >= 1 repeats of frame 1: DTW aligns frame 2 of the truth to a copy of frame 1, later truth frames likewise
    expected = torch.stack([ssid_matrix(v[1:2], v[i : i + 1])[0, 0] for i in range(2, v.shape[0])]).sum() / v.shape[0]
    assert abs(c["per_video"][0] - expected.item()) < 1e-5


def test_table_cells_through_evaluate(ckpts, tmp_path):
    """Cells of each method at a profile's settings, cached while profile, settings and trials match; figures."""
    args = SimpleNamespace(out=tmp_path, configs=ROOT / "tests" / "configs", profiles=["selected"], indices=None,
                           data_dir=None, clip_length=None, methods=["linear", "tangent", "latent"], trials=2,
                           no_figures=False,
                           accelerator="cpu", train_args=[])
    (tmp_path / "cells").mkdir()
    reproduce_table1.evaluate_cells("rot", args, ckpts)
    cells = {m: json.loads((tmp_path / "cells" / f"rot_{m}_selected.json").read_text()) for m in args.methods}
    from extrapolation import load_settings

    selected = load_settings(ROOT / "configs" / "extrapolation" / "rot.yaml", "selected")["tangent"]
    assert cells["tangent"]["step"] == "A^2 v (fd)" and cells["tangent"]["settings"] == selected.as_dict()
    for c in cells.values():
        assert c["trials"] == 2 and c["profile"] == "selected" and len(c["per_video"]) == 2
        assert c["median_video"] <= c["worst_video"] and c["settings_file"] == "configs/extrapolation/rot.yaml"
    assert cells["linear"]["dtw_ssid_std"] > 0 and cells["latent"]["dtw_ssid_std"] == 0
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"fig2_rot_selected_linear-tangent-latent_strip.png", "fig4_rot_selected_linear-tangent-latent_alignment.png",
            "fig3_rot_selected_linear-tangent-latent_manifold.png"} <= figures
    stamp = (tmp_path / "cells" / "rot_tangent_selected.json").stat().st_mtime_ns
    reproduce_table1.evaluate_cells("rot", args, ckpts)  # cached: nothing rolled out again
    assert (tmp_path / "cells" / "rot_tangent_selected.json").stat().st_mtime_ns == stamp
    reproduce_table1.write_tables(args)
    md = (tmp_path / "table1.md").read_text()
    assert "| Ours: tangent (Alg. 1) | selected | A^2 v (fd) | " in md and "| 0.273 |" in md


def test_select_settings_rule_csv_and_write(ckpts, tmp_path):
    """Every grid cell becomes a CSV row; the winner is the lowest whole-video mean; --write replaces the
    `selected` profile of the methods run and keeps everything else; --append keeps the other methods' rows."""
    from extrapolation import load_settings

    original = ROOT / "configs" / "extrapolation" / "rot.yaml"
    settings, out = tmp_path / "rot.yaml", tmp_path / "selection_rot.csv"
    settings.write_text(original.read_text())
    common = ["--dataset", "rot", "--configs", str(ROOT / "tests" / "configs"), "--denoiser", str(ckpts["rot"]),
              "--vae", str(ckpts["vae_rot"]), "--indices", "0..1", "--trials", "2", "--settings", str(settings),
              "--out", str(out)]
    select_settings.main(common + ["--methods", "linear", "latent", "--write"])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    grid = select_settings.GRIDS
    assert [r["method"] for r in rows] == (["linear"] * len(grid["sigma"]) * len(grid["eta_scale"])
                                           + ["latent"] * 2 * len(grid["eta_scale"]))
    assert {r["videos"] for r in rows} == {"0..1"} and {r["reencode"] for r in rows[-2:]} == {"True", "False"}
    new, old = load_settings(settings, "selected"), load_settings(original, "selected")
    best = {m: min((r for r in rows if r["method"] == m), key=lambda r: float(r["whole"])) for m in ("linear", "latent")}
    assert new["linear"].eta == float(best["linear"]["eta"])
    assert new["linear"].sigma * 255 == pytest.approx(float(best["linear"]["sigma_255"]))
    assert new["latent"].eta == float(best["latent"]["eta"]) and str(new["latent"].reencode) == best["latent"]["reencode"]
    assert new["tangent"] == old["tangent"] and load_settings(settings, "paper") == load_settings(original, "paper")
    assert settings.read_text().splitlines()[0] == original.read_text().splitlines()[0]  # comments kept
    md = out.with_suffix(".md").read_text()  # the grids, winners in bold
    assert md.count("**") == 4 and f"**{float(best['linear']['whole']):.3f} / {float(best['linear']['cut']):.3f}**" in md
    select_settings.main(common + ["--methods", "latent", "--append"])
    with open(out, newline="") as f:
        again = list(csv.DictReader(f))
    assert [r["method"] for r in again] == [r["method"] for r in rows]
    assert [r["whole"] for r in again] == [r["whole"] for r in rows]  # same seed, same numbers


def test_select_settings_weizmann_clips_start_after_the_scored_ones(strips):
    """Weizmann selects on later clips of the same sequences and refuses ones that overlap the scored clips."""
    tests = ROOT / "tests" / "configs"
    late = reproduce_table1.load_datamodule(tests / "weizmann.yaml", reproduce_table1.data_args(
        data_dir=str(strips), clip_start=3))
    long = reproduce_table1.load_datamodule(tests / "weizmann.yaml", [f"--data.init_args.data_dir={strips}",
                                                                      "--data.init_args.clip_length=6"])
    assert late.clip_names == long.clip_names and torch.equal(late.videos, long.videos[:, 3:6])
    with pytest.raises(SystemExit, match="--clip-start must be >= 3"):
        select_settings.main(["--dataset", "weizmann", "--configs", str(tests), "--denoiser", "unused.ckpt",
                              "--data-dir", str(strips), "--clip-start", "2"])


def test_table_weizmann_longer_clips(strips, tmp_path, monkeypatch, capsys):
    """--clip-length scores longer Weizmann clips, every frame after the two given generated, in cells and a
    table section of their own (no paper value beside them); it refuses other datasets."""
    import lightning.pytorch as pl

    from lightning_modules import DenoiserModule
    from networks import UNet

    monkeypatch.chdir(tmp_path)  # the script moves to the repo root; come back afterwards
    torch.manual_seed(0)
    module = DenoiserModule(UNet(in_channels=3, widths=[4, 8, 16], mid_width=16))
    with torch.no_grad():
        for param in module.network.parameters():
            param.mul_(0.1)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "weizmann.ckpt")
    common = ["--configs", str(ROOT / "tests" / "configs"), "--no-train", "--methods", "linear", "--trials", "1",
              "--data-dir", str(strips), "--out", str(tmp_path / "out"), "--no-figures"]
    reproduce_table1.main(["--datasets", "weizmann", "--ckpt", f"weizmann={tmp_path / 'weizmann.ckpt'}",
                           "--profiles", "paper", "--clip-length", "8", *common])
    cells = tmp_path / "out" / "cells"
    linear, static = (json.loads((cells / f"weizmann_{m}{'_paper' if m == 'linear' else ''}_clip8.json").read_text())
                      for m in ("linear", "static"))
    assert linear["settings"]["steps"] == static["settings"]["steps"] == 6 and linear["clip_length"] == 8
    assert "--data.init_args.clip_length=8" in linear["data_args"] and len(linear["per_video"]) == 2
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "## Weizmann Action, 8-frame clips" in md and "| Denoiser baseline (Alg. 2) | paper |  |" in md
    assert "| 0.158 |" not in md  # the paper scored 5-frame clips only
    with pytest.raises(SystemExit):
        reproduce_table1.main(["--datasets", "rot", "--clip-length", "8", *common])
    assert "--clip-length needs --datasets weizmann" in capsys.readouterr().err
