"""Reproduce the paper's Table 1: train (or take) the models, roll out every method of every profile, write results/.

    python -m scripts.reproduce_table1                               # all three datasets, every profile, 5 trials
    python -m scripts.reproduce_table1 --datasets rot --no-train \\
        --ckpt rot=runs/rot/version_0 --ckpt rot=runs/rot/version_1 --ckpt rot=runs/rot/version_2 --ckpt vae_rot=...

For each dataset it takes the checkpoints given (`--ckpt EXPERIMENT=PATH`, repeated for training-seed replicates),
or trains the denoiser (`configs/<ds>.yaml`) and the VAE (`configs/vae_<ds>.yaml`) through `train.py fit` unless the
experiment's newest checkpoint is finished (an unfinished one is resumed), or with `--no-train` takes that newest
checkpoint. Every method of every profile of the dataset's settings file (`paper`: appendix A.6, `selected`: chosen
on the selection videos, `reference`: the no-motion row, and any other) is rolled out by `extrapolation.evaluate`,
`--trials` trials, once per checkpoint of the experiment it needs. Each cell (one per dataset, profile, method and
checkpoint; the `extrapolation.grid.row` schema) is a JSON file in `<out>/cells/`, keyed by the checkpoint's sha256,
the video set (the config's data arguments with the overrides), the settings, the trials and the seed: a rerun
reuses exactly the cells it would compute and nothing else. Cells without a key (an older schema, other
checkpoints) are left alone and ignored, with one line saying so; a corrupt cell is named and computed again.

The table (`<out>/table1.csv`, `<out>/table1.md`): per (dataset, videos, profile, method) the mean ± std over
checkpoints (training seeds) of each checkpoint's mean over trials, with the trial std (the mean over checkpoints of
each one's std over trials) beside; whole, cut and open-end DTW-SSID, the median speed ratio and the diverged
rollouts; the checkpoints and commits. Rows of other datasets, videos, profiles or methods already in the table
are kept. Figures of video 0 (the first checkpoint) go to `<out>/figures/`.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import experiments as ex
from errors import InputError
from extrapolation.grid import combine, flat, row, settings_of, value

PAPER = {  # Table 1 of the paper (DTW-SSID, lower is better), by (dataset, method)
    ("trans", "linear"): 0.727, ("rot", "linear"): 0.700, ("weizmann", "linear"): 0.158,
    ("trans", "latent"): 0.834, ("rot", "latent"): 0.840, ("weizmann", "latent"): 0.515,
    ("trans", "tangent"): 0.119, ("rot", "tangent"): 0.273, ("weizmann", "tangent"): 0.142,
}
DATASET_NAMES = {"trans": "Translated MNIST", "rot": "Rotated MNIST", "weizmann": "Weizmann Action"}
SECTION = ("dataset", "videos", "clip_length")  # a table section
ROW = SECTION + ("profile", "method")  # a table row
SHOWN = ("whole", "cut", "open_end")  # readings in the markdown table
CELL_NAME = re.compile(r"^.+_[0-9a-f]{16}\.json$")


# ------------------------------------------------------------------------------------------- models
def last_checkpoint(config: Path) -> Path:
    """What `--ckpt_path last` loads for `config`: the newest complete checkpoint of its experiment
    (`run_folders.resolve_checkpoint`), else `<experiment>/checkpoints/last.ckpt`, which does not exist."""
    from errors import MissingInputError
    from run_folders import resolve_checkpoint

    experiment = ex.experiment_folder(config)
    try:
        return resolve_checkpoint("last", experiment)
    except MissingInputError:
        return experiment / "checkpoints" / "last.ckpt"


def finished(ckpt: Path, config: Path, train_args: Sequence[str]) -> bool:
    """Whether `ckpt` holds the last epoch of `config`'s `trainer.max_epochs` (or its override)."""
    max_epochs = ex.load_config(config).trainer.max_epochs
    for a in train_args:
        if a.startswith("--trainer.max_epochs="):
            max_epochs = int(a.split("=", 1)[1])
    return (ex.checkpoint_provenance(ckpt)["epoch"] or 0) + 1 >= max_epochs


def train(config: Path, experiment: str, kind: str, args) -> Path:
    """Run `train.py fit` for one config (in the working directory: its `runs/`), resuming from its newest
    checkpoint; return the checkpoint it ends with. `kind`: "denoiser" or "vae"."""
    ckpt = last_checkpoint(config)
    if ckpt.exists() and finished(ckpt, config, args.train_args):
        ex.log(f"{experiment}: reusing finished checkpoint {ckpt}")
        return ckpt
    cmd = [sys.executable, str(ex.ROOT / "train.py"), "fit", "--config", str(config),
           f"--trainer.accelerator={args.accelerator}"]
    if ckpt.exists():
        ex.log(f"{experiment}: resuming from {ckpt}")
        cmd += ["--ckpt_path", str(ckpt)]
    else:
        ex.log(f"{experiment}: training ({' '.join(cmd[2:])})")
    if kind == "denoiser":
        # the table's rollouts run below; during training only the cheap baseline is tracked
        cmd += ["--extrapolation.methods=[linear]"]
    if args.csv_only:  # the same experiment folder, without the W&B logger
        folder = ex.experiment_folder(config)
        cmd += ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.init_args.save_dir={folder.parent}", f"--trainer.logger.init_args.name={folder.name}"]
    cmd += args.train_args
    t0 = time.time()
    subprocess.run(cmd, check=True)
    ckpt = last_checkpoint(config)  # the run just trained wrote into its own version folder
    if not ckpt.exists():
        raise RuntimeError(f"{experiment}: training ended without writing {ckpt}")
    ex.log(f"{experiment}: trained in {time.time() - t0:.0f} s")
    return ckpt


def checkpoints(ds: str, experiments: Mapping[str, str], given: Mapping[str, list[str]], args) -> dict[str, list[dict]]:
    """{experiment: [provenance, ...]} of the `experiments` ({experiment: kind}): the checkpoints given, trained or
    found (`--no-train`); an experiment without any is left out. The same file given twice counts once."""
    out = {}
    for experiment, kind in experiments.items():
        config = ex.config_path(args.configs / f"{experiment}.yaml")
        if experiment in given:
            paths = given[experiment]
        elif not args.no_train:
            paths = [train(config, experiment, kind, args)]
        elif last_checkpoint(config).exists():
            paths = [last_checkpoint(config)]
        else:
            ex.log(f"{ds}: no checkpoint of {experiment} (--no-train); its methods are skipped")
            continue
        found = {}
        for path in paths:
            p = ex.checkpoint_provenance(path, kind)
            if p["sha256"] in found:
                ex.log(f"{experiment}: {path} is the same file as {found[p['sha256']]['path']}; counted once")
                continue
            found[p["sha256"]] = p
        out[experiment] = list(found.values())
    return out


# ------------------------------------------------------------------------------------------- cells
def cell_key(ds: str, profile: str, method, data: Mapping, checkpoint: Mapping | None, trials: int, seed: int) -> dict:
    """What a cell's numbers depend on: a cached cell is reused only when its key is this one."""
    return ex.strict(dict(dataset=ds, profile=profile, settings=method.settings(), data=data,
                          checkpoint=None if checkpoint is None else checkpoint["sha256"], trials=trials, seed=seed))


def cell_path(cells: Path, key: Mapping) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cells / f"{key['dataset']}_{key['profile']}_{key['settings']['method']}_{digest}.json"


def cached_cell(path: Path, key: Mapping) -> dict | None:
    """The cell stored at `path` if its key is `key`; a corrupt file is named in a warning (and computed again)."""
    if not path.exists():
        return None
    try:
        cell = ex.read_json(path)
    except InputError as err:
        print(f"warning: {err}; computing the cell again", file=sys.stderr)
        return None
    return cell if isinstance(cell, dict) and cell.get("key") == key else None


def legacy_cells(cells: Path) -> list[Path]:
    """Cell files of the older schema (no key in the name): from other checkpoints, never read."""
    return sorted(p for p in cells.glob("*.json") if not CELL_NAME.match(p.name)) if cells.is_dir() else []


def evaluate_dataset(ds: str, args, given: Mapping[str, list[str]]) -> list[dict]:
    """Every cell of one dataset (see the module doc), cached or computed; figures of the computed ones."""
    from extrapolation import evaluate, load_settings
    from extrapolation.settings import profiles as profiles_of

    config = ex.config_path(args.configs / f"{ds}.yaml")
    settings_path = ex.settings_file(config)
    profiles = args.profiles or profiles_of(settings_path)
    unknown = [p for p in profiles if p not in profiles_of(settings_path)]
    if unknown:
        raise InputError(f"--profiles {unknown}: {settings_path} has profiles {profiles_of(settings_path)}")
    methods = {p: {n: m for n, m in load_settings(settings_path, p).items()
                   if args.methods is None or n in args.methods} for p in profiles}
    if args.clip_length:  # longer clips: every frame after the two given is generated
        methods = {p: {n: m.with_overrides(steps=args.clip_length - 2) for n, m in ms.items()}
                   for p, ms in methods.items()}
    needed = {ex.experiment_of(m, ds): ex.checkpoint_kind(m) for ms in methods.values() for m in ms.values()
              if ex.checkpoint_kind(m)}
    ckpts = checkpoints(ds, needed, given, args)
    overrides = ex.data_overrides(args.indices, args.data_dir, clip_length=args.clip_length)
    data = ex.data_settings(config, overrides)
    # the commit of the code this process loaded, not of the checkout when a long cell ends
    context = dict(dataset=ds, videos=ex.describe_overrides(overrides), clip_length=args.clip_length, seed=args.seed,
                   data_args=overrides, settings_file=str(settings_path), train_args=args.train_args,
                   commit=args.commit)
    cells_dir = args.out / "cells"
    cells, todo = [], []
    for profile, ms in methods.items():
        for name, method in ms.items():
            experiment = ex.experiment_of(method, ds)
            if experiment is not None and experiment not in ckpts:
                continue
            for i, ckpt in enumerate(ckpts[experiment] if experiment else [None]):
                key = cell_key(ds, profile, method, data, ckpt, args.trials, args.seed)
                path = cell_path(cells_dir, key)
                cell = cached_cell(path, key)
                if cell is not None:
                    ex.log(f"{ds}/{profile}/{name}: cached in {path}")
                    cells.append(cell)
                else:
                    todo.append((profile, method, ckpt, i, key, path))
    if not todo:
        return cells
    device = ex.device(args.accelerator)
    dm = ex.load_datamodule(config, overrides)
    videos = dm.videos.float().to(device)
    models, shown = {}, {}
    for profile, method, ckpt, i, key, path in todo:
        kind = ex.checkpoint_kind(method)
        if ckpt is not None and ckpt["path"] not in models:
            models[ckpt["path"]] = ex.load_models(**{kind: ckpt["path"]}, device=device)
        figure = not args.no_figures and i == 0 and kind is not None
        ex.log(f"{ds}/{profile}/{method.name}: {videos.shape[0]} videos x {args.trials} trials"
               + (f", checkpoint {ckpt['sha256']}" if ckpt else ""))
        method.check_frame(videos[0, 0].numel())
        res = evaluate(models[ckpt["path"]] if ckpt else ex.load_models(), videos, method, args.trials, args.seed,
                       keep_frames=figure)
        cell = row(method, res, profile=profile, **context, checkpoint=ckpt, key=key,
                   machine=ex.machine(), date=ex.today())
        ex.write_json_atomic(path, cell)
        cells.append(ex.read_json(path))
        ex.log(f"{ds}/{profile}/{method.name}: whole {cell['whole_mean']:.3f}, cut {cell['cut_mean']:.3f}, "
               f"diverged {cell['diverged']:.0%} in {cell['seconds']:.1f} s")
        if figure and res.frames is not None:
            shown.setdefault(profile, {})[method.name] = res.frames[0, :1]  # trial 0, video 0
    for profile, frames in shown.items():
        suffix = f"_clip{args.clip_length}" if args.clip_length else ""
        save_figures(f"{ds}{suffix}_{profile}", frames, dm, args.out / "figures")
    return cells


# ------------------------------------------------------------------------------------------- the table
def table_rows(cells: Sequence[Mapping]) -> list[dict]:
    """One table row per (dataset, videos, clip length, profile, method): `combine` over its checkpoints."""
    groups: dict[tuple, list] = {}
    for c in cells:
        groups.setdefault(tuple(c.get(k) for k in ROW), []).append(c)
    out = []
    for key, group in groups.items():
        first = group[0]
        shas = [(c.get("checkpoint") or {}).get("sha256") for c in group]
        seeds = [(c.get("checkpoint") or {}).get("training_seed") for c in group]
        out.append(dict(zip(ROW, key), label=first["label"], step=first["step"], settings=first["settings"],
                        **combine(group), trials=first["trials"], seed=first["seed"],
                        paper=PAPER.get((key[0], key[4])) if the_config_videos(key[1]) else None,
                        checkpoint_sha256=" ".join(s for s in shas if s), training_seeds=" ".join(
                            str(s) for s in seeds if s is not None),
                        commits=" ".join(sorted({c["commit"] for c in group})),
                        machines="; ".join(sorted({c["machine"] for c in group})),
                        date=max(c["date"] for c in group)))
    return out


def the_config_videos(videos) -> bool:
    """Whether a cell's videos are the config's: none overridden, or only the folder they are read from (Weizmann's
    `data_dir`: where the data lies, not which clips)."""
    return videos in (None, "", "config") or all(o.startswith("data_dir=") for o in str(videos).split())


def _order(r: Mapping) -> tuple:
    from extrapolation import METHODS

    names = list(DATASET_NAMES)
    methods = list(METHODS)
    profile = str(r.get("profile"))
    return (names.index(r["dataset"]) if r["dataset"] in names else len(names), str(r.get("clip_length") or ""),
            not the_config_videos(r.get("videos")), str(r.get("videos")),
            methods.index(r["method"]) if r["method"] in methods else len(methods),
            {"paper": 0, "selected": 1}.get(profile, 2), profile)


def merge_table(path: Path, rows: Sequence[Mapping]) -> list[dict]:
    """The rows of the table at `path` (CSV) that `rows` do not replace, then `rows`, in table order; a table of the
    older schema is replaced whole (one line says so)."""
    old = ex.read_csv(path) if path.exists() else []
    if old and "checkpoint_sha256" not in old[0]:
        ex.log(f"{path}: a table of the older schema (no checkpoints named); replaced")
        old = []
    new = {tuple(str(r.get(k) or "") for k in ROW) for r in map(flat, rows)}
    kept = [r for r in old if tuple(r.get(k) or "" for k in ROW) not in new]
    return sorted(kept + [flat(r) for r in rows], key=_order)


def _number(r: Mapping, key: str) -> str:
    """mean ± std over checkpoints (std left out for one), then (the std over trials); "—" alone for NaN."""
    mean, std, trial = (value(r, f"{key}_{k}") for k in ("mean", "std", "trial_std"))
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}") + (
        "" if math.isnan(trial) else f" ({trial:.3f})")


def table_markdown(rows: Sequence[Mapping]) -> str:
    md = ["# Table 1, reproduced", "",
          f"Written {datetime.date.today()} by `python -m scripts.reproduce_table1`; every cell (one per checkpoint) "
          "is in `results/cells/` with its checkpoint, commit and machine, every row in `results/table1.csv`. "
          "DTW-SSID, lower is better: the mean ± std over checkpoints (training seeds) of each checkpoint's mean "
          "over trials (each trial the mean over the videos), then in parentheses the std over trials (mean over "
          "checkpoints); no ± with one checkpoint. *whole*: against the whole ground-truth video; *cut*: against "
          "its first `steps + 2` frames; *open-end*: against the best-matching prefix. *speed*: the median speed "
          "ratio (rollout pace / video pace). *diverged*: rollouts that diverged, of all († readings average the "
          "others). Profiles `paper`: appendix A.6; `selected`: chosen on selection videos this table never "
          "scores (`python -m scripts.grid`); `reference`: not a method of the paper. "
          "—: every rollout diverged.", ""]
    for section in dict.fromkeys(tuple(r.get(k) or "" for k in SECTION) for r in rows):
        ds, videos, clip_length = section
        mine = [r for r in rows if tuple(r.get(k) or "" for k in SECTION) == section]
        title = DATASET_NAMES.get(ds, ds) + (f", {clip_length}-frame clips" if clip_length else "") + (
            f", videos {videos}" if videos and not the_config_videos(videos) and not clip_length else "")
        md += [f"## {title}", "", "| method | profile | step | whole | cut | open-end | speed | diverged | paper | "
               "checkpoints | settings |", "|---" * 11 + "|"]
        for r in mine:
            shas = [s[:7] for s in str(r.get("checkpoint_sha256") or "").split()]
            n, bad = int(value(r, "rollouts") or 0), int(value(r, "diverged_rollouts") or 0)
            speed = value(r, "speed_ratio_median")
            md.append(" | ".join([
                f"| {r['label']}", str(r["profile"]), str(r.get("step") or ""),
                *(_number(r, k) for k in SHOWN), "—" if math.isnan(speed) else f"{round(speed, 2) + 0.0:.2f}",
                f"{bad}/{n}" + (" †" if bad else ""), "" if math.isnan(value(r, "paper")) else f"{value(r, 'paper'):.3f}",
                f"{len(shas)}: {', '.join(shas)}" if shas else "none",
                f"{ex.settings_text(settings_of(r))}, {r['trials']} trials |"]))
        commits = sorted({c for r in mine for c in str(r.get("commits") or "").split()})
        md += ["", f"Commits: {', '.join(commits)}.", ""]
    return "\n".join(md)


def write_tables(out: Path, rows: Sequence[Mapping]) -> None:
    """`out/table1.csv` (these rows merged into the table there) and `out/table1.md`."""
    merged = merge_table(out / "table1.csv", rows)
    ex.write_csv_atomic(out / "table1.csv", merged, list(ROW) + ["label", "step", "settings"])
    ex.write_text_atomic(out / "table1.md", table_markdown(merged) + "\n")
    ex.log(f"wrote {out / 'table1.csv'} and {out / 'table1.md'}")


# ------------------------------------------------------------------------------------------- figures
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
    for frames in rows.values():
        idx = columns.clamp(max=frames.shape[0] - 1)
        strip_row = frames[idx]
        if strip_row.shape[1] == 1:
            strip_row = strip_row.expand(-1, 3, -1, -1)
        pad = torch.full((len(idx), 3, strip_row.shape[2], 2), media.SEPARATOR)
        tiles.append(torch.cat([torch.cat([f, p], -1) for f, p in zip(strip_row, pad)], -1))  # (3, H, W')
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


# ------------------------------------------------------------------------------------------- main
def parser() -> ex.ArgumentParser:
    p = ex.ArgumentParser(prog="python -m scripts.reproduce_table1", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASET_NAMES), choices=list(DATASET_NAMES))
    p.add_argument("--methods", nargs="+", default=None, help="registered methods (default: every method of each "
                   "profile)")
    p.add_argument("--profiles", nargs="+", default=None, help="profiles of the settings files (default: all)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", action="append", default=[], metavar="EXPERIMENT=PATH",
                   help="a checkpoint (file or run folder) of an experiment (rot, vae_rot, ...), instead of training "
                        "it; repeat for training-seed replicates")
    p.add_argument("--indices", default=None, help="score other MNIST digits, e.g. 10..19")
    p.add_argument("--data-dir", default=None, help="data folder of the scored videos (MNIST IDX files for "
                   "--indices >= 10; Weizmann)")
    p.add_argument("--clip-length", type=int, default=None, help="Weizmann: score clips of this many frames "
                   "(e.g. 16), every frame after the two given generated; a table section of their own")
    p.add_argument("--configs", type=Path, default=ex.CONFIGS)
    p.add_argument("--out", type=Path, default=Path("results"), help="relative to the working directory")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--csv-only", action="store_true", help="train with a CSVLogger instead of the configs' loggers")
    p.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoints")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="extra args after -- go to train.py fit")
    return p


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    from extrapolation import METHODS

    args = parser().parse_args(argv)
    args.commit = ex.commit()
    args.train_args = [a for a in args.train_args if a != "--"]
    if args.trials < 1:
        raise InputError(f"--trials must be at least 1, got {args.trials}")
    if args.clip_length is not None and (set(args.datasets) != {"weizmann"} or args.clip_length < 3):
        raise InputError(f"--clip-length needs --datasets weizmann and at least 3 frames, got {args.clip_length} "
                         f"with {' '.join(args.datasets)}")
    unknown = [m for m in args.methods or [] if m not in METHODS]
    if unknown:
        raise InputError(f"--methods: unknown {unknown}; registered methods: {sorted(METHODS)}")
    given: dict[str, list[str]] = {}
    for experiment, path in ex.parse_assignments(args.ckpt):
        given.setdefault(experiment, []).append(path)
    kinds = {pattern.format(dataset=ds): kind for ds in args.datasets for kind, pattern in ex.EXPERIMENTS.items()}
    for experiment, paths in given.items():  # every file checked before anything runs
        ex.config_path(args.configs / f"{experiment}.yaml")
        for path in paths:
            ex.checkpoint_provenance(path, kinds.get(experiment))
    legacy = legacy_cells(args.out / "cells")
    if legacy:
        ex.log(f"{args.out / 'cells'}: {len(legacy)} cells of the older schema (no key: other checkpoints) ignored")
    cells = []
    for ds in args.datasets:
        cells += evaluate_dataset(ds, args, given)
    write_tables(args.out, table_rows(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
