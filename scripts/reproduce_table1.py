"""Reproduce the paper's Table 1: train (or reuse) every model, roll out every method, write results/.

    python scripts/reproduce_table1.py                      # all three datasets, 5 trials
    python scripts/reproduce_table1.py --datasets rot --trials 2 --profiles paper

For each dataset it trains the denoiser (`configs/<ds>.yaml`) and the VAE (`configs/vae_<ds>.yaml`)
through `train.py fit` unless the experiment's newest checkpoint (`--ckpt_path last`) is already finished
(an unfinished one is resumed), then loads both checkpoints and scores tangent (Alg. 1), linear (Alg. 2) and latent
(Alg. 3) with `extrapolation.evaluate` at the settings of each `--profiles` entry (`paper`: appendix A.6,
`selected`: chosen on the selection videos) in the dataset's settings file, `--trials`
seeds each, and writes `results/table1.csv`, `results/table1.md` and the figures. Finished cells
are cached in `results/cells/` (reused while their profile, settings and trials match) so an
interrupted run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import csv
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
    from cli import experiment_folder, load_config
    from errors import MissingInputError
    from run_folders import resolve_checkpoint

    experiment = experiment_folder(load_config(["--config", config]))
    try:
        return resolve_checkpoint("last", experiment)
    except MissingInputError:
        return experiment / "checkpoints" / "last.ckpt"


def settings_file(config: Path) -> Path:
    """The extrapolation settings file of `config`'s callback (`extrapolation.settings`, e.g. configs/extrapolation/rot.yaml)."""
    from callbacks.method_settings import settings_path
    from cli import load_config

    return settings_path(load_config(["--config", config]).extrapolation.settings).resolve()


def data_args(indices: str | None = None, data_dir: str | None = None, clip_start: int | None = None,
              clip_length: int | None = None) -> list[str]:
    """Config overrides that select other videos: MNIST `indices` ('10..19'), Weizmann clips of `clip_length`
    frames starting at frame `clip_start`, and the data folder."""
    from datamodules import parse_indices

    out = [f"--data.init_args.indices=[{','.join(map(str, parse_indices(indices)))}]"] if indices else []
    out += [f"--data.init_args.clip_start={clip_start}"] if clip_start is not None else []
    out += [f"--data.init_args.clip_length={clip_length}"] if clip_length is not None else []
    return out + ([f"--data.init_args.data_dir={data_dir}"] if data_dir else [])


def load_datamodule(config: Path, overrides: list[str] = (), stage: str = "test"):
    """The config's datamodule (with `overrides`, e.g. `data_args(...)`), set up for `stage`."""
    from train import main as cli_main

    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments from `args` alone
    dm = cli_main(run=False, args=["--config", str(config), "--trainer.logger=false", *overrides]).datamodule
    dm.prepare_data()
    dm.setup(stage)
    return dm


def summary(whole, cut) -> dict:
    """Table 1 numbers of per-(trial, video) scores: mean and std over trials of the per-trial means, both
    readings, and the median and worst video (whole reading, mean over trials)."""
    trials = whole.shape[0]
    per_trial = {"": whole.double().mean(1), "_cut": cut.double().mean(1)}
    per_video = whole.double().mean(0)
    out = {}
    for key, t in per_trial.items():
        out[f"dtw_ssid{key}_mean"] = t.mean().item()
        out[f"dtw_ssid{key}_std"] = t.std().item() if trials > 1 else 0.0
    out.update(median_video=per_video.median().item(), worst_video=per_video.max().item(),
               worst_video_index=int(per_video.argmax()), per_video=per_video.tolist(),
               per_video_cut=cut.double().mean(0).tolist())
    return out


def clip_variant(args) -> tuple[int | None, str]:
    """`--clip-length` (Weizmann's longer clips): the length, and the suffix that keeps its cells apart."""
    return args.clip_length, (f"_clip{args.clip_length}" if args.clip_length else "")


def scored_videos(args) -> list[str]:
    """The data overrides of the videos this run scores."""
    return data_args(args.indices, args.data_dir, clip_length=clip_variant(args)[0])


def finished(ckpt: Path, config: Path, train_args: list[str]) -> bool:
    """Whether `ckpt` holds the last epoch of `config`'s `trainer.max_epochs` (or its override)."""
    import torch

    from cli import load_config

    max_epochs = load_config(["--config", config]).trainer.max_epochs
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
        cmd += ["--extrapolation.methods=[linear]"]
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


def evaluate_cells(ds: str, args, ckpts: dict[str, Path]) -> None:
    """Score each method of `--methods` with `extrapolation.evaluate` (`--trials` seeds, `--profile` settings)
    on the dataset's videos, from the checkpoints in `ckpts`; one cached cell per method and profile."""
    config = args.configs / f"{ds}.yaml"
    path = settings_file(config)
    for profile in args.profiles:
        evaluate_profile(ds, args, ckpts, config, path, profile)


def evaluate_profile(ds: str, args, ckpts: dict[str, Path], config: Path, path: Path, profile: str) -> None:
    import torch

    from extrapolation import Models, evaluate, load_settings
    from lightning_modules import DenoiserModule, VAEModule

    settings = load_settings(path, profile)
    clip_length, suffix = clip_variant(args)
    if clip_length:  # longer clips: every frame after the two given is generated
        settings = {m: s.with_overrides(steps=clip_length - 2) for m, s in settings.items()}
    todo = []
    for method in args.methods:
        cell = args.out / "cells" / f"{ds}_{method}_{profile}{suffix}.json"
        old = json.loads(cell.read_text()) if cell.exists() else {}
        if old.get("trials", 0) >= args.trials and old.get("settings") == settings[method].as_dict():
            log(f"{ds}/{method} ({profile}): cached in {cell}")
        elif (f"vae_{ds}" if method == "latent" else ds) not in ckpts:
            log(f"{ds}/{method}: no checkpoint; skipped")
        else:
            todo.append(method)
    if not todo:
        return
    device = "cuda" if args.accelerator in ("gpu", "cuda") or (
        args.accelerator == "auto" and torch.cuda.is_available()) else "cpu"
    dm = load_datamodule(config, scored_videos(args))
    videos = dm.videos.float().to(device)
    shown = {}
    for method in todo:
        if method == "latent":
            vae = VAEModule.load_from_checkpoint(ckpts[f"vae_{ds}"], map_location=device).eval()
            models = Models(encode=vae.encode, decode=vae.decode)
        else:
            models = Models(denoise=DenoiserModule.load_from_checkpoint(ckpts[ds], map_location=device).eval().denoise)
        s = settings[method]
        log(f"{ds}/{method}: rolling out {videos.shape[0]} videos x {args.trials} trials ({profile}: "
            f"{s.as_dict()})")
        res = evaluate(models, videos, s, args.trials, seed=0, keep_frames=not args.no_figures)
        result = dict(dataset=ds, method=method, profile=profile, trials=args.trials, seconds=res.seconds,
                      **summary(res.whole, res.cut), settings=s.as_dict(), step=s.step_name(),
                      settings_file=os.path.relpath(path, ROOT), data_args=scored_videos(args),
                      checkpoint=str(ckpts["vae_" + ds if method == "latent" else ds]),
                      train_args=args.train_args, commit=git_commit(), machine=machine())
        if clip_length:
            result["clip_length"] = clip_length
        (args.out / "cells" / f"{ds}_{method}_{profile}{suffix}.json").write_text(to_json(result))
        log(f"{ds}/{method}: DTW-SSID {result['dtw_ssid_mean']:.3f} +- {result['dtw_ssid_std']:.3f} "
            f"(cut GT {result['dtw_ssid_cut_mean']:.3f}; worst video {result['worst_video']:.3f}) in "
            f"{result['seconds']:.1f} s")
        if res.frames is not None:
            shown[method] = res.frames[0, :1]  # trial 0, video 0
    if shown:
        save_figures(f"{ds}{suffix}_{profile}", shown, dm, args.out / "figures")


def save_figures(tag: str, shown: dict, dm, out: Path) -> None:
    """Fig. 2 strip of video 0 (rows: ground truth, then each method in `shown` {method: (1, T, C, H, W)}),
    its Fig. 4 alignment heat map, Fig. 3 manifold plot (MNIST) and side-by-side rollout GIF."""
    import shutil
    import tempfile

    import torch
    from PIL import Image

    from callbacks import media
    from callbacks.media import write_media

    out.mkdir(parents=True, exist_ok=True)
    gt = dm.videos[0].float()
    rows = {"ground truth": gt, **{m: f[0] for m, f in shown.items()}}
    tag = f"{tag}_{'-'.join(shown)}"  # a run over some methods must not overwrite another's figures
    length = max(f.shape[1] for f in shown.values())  # the rollouts' frames, ground truth at the same indices
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
    latents = getattr(dm, "latents", None)
    with tempfile.TemporaryDirectory() as tmp:
        write_media(dm.videos, list(shown), [f.nan_to_num() for f in shown.values()], Path(tmp),
                    latents=None if latents is None else latents[:1], latent_name=getattr(dm, "latent_name", None) or "")
        for src, dst in (("alignment_00.png", f"fig4_{tag}_alignment.png"), ("manifold_00.png", f"fig3_{tag}_manifold.png"),
                         ("rollout_00.gif", f"{tag}_rollout.gif")):
            if (Path(tmp) / src).exists():
                shutil.copy(Path(tmp) / src, out / dst)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["trans", "rot", "weizmann"], choices=list(DATASET_NAMES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--profiles", nargs="+", default=["paper", "selected"], choices=["paper", "selected"],
                        help="settings profiles of the datasets' settings files (paper: appendix A.6)")
    parser.add_argument("--ckpt", action="append", default=[], metavar="EXPERIMENT=PATH",
                        help="use this checkpoint for an experiment (rot, vae_rot, ...) instead of training it")
    parser.add_argument("--indices", default=None, help="score other MNIST digits, e.g. 10..19 (the selection videos)")
    parser.add_argument("--data-dir", default=None, help="data folder for the scored videos (MNIST IDX files for "
                        "--indices >= 10)")
    parser.add_argument("--clip-length", type=int, default=None, help="Weizmann: score clips of this many frames "
                        "(e.g. 16), every frame after the two given generated; cells and table kept apart")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--csv-only", action="store_true", help="train with a CSVLogger instead of the configs' loggers")
    parser.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoints")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="extra args after -- go to train.py fit")
    args = parser.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    if args.clip_length is not None and (set(args.datasets) != {"weizmann"} or args.clip_length < 3):
        parser.error(f"--clip-length needs --datasets weizmann and at least 3 frames, got {args.clip_length} "
                     f"with {args.datasets}")
    args.out = args.out.resolve()
    os.chdir(ROOT)  # the configs' paths (runs/, data folders) are relative to the repo root

    (args.out / "cells").mkdir(parents=True, exist_ok=True)
    given = dict(spec.split("=", 1) for spec in args.ckpt)
    for ds in args.datasets:
        ckpts = {}
        for experiment in (ds, f"vae_{ds}"):
            if experiment.startswith("vae_") and "latent" not in args.methods:
                continue
            config = args.configs / f"{experiment}.yaml"
            if experiment in given:
                ckpts[experiment] = Path(given[experiment])
            elif not args.no_train:
                ckpts[experiment] = train(config, experiment, args)
            elif last_checkpoint(config).exists():
                ckpts[experiment] = last_checkpoint(config)
        evaluate_cells(ds, args, ckpts)
        static_reference(ds, args)
    write_tables(args)


def static_reference(ds: str, args) -> None:
    """Cell of a rollout that does not move: the second given frame repeated for the settings' steps. Not a method
    of the paper: it shows how much of a score motion accounts for (on nearly static clips, most of it is the
    detail each denoising step loses). Needs no model; scored like every rollout (`extrapolation.evaluate`'s
    `dtw_readings`)."""
    import torch

    from extrapolation import load_settings
    from extrapolation.evaluate import dtw_readings

    config = args.configs / f"{ds}.yaml"
    clip_length, suffix = clip_variant(args)
    steps = clip_length - 2 if clip_length else load_settings(settings_file(config), "paper")["tangent"].steps
    cell = args.out / "cells" / f"{ds}_static{suffix}.json"
    selection = scored_videos(args)
    if cell.exists() and json.loads(cell.read_text()).get("settings") == dict(steps=steps) and \
            json.loads(cell.read_text()).get("data_args", []) == selection:
        return
    videos = load_datamodule(config, selection).videos.float()
    t0 = time.time()
    frames = torch.cat([videos[:, :2], videos[:, 1:2].expand(-1, steps, -1, -1, -1)], 1)
    scores = torch.tensor([[r["whole"], r["cut"]] for r in map(dtw_readings, frames, videos)],
                          dtype=torch.float64)  # (V, 2)
    result = dict(dataset=ds, method="static", profile="reference", trials=1, seconds=time.time() - t0,
                  **summary(scores[None, :, 0], scores[None, :, 1]), settings=dict(steps=steps), data_args=selection,
                  train_args=[], commit=git_commit(), machine=machine())
    if clip_length:
        result["clip_length"] = clip_length
    cell.write_text(to_json(result))
    log(f"{ds}/static: DTW-SSID {result['dtw_ssid_mean']:.3f} (cut GT {result['dtw_ssid_cut_mean']:.3f})")


def to_json(result: dict) -> str:
    """Strict JSON: a failed rollout's NaN becomes null."""
    def clean(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(result), indent=1, allow_nan=False)


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
    """results/table1.csv (every cell) and results/table1.md (one section per dataset, paper values beside)."""
    cells = [json.loads(p.read_text()) for p in sorted((args.out / "cells").glob("*.json"))]
    for c in cells:  # cells from before the settings files (commit named in the cell)
        c.setdefault("profile", "reference" if c["method"] == "static" else f"legacy ({c.get('commit', '?')})")
        c.setdefault("step", "eigen-projection (block)" if c["method"] == "tangent" else "")
    rank = {"paper": 0, "selected": 1, "reference": 3}
    cells.sort(key=lambda c: (list(DATASET_NAMES).index(c["dataset"]), c.get("clip_length") or 0,
                              ROWS.index(c["method"]), rank.get(c["profile"], 2)))
    columns = ["dataset", "method", "profile", "step", "dtw_ssid_mean", "dtw_ssid_std", "dtw_ssid_cut_mean",
               "dtw_ssid_cut_std", "median_video", "worst_video", "trials", "seconds", "paper", "settings", "commit",
               "machine", "clip_length"]
    with open(args.out / "table1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for c in cells:
            c["paper"] = "" if c.get("clip_length") else PAPER.get((c["dataset"], c["method"]), "")
            w.writerow([round(c[k], 4) if isinstance(c.get(k), float) else
                        json.dumps(c[k]) if k == "settings" else c.get(k, "") for k in columns])
    num = (lambda c, k: "—" if c.get(k) is None else f"{c[k]:.3f}")
    md = ["# Table 1, reproduced", "",
          f"Written {datetime.date.today()} by `python scripts/reproduce_table1.py`; every cell in `results/cells/` "
          "names its commit, machine and checkpoint. DTW-SSID, lower is better: mean ± std over trials (each trial "
          "the mean over the dataset's videos), then the median and worst video (whole reading, mean over trials). "
          "*whole*: against the whole ground-truth video; *cut*: against its first `steps + 2` frames (the paper "
          "does not say which it used). Settings `paper`: appendix A.6; `selected`: chosen on selection videos "
          "that this table never scores (`scripts/select_settings.py`, `results/selection_<dataset>.csv`); "
          "`legacy (commit)`: a cell from before the selection protocol, settings chosen on the scored videos.", ""]
    for ds, clip_length in dict.fromkeys((c["dataset"], c.get("clip_length")) for c in cells):
        rows = [c for c in cells if (c["dataset"], c.get("clip_length")) == (ds, clip_length)]
        name = DATASET_NAMES[ds] + (f", {clip_length}-frame clips" if clip_length else "")
        md += [f"## {name}", "", "| method | settings | step | whole | cut | median | worst | paper | settings used |",
               "|---|---|---|---|---|---|---|---|---|"]
        for c in rows:
            used = ", ".join(f"{k} {round(v * 255, 2)}/255" if k == "sigma" else f"{k} {v}"
                             for k, v in c["settings"].items() if k not in ("method", "solver"))
            md.append(f"| {METHOD_NAMES[c['method']]} | {c['profile']} | {c['step']} | "
                      f"{num(c, 'dtw_ssid_mean')} ± {num(c, 'dtw_ssid_std')} | "
                      f"{num(c, 'dtw_ssid_cut_mean')} ± {num(c, 'dtw_ssid_cut_std')} | {num(c, 'median_video')} | "
                      f"{num(c, 'worst_video')} | {num(c, 'paper') if c['paper'] != '' else ''} | {used}, {c['trials']} trials |")
        md.append("")
    (args.out / "table1.md").write_text("\n".join(md) + "\n")
    log(f"wrote {args.out / 'table1.csv'} and {args.out / 'table1.md'}")


if __name__ == "__main__":
    main()
