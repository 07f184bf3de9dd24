"""Sweep the extrapolation settings of trained models with `extrapolation.evaluate` and plot DTW-SSID against them.

    python scripts/sweep.py --dataset rot --ckpt runs/rot_sel/checkpoints/last.ckpt --indices 10..19 \
        --data-dir ../shared/data/mnist --sigmas 15 25 40 --etas 0.5 0.75 1.0 --ks 2 4 \
        --solvers "" method=filter,power=2 --trials 3 --name selection_rot

Each grid point starts from `--profile`'s settings in the dataset's settings file (its config's
`extrapolation.settings`, e.g. configs/extrapolation/rot.yaml) and overrides what the grid gives
(`MethodSettings.with_overrides`): tangent (Alg. 1) sigma x eta x k x solver, linear (Alg. 2) sigma x eta,
latent (Alg. 3, needs --vae-ckpt) VAE eta x re-encode. Sigmas are in units of 1/255; an omitted grid keeps the
file's value. The videos are the config's (`--indices`, `--data-dir`, `--data-args` select others, e.g. the
selection videos). Writes `results/<name>.csv` (default name `sweep_<dataset>[_<tag>]`): per grid point the
whole and cut DTW-SSID, mean and std over trials (each trial the mean over videos), the median and worst video
(whole, mean over trials), seconds and the tangent step's name; and `<name>.png` (DTW-SSID against sigma). It
prints the best row per method by the whole reading (the selection rule). The checkpoint defaults to the
config's `last.ckpt`.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _number(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def parse_solver(spec: str) -> dict:
    """'track_iters=1,oversample=0' -> {'track_iters': 1, 'oversample': 0} (ints, floats or strings)."""
    out = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--solvers: expected key=value in {spec!r}, got {part!r}")
        out[key.strip()] = _number(value)
    return out


COLUMNS = ["method", "profile", "sigma_255", "eta", "k", "solver", "step", "reencode", "steps", "trials", "videos",
           "whole_mean", "whole_std", "cut_mean", "cut_std", "median_video", "worst_video", "worst_video_index",
           "seconds", "applications", "device"]


def grid(base, args) -> list:
    """The MethodSettings of every grid point of one method (`base`: the file's settings)."""
    if base.method == "latent":
        points = itertools.product(args.vae_etas or [base.eta], args.reencode or [base.reencode])
        return [base.with_overrides(eta=eta, reencode=r) for eta, r in points]
    sigmas = [s / 255 for s in args.sigmas] if args.sigmas else [base.sigma]
    points = [base.with_overrides(sigma=s, eta=e) for s in sigmas for e in (args.etas or [base.eta])]
    if base.method == "linear":
        return points
    solvers = [parse_solver(spec) or base.solver for spec in (args.solvers or [""])]
    out = []
    for p in points:
        for solver in solvers:
            with_solver = p.with_overrides(solver=solver)
            ks = (args.ks or [p.k]) if with_solver.uses_k else [p.k]  # the filter step has no k
            out += [with_solver.with_overrides(k=k) for k in ks]
    return out


def row(s, res, args, videos: str) -> dict:
    from scripts.reproduce_table1 import summary

    t = summary(res.whole, res.cut)
    tangent = s.method == "tangent"
    return dict(method=s.method, profile=args.profile, sigma_255="" if s.method == "latent" else round(s.sigma * 255, 4),
                eta=s.eta, k=s.k if s.uses_k else "", solver=" ".join(f"{k}={v}" for k, v in s.solver.items()) if tangent else "",
                step=s.step_name(), reencode=s.reencode if s.method == "latent" else "", steps=s.steps,
                trials=args.trials, videos=videos, whole_mean=t["dtw_ssid_mean"], whole_std=t["dtw_ssid_std"],
                cut_mean=t["dtw_ssid_cut_mean"], cut_std=t["dtw_ssid_cut_std"], median_video=t["median_video"],
                worst_video=t["worst_video"], worst_video_index=t["worst_video_index"], seconds=round(res.seconds, 1),
                applications=round(res.applications, 1) if tangent else "", device=args.device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="config name under --configs, e.g. rot")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--profile", default="selected", choices=["selected", "paper"],
                        help="the settings each grid point starts from")
    parser.add_argument("--ckpt", type=Path, default=None, help="denoiser checkpoint (default: the config's last.ckpt)")
    parser.add_argument("--vae-ckpt", type=Path, default=None, help="VAE checkpoint (method latent)")
    parser.add_argument("--indices", default=None, help="MNIST digits of the videos, e.g. 10..19 (selection videos)")
    parser.add_argument("--data-dir", default=None, help="data folder (MNIST IDX files for --indices >= 10)")
    parser.add_argument("--data-args", nargs="+", default=[], metavar="ARG",
                        help="more config overrides for the data, e.g. --data.init_args.clip_start=20")
    parser.add_argument("--steps", type=int, default=None, help="frames generated after the 2 given (default: the file's)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=None, help="in units of 1/255 (default: the file's)")
    parser.add_argument("--etas", type=float, nargs="+", default=None, help="default: the file's eta")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="tangent k (default: the file's)")
    parser.add_argument("--solvers", nargs="+", default=None, metavar="SPEC",
                        help="tangent solvers to compare, each 'key=value,...' replacing the file's solver, e.g. "
                             "'method=block' 'method=filter,power=2'; '' is the file's (default: the file's alone)")
    parser.add_argument("--vae-etas", type=float, nargs="+", default=None, help="latent eta (default: the file's)")
    parser.add_argument("--reencode", type=lambda v: v.lower() in ("1", "true", "yes"), nargs="+", default=None,
                        help="latent: true (z_i = encode(u_i)) and/or false (a straight line in latent space)")
    parser.add_argument("--methods", nargs="+", default=["tangent", "linear"], choices=["tangent", "linear", "latent"])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="rollouts per batched call (numbers do not depend on it)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the existing CSV "
                        "(e.g. after an interrupted sweep, or after merging the rows of several)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--tag", default="", help="suffix of the output files (keeps earlier sweeps)")
    parser.add_argument("--name", default=None, help="output file stem (default: sweep_<dataset>[_<tag>])")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # config paths are relative to the repo root
    stem = args.name or f"sweep_{args.dataset.replace('/', '_')}{'_' + args.tag if args.tag else ''}"
    csv_path = args.out / f"{stem}.csv"
    if args.replot:
        if not csv_path.exists():
            raise SystemExit(f"--replot: {csv_path} does not exist (run the sweep first)")
        old = {"dtw_ssid": "whole_mean", "dtw_ssid_cut": "cut_mean"}  # sweeps written before evaluate
        with open(csv_path, newline="") as f:
            rows = [{old.get(k, k): _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
        plot(rows, args.dataset, args.out / f"{stem}.png")
        print(f"wrote {args.out / f'{stem}.png'} from {len(rows)} rows")
        return
    if "latent" in args.methods and args.vae_ckpt is None:
        raise SystemExit("--methods latent needs --vae-ckpt")

    from extrapolation import Models, SettingsError, evaluate, load_settings
    from lightning_modules import DenoiserModule, VAEModule
    from scripts.reproduce_table1 import data_args, last_checkpoint, load_datamodule, settings_file

    config = args.configs / f"{args.dataset}.yaml"
    try:  # every grid point is checked before any rollout
        settings = load_settings(settings_file(config), args.profile)
        points = [s for m in args.methods for s in grid(settings[m].with_overrides(steps=args.steps), args)]
        dm = load_datamodule(config, data_args(args.indices, args.data_dir) + args.data_args)
        for s in points:
            s.check_frame(dm.videos[0, 0].numel())
    except SettingsError as err:
        raise SystemExit(f"error: {err}") from None
    videos = dm.videos.float().to(args.device)
    models = {}
    if {"tangent", "linear"} & set(args.methods):
        denoiser = DenoiserModule.load_from_checkpoint(args.ckpt or last_checkpoint(config), map_location=args.device)
        models["tangent"] = models["linear"] = Models(denoise=denoiser.eval().denoise)
    if "latent" in args.methods:
        vae = VAEModule.load_from_checkpoint(args.vae_ckpt, map_location=args.device).eval()
        models["latent"] = Models(encode=vae.encode, decode=vae.decode)
    which = args.indices or ",".join(args.data_args) or "config"

    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for s in points:
        res = evaluate(models[s.method], videos, s, args.trials, args.seed, batch_size=args.batch_size)
        rows.append(row(s, res, args, which))
        r = rows[-1]
        print(f"{s.method:8s} sigma {r['sigma_255']!s:>6s}/255 eta {s.eta:4.2f} k {r['k']!s:2s} {r['step'] or r['reencode']}: "
              f"whole {r['whole_mean']:.3f} +- {r['whole_std']:.3f}, cut {r['cut_mean']:.3f}, worst video "
              f"{r['worst_video']:.3f}, {r['seconds']} s", flush=True)
        with open(csv_path, "w", newline="") as f:  # rewritten each row: a partial sweep is kept
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    for method in args.methods:  # the selection rule: the whole reading, mean over trials
        best = min((r for r in rows if r["method"] == method), key=lambda r: r["whole_mean"])
        print(f"best {method}: " + ", ".join(f"{k}={best[k]}" for k in ("sigma_255", "eta", "k", "solver", "reencode",
                                                                       "whole_mean", "cut_mean") if best[k] != ""))
    plot(rows, args.dataset, args.out / f"{stem}.png")
    print(f"wrote {csv_path}")


def plot(rows: list[dict], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("whole_mean", "cut_mean")):
        groups: dict[str, list[dict]] = {}
        for r in (r for r in rows if r["sigma_255"] != ""):  # latent rows have no sigma
            label = f"{r['method']} eta={r['eta']}" + (f" k={r['k']}" if r["k"] != "" else "") + (
                f" {r['solver']}" if r.get("solver") else "")
            groups.setdefault(label, []).append(r)
        for label, rs in groups.items():
            rs.sort(key=lambda r: r["sigma_255"])
            ax.plot([r["sigma_255"] for r in rs], [r[key] for r in rs], "o-", label=label)
        ax.set_xlabel("sigma (x 1/255)")
        ax.set_title(f"{dataset}: {'whole' if key == 'whole_mean' else 'cut'} ground truth")
    axes[0].set_ylabel("DTW-SSID (lower is better)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
