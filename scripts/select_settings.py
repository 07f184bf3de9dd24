"""Choose each method's extrapolation settings on selection videos that Table 1 never scores (issue protocol).

Every method is tuned the same way, by the whole-video DTW-SSID, mean over `--trials` trials: sigma and eta for
tangent and linear (k too when the tangent step is an eigen-projection), eta and re-encoding for the VAE. Writes
every cell to results/selection_<dataset>.csv and, with --write, the winners into the `selected` profile of
configs/extrapolation/<dataset>.yaml (the other profiles and the file's comments are kept).

    python scripts/select_settings.py --dataset rot --denoiser CKPT [--vae CKPT] \
        --indices 10-19 --data-dir ../shared/data/mnist [--trials 3] [--write]
    python scripts/select_settings.py --dataset weizmann --denoiser CKPT --clip-start 5 --data-dir DIR

MNIST selects on other digits (`--indices`, each with its own denoiser and VAE trained on them); Weizmann on
clips that start later in the same sequences (`--clip-start`, after the scored clips' last frame).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import math
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extrapolation import Models, evaluate, load_settings  # noqa: E402

GRIDS = {  # sigma in /255; eta as multiples of the paper's (A.6) step size
    "sigma": [10, 15, 25, 40, 60],
    "eta_scale": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],  # the baselines' best eta lies beyond 2x the paper's
    "k": [2, 4, 8],
}


def candidates(method: str, paper, selected) -> list:
    """The grid of one method around the paper's settings; the tangent step (solver) is the selected one."""
    if method == "latent":
        return [paper.with_overrides(eta=round(paper.eta * s, 4), reencode=r)
                for s, r in itertools.product(GRIDS["eta_scale"], (True, False))]
    base = selected if method == "tangent" else paper
    ks = GRIDS["k"] if base.uses_k else [base.k]
    return [base.with_overrides(sigma=sig / 255, eta=round(paper.eta * s, 4), k=k)
            for sig, s, k in itertools.product(GRIDS["sigma"], GRIDS["eta_scale"], ks)]


def describe(s) -> dict:
    d = dict(method=s.method, steps=s.steps, eta=s.eta)
    if s.method == "latent":
        d.update(reencode=s.reencode)
    else:
        d.update(sigma_255=round(s.sigma * 255, 3))
    if s.method == "tangent":
        d.update(k=s.k if s.uses_k else "", step=s.step_name())
    return d


def by_whole(row: dict) -> float:
    """The selection rule's key: the whole reading (a number or the CSV's text); a diverged (NaN) cell ranks last."""
    whole = float(row["whole"])
    return math.inf if math.isnan(whole) else whole


def grids_markdown(rows: list[dict], paper: dict) -> str:
    """The selection CSV's rows as one grid per method: whole / cut per cell, columns eta, rows sigma (and k where
    it varies) or re-encoding; the selected cell (lowest whole reading) in bold, the paper's values marked."""
    md = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        best = min(mine, key=by_whole)
        etas = sorted({float(r["eta"]) for r in mine})
        several_k = len({r["k"] for r in mine}) > 1

        def label(r):
            if method == "latent":
                paper_value = r["reencode"] == str(paper[method].reencode)
                return f"re-encode {r['reencode'].lower()}" + (" (paper)" if paper_value else "")
            sigma = float(r["sigma_255"])
            return (f"σ {sigma:g}/255" + (" (paper)" if abs(sigma - paper[method].sigma * 255) < 1e-6 else "")
                    + (f", k {r['k']}" if several_k else ""))

        cells: dict[str, dict[float, str]] = {}
        for r in mine:
            text = f"{float(r['whole']):.3f} / {float(r['cut']):.3f}"
            cells.setdefault(label(r), {})[float(r["eta"])] = f"**{text}**" if r is best else text
        step = f", step {mine[0]['step']}" if mine[0].get("step") else ""
        md += [f"{method}{step}: whole / cut, {mine[0]['trials']} trials, videos {mine[0]['videos']}", "",
               "| | " + " | ".join(f"η {e:g}" + (" (paper)" if abs(e - paper[method].eta) < 1e-9 else "")
                                   for e in etas) + " |",
               "|---" * (len(etas) + 1) + "|"]
        md += [f"| {name} | " + " | ".join(row.get(e, "") for e in etas) + " |" for name, row in cells.items()]
        md.append("")
    return "\n".join(md)


def write_selected(path: Path, chosen: dict) -> None:
    """Replace the `selected:` block of a settings file, keeping everything else."""
    text = path.read_text()
    lines = ["selected:"]
    for method, s in chosen.items():
        fields = {"eta": s.eta}
        if method != "latent":
            fields["sigma"] = f"{s.sigma * 255:g}/255"
        if method == "tangent":
            if s.uses_k:
                fields["k"] = s.k
            fields["solver"] = "{" + ", ".join(f"{k}: {v}" for k, v in s.solver.items()) + "}"
        if method == "latent":
            fields["reencode"] = str(s.reencode).lower()
        lines.append(f"  {method}: {{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}")
    block = "\n".join(lines) + "\n"
    new, n = re.subn(r"^selected:\n(?:  .*\n)*", block, text, flags=re.M)
    path.write_text(new if n else text + block)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=["rot", "trans", "weizmann"])
    p.add_argument("--denoiser", required=True, help="denoiser checkpoint trained on the selection videos")
    p.add_argument("--vae", default=None, help="VAE checkpoint trained on the selection videos (latent method)")
    p.add_argument("--indices", default="10-19", help="MNIST digits (training indices) to select on")
    p.add_argument("--clip-start", type=int, default=None,
                   help="Weizmann: first frame of the selection clips; must lie after the scored clips")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["tangent", "linear", "latent"])
    p.add_argument("--configs", type=Path, default=ROOT / "configs", help="folder of the experiment configs")
    p.add_argument("--settings", type=Path, default=None,
                   help="default: the config's settings file (configs/extrapolation/<dataset>.yaml)")
    p.add_argument("--out", type=Path, default=None, help="default results/selection_<dataset>.csv")
    p.add_argument("--write", action="store_true", help="write the winners into the settings file's `selected`")
    p.add_argument("--append", action="store_true", help="keep the CSV's rows of the methods not run this time")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from cli import load_config
    from lightning_modules import DenoiserModule, VAEModule
    from scripts.reproduce_table1 import data_args, load_datamodule, settings_file

    config = args.configs / f"{args.dataset}.yaml"
    settings_path = args.settings or settings_file(config)
    out = args.out or ROOT / "results" / f"selection_{args.dataset}.csv"
    paper, selected = load_settings(settings_path, "paper"), load_settings(settings_path, "selected")
    if args.dataset == "weizmann":
        scored = load_config(["--config", config]).data.init_args  # the scored clips
        first = scored.clip_start + scored.clip_length
        if args.clip_start is None or args.clip_start < first:
            raise SystemExit(f"error: --clip-start must be >= {first}, the first frame after the scored clips; "
                             f"got {args.clip_start}")
        overrides = data_args(data_dir=args.data_dir, clip_start=args.clip_start)
        label = f"clips from frame {args.clip_start}"
    else:
        overrides, label = data_args(args.indices, args.data_dir), args.indices
    dm = load_datamodule(config, overrides)
    videos = dm.videos.float()
    models = Models(denoise=DenoiserModule.load_from_checkpoint(args.denoiser, map_location="cpu").eval().denoise)
    if args.vae:
        vae = VAEModule.load_from_checkpoint(args.vae, map_location="cpu").eval()
        models.encode, models.decode = vae.encode, vae.decode
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = f"{platform.machine()} CPU, 1 torch thread"
    rows, chosen = [], {}
    for method in args.methods:
        if method == "latent" and not args.vae:
            print("latent: no --vae checkpoint; skipped")
            continue
        grid = candidates(method, paper[method], selected[method])
        start = len(rows)
        for i, s in enumerate(grid):
            tic = time.perf_counter()
            res = evaluate(models, videos, s, args.trials)
            whole, cut = res.whole.mean(1), res.cut.mean(1)  # per trial
            row = dict(dataset=args.dataset, **describe(s), trials=args.trials,
                       whole=round(whole.mean().item(), 4), whole_std=round(whole.std().item(), 4) if args.trials > 1 else 0,
                       cut=round(cut.mean().item(), 4), cut_std=round(cut.std().item(), 4) if args.trials > 1 else 0,
                       worst_video=round(res.whole.mean(0).max().item(), 4), seconds=round(time.perf_counter() - tic, 1),
                       videos=label, date=when, machine=machine)
            rows.append(row)
            print(f"{method} {i + 1}/{len(grid)}: {describe(s)} whole {row['whole']:.3f} cut {row['cut']:.3f} "
                  f"({row['seconds']} s)", flush=True)
        i = min(range(len(grid)), key=lambda i: by_whole(rows[start + i]))
        if by_whole(rows[start + i]) == math.inf:
            raise SystemExit(f"error: every {method} cell diverged (NaN); nothing to select")
        chosen[method] = grid[i]
        print(f"{method}: selected {describe(grid[i])}, whole {rows[start + i]['whole']:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        with open(out, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["method"] not in args.methods] + rows
    keys = ["dataset", "method", "step", "steps", "eta", "sigma_255", "k", "reencode", "trials", "whole", "whole_std",
            "cut", "cut_std", "worst_video", "seconds", "videos", "date", "machine"]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    with open(out, newline="") as f:
        out.with_suffix(".md").write_text(grids_markdown(list(csv.DictReader(f)), paper))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    if args.write and chosen:
        for method in selected:
            chosen.setdefault(method, selected[method])
        write_selected(settings_path, {m: chosen[m] for m in ("tangent", "linear", "latent") if m in chosen})
        print(f"updated the `selected` profile of {settings_path}")


if __name__ == "__main__":
    main()
