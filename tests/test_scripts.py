"""scripts/: the sweep's solver specs and re-plotting, and the Table 1 writer (paper numbers, machines, gaps)."""
import csv
import json

import pytest

from scripts import reproduce_table1, sweep

ROOT = reproduce_table1.ROOT


def test_parse_solver_specs():
    assert sweep.parse_solver("") == {}
    assert sweep.parse_solver("track_iters=1,oversample=0,tol=5e-2,method=power") == {
        "track_iters": 1, "oversample": 0, "tol": 0.05, "method": "power"}
    with pytest.raises(ValueError, match="key=value"):
        sweep.parse_solver("track_iters")


def test_replot_reads_the_csv_and_names_a_missing_one(tmp_path):
    rows = [dict(method="tangent", sigma_255=s, eta=1.0, k=4, tol="default", solver="", steps=3, trials=1,
                 dtw_ssid=0.1 * s, dtw_ssid_cut=0.05 * s, seconds=1.0, device="cpu") for s in (10, 25)]
    rows.append(dict(rows[0], method="linear", k="", tol=""))
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
    reproduce_table1.write_tables(type("Args", (), {"out": tmp_path})())
    lines = (tmp_path / "table1.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["dataset", "method", "dtw_ssid_mean", "dtw_ssid_std", "trials", "seconds"]
    assert [line.split(",")[:2] for line in lines[1:]] == [["rot", "linear"], ["rot", "tangent"], ["rot", "static"],
                                                           ["weizmann", "latent"]]
    md = (tmp_path / "table1.md").read_text()
    assert "0.300 ± 0.010 [0.273]" in md and "0.200 ± 0.010 [0.515]" in md  # paper values beside ours
    assert "| VAE (Alg. 3) | — | — | 0.200" in md  # a missing cell is marked, not skipped
    # the no-motion reference is the last row, without a paper value
    assert md.splitlines()[[i for i, l in enumerate(md.splitlines()) if l.startswith("| Ours")][0] + 1] == \
        "| Reference, not in the paper: frame 2 repeated | 0.800 ± 0.010 | 0.400 ± 0.000 | — | — |"
    assert "on NVIDIA H200" in md and "on cpu X" in md and "`abc1234`" in md


def test_static_reference_cell(tmp_path):
    """Frame 2 repeated: frames 0 and 1 match exactly, so a 3-frame video scores (0 + 0 + ssid(f1, f2)) / 3."""
    import torch
    from extrapolation.dtw import ssid_matrix

    (tmp_path / "cells").mkdir()
    args = type("Args", (), {"out": tmp_path, "configs": ROOT / "tests" / "configs"})()
    reproduce_table1.static_reference("rot", args)
    c = json.loads((tmp_path / "cells" / "rot_static.json").read_text())
    assert c["method"] == "static" and c["trials"] == 1 and c["settings"]["steps"] >= 1
    assert 0 < c["dtw_ssid_mean"] < 1 and len(c["per_video"]) >= 1
    from train import main as cli_main
    dm = cli_main(run=False, args=["--config", str(ROOT / "tests" / "configs" / "rot.yaml"), "--trainer.logger=false"]).datamodule
    dm.prepare_data()
    dm.setup("test")
    v = dm.videos.float()[0]
    # steps >= 1 repeats of frame 1: DTW aligns frame 2 of the truth to a copy of frame 1, later truth frames likewise
    expected = torch.stack([ssid_matrix(v[1:2], v[i : i + 1])[0, 0] for i in range(2, v.shape[0])]).sum() / v.shape[0]
    assert abs(c["per_video"][0] - expected.item()) < 1e-5
