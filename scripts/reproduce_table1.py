"""Reproduce the paper's Table 1: train (or reuse) every model, roll out every method, write results/.

    python scripts/reproduce_table1.py                      # all three datasets, 5 trials
    python scripts/reproduce_table1.py --datasets rot --trials 2

For each dataset it trains the denoiser (`configs/<ds>.yaml`) and the VAE (`configs/vae_<ds>.yaml`)
through `train.py fit` unless the experiment's newest checkpoint (`--ckpt_path last`) is already finished
(an unfinished one is resumed), then rolls out tangent (Alg. 1), linear (Alg. 2) and latent (Alg. 3) with the
extrapolation settings of the config's `ExtrapolationCallback` (paper appendix A.6), `--trials`
seeds each, and writes `results/table1.csv`, `results/table1.md` and the figures. Finished cells
are cached in `results/cells/` so an interrupted run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER = {  # Table 1 of the paper (DTW-SSID, lower is better)
    ("trans", "linear"): 0.727, ("rot", "linear"): 0.700, ("weizmann", "linear"): 0.158,
    ("trans", "latent"): 0.834, ("rot", "latent"): 0.840, ("weizmann", "latent"): 0.515,
    ("trans", "tangent"): 0.119, ("rot", "tangent"): 0.273, ("weizmann", "tangent"): 0.142,
}
DATASET_NAMES = {"trans": "Translated MNIST", "rot": "Rotated MNIST", "weizmann": "Weizmann Action"}
METHOD_NAMES = {"linear": "Denoiser baseline (Alg. 2)", "latent": "VAE (Alg. 3)", "tangent": "Ours: tangent (Alg. 1)",
                "static": "Reference, not in the paper: frame 2 repeated"}
METHODS = ("linear", "latent", "tangent")
ROWS = METHODS + ("static",)  # the table's rows: the paper's methods, then the no-motion reference


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def last_checkpoint(config: Path) -> Path:
    """What `--ckpt_path last` loads for `config`: the newest complete checkpoint of its experiment
    (`run_folders.resolve_checkpoint`), else `<experiment>/checkpoints/last.ckpt`, which does not exist."""
    from cli import experiment_of_config_files
    from errors import MissingInputError
    from run_folders import resolve_checkpoint

    experiment = experiment_of_config_files([config])
    if experiment is None:
        raise ValueError(f"{config}: no CSVLogger in trainer.logger names the experiment folder")
    try:
        return resolve_checkpoint("last", experiment)
    except MissingInputError:
        return experiment / "checkpoints" / "last.ckpt"


def finished(ckpt: Path, config: Path, train_args: list[str]) -> bool:
    """Whether `ckpt` holds the last epoch of `config`'s `trainer.max_epochs` (or its override)."""
    import torch
    import yaml

    max_epochs = yaml.safe_load(config.read_text())["trainer"]["max_epochs"]
    for a in train_args:
        if a.startswith("--trainer.max_epochs="):
            max_epochs = int(a.split("=", 1)[1])
    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] + 1 >= max_epochs


def train(config: Path, experiment: str, args) -> Path:
    """Run `train.py fit` for one config, resuming from its last checkpoint; return that checkpoint."""
    ckpt = last_checkpoint(config)
    if ckpt.exists() and finished(ckpt, config, args.train_args):
        log(f"{experiment}: reusing finished checkpoint {ckpt}")
        return ckpt
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config),
           f"--trainer.accelerator={args.accelerator}"]
    if ckpt.exists():
        log(f"{experiment}: resuming from {ckpt}")
        cmd += ["--ckpt_path", str(ckpt)]
    else:
        log(f"{experiment}: training ({' '.join(cmd[2:])})")
    if not experiment.startswith("vae_"):
        # the table's rollouts run in `test` below; during training only the cheap baseline is tracked
        cmd += ["--trainer.callbacks.init_args.methods=[linear]"]
    if args.csv_only:
        runs_root = ckpt.parents[3] if ckpt.parents[1].name.startswith("version_") else ckpt.parents[2]
        cmd += csv_logger_args(runs_root, experiment)
    cmd += args.train_args
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    ckpt = last_checkpoint(config)  # the run just trained wrote into its own version folder
    if not ckpt.exists():
        raise FileNotFoundError(f"{experiment}: training ended without writing {ckpt}")
    log(f"{experiment}: trained in {time.time() - t0:.0f} s")
    return ckpt


def csv_logger_args(out: Path, name: str) -> list[str]:
    """Replace the config's loggers by one CSVLogger (machines without wandb, or no W&B run wanted)."""
    return ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name={name}"]


def evaluate(ds: str, args, ckpts: dict[str, Path]) -> None:
    """`train.py test` in-process: the config's ExtrapolationCallback with every method and
    `--trials` seeds; one cached cell per method."""
    import torch
    from train import main as cli_main
    from callbacks import ExtrapolationCallback

    todo = []
    for method in args.methods:
        cell = args.out / "cells" / f"{ds}_{method}.json"
        if cell.exists() and json.loads(cell.read_text())["trials"] >= args.trials:
            log(f"{ds}/{method}: cached in {cell}")
        else:
            todo.append(method)
    if not todo:
        return
    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments from `args` alone
    cli = cli_main(run=False, args=["--config", str(args.configs / f"{ds}.yaml"),
                                f"--trainer.accelerator={args.accelerator}", "--trainer.devices=1",
                                *csv_logger_args(args.out / "runs", ds)])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, ExtrapolationCallback))
    cb.methods, cb.test_trials = tuple(todo), args.trials
    cb.vae_checkpoint = str(ckpts[f"vae_{ds}"]) if f"vae_{ds}" in ckpts else None
    cb.num_media_videos = 0 if args.no_figures else cb.num_media_videos
    log(f"{ds}: rolling out {todo}, {args.trials} trials")
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpts[ds]), verbose=False)
    if not args.no_figures:
        save_figures(ds, cb, cli.datamodule.videos, Path(cli.trainer.log_dir) / "media" / "test", args.out / "figures")
    for method in todo:
        scores = cb.last_scores[method].double()  # (trials, 2, V): whole / cut GT
        per_trial = scores.mean(-1)
        std = per_trial.std(0) if args.trials > 1 else torch.zeros(2, dtype=torch.float64)
        settings = dict(steps=cb.steps, eta=cb.vae_eta if method == "latent" else cb.eta)
        if method != "latent":
            settings.update(sigma=round(cb.sigma, 5))
        if method == "tangent":
            settings.update(k=cb.k, **cb.solver)
        result = dict(dataset=ds, method=method, dtw_ssid_mean=per_trial[:, 0].mean().item(),
                      dtw_ssid_std=std[0].item(), trials=args.trials, seconds=cb.last_seconds[method],
                      dtw_ssid_cut_mean=per_trial[:, 1].mean().item(), dtw_ssid_cut_std=std[1].item(),
                      per_video=scores[:, 0].mean(0).tolist(), settings=settings,
                      run_dir=os.path.relpath(cli.trainer.log_dir, ROOT), train_args=args.train_args,
                      commit=git_commit(), machine=machine())
        (args.out / "cells" / f"{ds}_{method}.json").write_text(json.dumps(result, indent=1))
        log(f"{ds}/{method}: DTW-SSID {result['dtw_ssid_mean']:.3f} +- {result['dtw_ssid_std']:.3f} "
            f"(cut GT {result['dtw_ssid_cut_mean']:.3f}) in {result['seconds']:.1f} s")


def save_figures(ds: str, cb, videos, media_dir: Path, out: Path) -> None:
    """Fig. 2 strip (rows: ground truth, then each method), and copies of the callback's Fig. 3 / 4 plots."""
    import shutil

    import torch
    from PIL import Image

    from callbacks import media

    out.mkdir(parents=True, exist_ok=True)
    gt = videos[0].float()
    rows = {"ground truth": gt, **{m: f[0] for m, f in cb.last_shown.items()}}
    tag = f"{ds}_{'-'.join(cb.last_shown)}"  # a run over some methods must not overwrite another's figures
    length = max(f.shape[1] for f in cb.last_shown.values())  # the rollouts' frames, ground truth at the same indices
    columns = torch.linspace(0, length - 1, min(length, 12)).round().long()
    tiles = []
    for name, frames in rows.items():
        idx = columns.clamp(max=frames.shape[0] - 1)
        row = frames[idx]
        if row.shape[1] == 1:
            row = row.expand(-1, 3, -1, -1)
        pad = torch.full((len(idx), 3, row.shape[2], 2), media.SEPARATOR)
        tiles.append(torch.cat([torch.cat([f, p], -1) for f, p in zip(row, pad)], -1))  # (3, H, W')
        tiles.append(torch.full((3, 2, tiles[-1].shape[-1]), media.SEPARATOR))
    strip = torch.cat(tiles[:-1], 1)
    scale = media.auto_scale(gt.shape[-2], 60)
    strip = strip.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    Image.fromarray(media.to_uint8(strip).transpose(1, 2, 0)).save(out / f"fig2_{tag}_strip.png")
    (out / f"fig2_{tag}_rows.txt").write_text(
        "rows: " + ", ".join(rows) + f"\ncolumns: frames {columns.tolist()}\n")
    epochs = sorted(media_dir.glob("epoch_*"))
    if epochs:
        for src, dst in (("alignment_00.png", f"fig4_{tag}_alignment.png"), ("manifold_00.png", f"fig3_{tag}_manifold.png"),
                         ("rollout_00.gif", f"{tag}_rollout.gif")):
            if (epochs[-1] / src).exists():
                shutil.copy(epochs[-1] / src, out / dst)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["trans", "rot", "weizmann"], choices=list(DATASET_NAMES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--csv-only", action="store_true", help="train with a CSVLogger instead of the configs' loggers")
    parser.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoints")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="extra args after -- go to train.py fit")
    args = parser.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    args.out = args.out.resolve()
    os.chdir(ROOT)  # the configs' paths (runs/, data folders) are relative to the repo root

    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:
        ckpts = {}
        for experiment in (ds, f"vae_{ds}"):
            if experiment.startswith("vae_") and "latent" not in args.methods:
                continue
            config = args.configs / f"{experiment}.yaml"
            ckpts[experiment] = last_checkpoint(config) if args.no_train else train(config, experiment, args)
        evaluate(ds, args, ckpts)
        static_reference(ds, args)
    write_tables(args)


def static_reference(ds: str, args) -> None:
    """Cell of a rollout that does not move: the second given frame repeated for the config's steps. Not a method
    of the paper: it shows how much of a score motion accounts for (on nearly static clips, most of it is the
    detail each denoising step loses). Needs no model."""
    cell = args.out / "cells" / f"{ds}_static.json"
    if cell.exists():
        return
    import torch
    from train import main as cli_main
    from callbacks import ExtrapolationCallback
    from extrapolation import dtw_ssid_batch

    sys.argv = sys.argv[:1]
    cli = cli_main(run=False, args=["--config", str(args.configs / f"{ds}.yaml"), "--trainer.logger=false"])
    steps = next(c for c in cli.trainer.callbacks if isinstance(c, ExtrapolationCallback)).steps
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("test")
    videos = dm.videos.float()
    t0 = time.time()
    frames = torch.cat([videos[:, :2], videos[:, 1:2].expand(-1, steps, -1, -1, -1)], 1)
    whole, cut = dtw_ssid_batch(frames, videos).double(), dtw_ssid_batch(frames, videos[:, : steps + 2]).double()
    result = dict(dataset=ds, method="static", dtw_ssid_mean=whole.mean().item(), dtw_ssid_std=0.0, trials=1,
                  seconds=time.time() - t0, dtw_ssid_cut_mean=cut.mean().item(), dtw_ssid_cut_std=0.0,
                  per_video=whole.tolist(), settings=dict(steps=steps), train_args=[], commit=git_commit(),
                  machine=machine())
    cell.write_text(json.dumps(result, indent=1))
    log(f"{ds}/static: DTW-SSID {result['dtw_ssid_mean']:.3f} (cut GT {result['dtw_ssid_cut_mean']:.3f})")


def git_commit() -> str:
    if os.environ.get("GIT_COMMIT"):  # set by whoever copied the tree (a rented machine's copy may carry a stale .git)
        return os.environ["GIT_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if not sha:  # a copy of the tree without .git
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    model = platform.machine()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"


def write_tables(args) -> None:
    cells = [json.loads(p.read_text()) for p in sorted((args.out / "cells").glob("*.json"))]
    order = {m: i for i, m in enumerate(ROWS)}
    cells.sort(key=lambda c: (list(DATASET_NAMES).index(c["dataset"]), order[c["method"]]))
    columns = ["dataset", "method", "dtw_ssid_mean", "dtw_ssid_std", "trials", "seconds",
               "dtw_ssid_cut_mean", "dtw_ssid_cut_std"]
    lines = [",".join(columns)]
    for c in cells:
        lines.append(",".join(f"{c[k]:.4f}" if isinstance(c[k], float) else str(c[k]) for k in columns))
    (args.out / "table1.csv").write_text("\n".join(lines) + "\n")

    by = {(c["dataset"], c["method"]): c for c in cells}
    datasets = [d for d in DATASET_NAMES if any(k[0] == d for k in by)]
    commits = sorted({c.get("commit", "unknown") for c in cells})
    rollout_min = sum(c["seconds"] for c in cells) / 60
    md = ["# Table 1, reproduced", "",
          f"Written {datetime.date.today()} by `python scripts/reproduce_table1.py` on {machine()} (each cell names the "
          "machine that computed it); cells computed "
          f"at git commit(s) {', '.join(f'`{c}`' for c in commits)}; rollouts took {rollout_min:.1f} min in all "
          "(training time is in the README). Finished cells and checkpoints are reused.", "",
          "DTW-SSID (lower is better), mean ± std over trials, each trial the mean over the dataset's videos. "
          "*whole*: against the whole ground-truth video; *cut*: against the ground truth cut to the "
          "rollout's length (the paper does not say which it used). Paper numbers in brackets.", ""]
    header = "| method | " + " | ".join(f"{DATASET_NAMES[d]} whole | cut" for d in datasets) + " |"
    md += [header, "|---" * (1 + 2 * len(datasets)) + "|"]
    for m in ROWS:
        if not any(k[1] == m for k in by):
            continue
        row = [METHOD_NAMES[m]]
        for d in datasets:
            c = by.get((d, m))
            if c is None:
                row += ["—", "—"]
                continue
            paper = f" [{PAPER[(d, m)]:.3f}]" if (d, m) in PAPER else ""
            row.append(f"{c['dtw_ssid_mean']:.3f} ± {c['dtw_ssid_std']:.3f}{paper}")
            row.append(f"{c['dtw_ssid_cut_mean']:.3f} ± {c['dtw_ssid_cut_std']:.3f}")
        md.append("| " + " | ".join(row) + " |")
    md += ["", "Settings per cell (from the configs' `ExtrapolationCallback`):", ""]
    for c in cells:
        extra = f", trained with `{' '.join(c['train_args'])}`" if c.get("train_args") else ""
        md.append(f"- {c['dataset']}/{c['method']}: {c['settings']}, {c['trials']} trials, {c['seconds']:.1f} s"
                  f" on {c.get('machine', 'this CPU')}{extra}")
    (args.out / "table1.md").write_text("\n".join(md) + "\n")
    log(f"wrote {args.out / 'table1.csv'} and {args.out / 'table1.md'}")


if __name__ == "__main__":
    main()
