"""Sweep the extrapolation settings (sigma, eta, k) of a trained denoiser and plot DTW-SSID against them.

    python scripts/sweep.py --dataset rot --sigmas 10 15 25 40 --etas 0.5 1.0 --ks 2 4 --trials 1

Rolls out the dataset's ground-truth videos with every combination (tangent, Alg. 1; and the linear
baseline, Alg. 2, which has no k) and writes `results/sweep_<dataset>.csv` and
`results/sweep_<dataset>.png` (DTW-SSID against sigma, one line per method / eta / k). Sigmas are
given in units of 1/255. The checkpoint defaults to the config's `last.ckpt`.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="config name under --configs, e.g. rot")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[10, 15, 25, 40], help="in units of 1/255")
    parser.add_argument("--etas", type=float, nargs="+", default=None, help="default: the config's eta")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="default: the config's k")
    parser.add_argument("--methods", nargs="+", default=["tangent", "linear"], choices=["tangent", "linear"])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--tol", type=float, default=None, help="tangent solver tolerance (default: the config's)")
    parser.add_argument("--solvers", nargs="+", default=None, metavar="SPEC",
                        help="tangent solver settings to compare, each 'key=value,...' over the config's solver, "
                             "e.g. 'track_iters=1' 'track_iters=1,oversample=0' (default: the config's alone)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the existing CSV "
                        "(e.g. after an interrupted sweep, or after merging the rows of several)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--tag", default="", help="suffix of the output files (keeps earlier sweeps)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # config paths are relative to the repo root
    stem = f"sweep_{args.dataset.replace('/', '_')}{'_' + args.tag if args.tag else ''}"
    csv_path = args.out / f"{stem}.csv"
    if args.replot:
        if not csv_path.exists():
            raise SystemExit(f"--replot: {csv_path} does not exist (run the sweep first)")
        with open(csv_path, newline="") as f:
            rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
        plot(rows, args.dataset, args.out / f"{stem}.png")
        print(f"wrote {args.out / f'{stem}.png'} from {len(rows)} rows")
        return

    import torch

    from callbacks import ExtrapolationCallback
    from extrapolation import dtw_ssid_batch, linear_rollout, tangent_rollout
    from scripts.reproduce_table1 import last_checkpoint
    from train import main as cli_main

    config = args.configs / f"{args.dataset}.yaml"
    sys.argv = sys.argv[:1]
    cli = cli_main(run=False, args=["--config", str(config), "--trainer.logger=false"])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, ExtrapolationCallback))
    ckpt = args.ckpt or last_checkpoint(config)
    model = cli.model
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    model.eval().to(args.device)
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("test")
    videos = dm.videos.float().to(args.device)
    u0, u1 = videos[:, 0], videos[:, 1]
    etas, ks = args.etas or [cb.eta], args.ks or [cb.k]
    base_solver = dict(cb.solver, **({} if args.tol is None else {"tol": args.tol}))
    solvers = [dict(base_solver, **parse_solver(s)) for s in (args.solvers or [""])]

    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for method, sigma, eta in itertools.product(args.methods, args.sigmas, etas):
        for k, solver in (itertools.product(ks, solvers) if method == "tangent" else [(None, None)]):
            whole, cut, worst, tic = [], [], [], time.perf_counter()
            for t in range(args.trials):
                gen = torch.Generator().manual_seed(t)
                if method == "tangent":
                    frames = tangent_rollout(model.denoise, u0, u1, cb.steps, eta, sigma / 255, k, generator=gen,
                                             **solver)
                else:
                    with torch.no_grad():
                        frames = linear_rollout(model.denoise, u0, u1, cb.steps, eta, sigma / 255, generator=gen)
                frames = frames.detach()
                per_video = dtw_ssid_batch(frames, videos)
                whole.append(per_video.mean().item())
                worst.append(per_video.max().item())
                cut.append(dtw_ssid_batch(frames, videos[:, : cb.steps + 2]).mean().item())
            extra = {key: v for key, v in (solver or {}).items() if key not in ("method", "tol")}
            row = dict(method=method, sigma_255=sigma, eta=eta, k=k or "", tol=solver.get("tol", "default") if k else "",
                       solver=" ".join(f"{key}={v}" for key, v in extra.items()) if k else "",
                       steps=cb.steps, trials=args.trials,
                       dtw_ssid=sum(whole) / len(whole), dtw_ssid_cut=sum(cut) / len(cut),
                       # per trial: the mean over videos and the worst video (whole GT); shows heavy tails
                       trial_dtw_ssid=" ".join(f"{w:.3f}" for w in whole),
                       trial_worst_video=" ".join(f"{w:.3f}" for w in worst),
                       seconds=round(time.perf_counter() - tic, 1), device=args.device)
            rows.append(row)
            print(f"{method:8s} sigma {sigma:5.1f}/255 eta {eta:4.2f} k {row['k']!s:2s} {row['solver']}: DTW-SSID "
                  f"{row['dtw_ssid']:.3f} (cut {row['dtw_ssid_cut']:.3f}) {row['seconds']} s", flush=True)
            with open(csv_path, "w", newline="") as f:  # rewritten each row: a partial sweep is kept
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    plot(rows, args.dataset, args.out / f"{stem}.png")
    print(f"wrote {csv_path}")


def plot(rows: list[dict], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("dtw_ssid", "dtw_ssid_cut")):
        groups: dict[str, list[dict]] = {}
        for r in rows:
            label = f"{r['method']} eta={r['eta']}" + (f" k={r['k']}" if r["k"] != "" else "") + (
                f" {r['solver']}" if r.get("solver") else "")
            groups.setdefault(label, []).append(r)
        for label, rs in groups.items():
            rs.sort(key=lambda r: r["sigma_255"])
            ax.plot([r["sigma_255"] for r in rs], [r[key] for r in rs], "o-", label=label)
        ax.set_xlabel("sigma (x 1/255)")
        ax.set_title(f"{dataset}: {'whole' if key == 'dtw_ssid' else 'cut'} ground truth")
    axes[0].set_ylabel("DTW-SSID (lower is better)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
