"""Benchmark: tangent steps on trained denoisers, against the linear baseline in the same run.

For each dataset and step: seconds per 10-video rollout, Jacobian applications (J q or J^T q) per image per step,
forward-equivalents per step (rollout time per step / one batched forward of the same videos), and DTW-SSID both
readings (mean +- std over trials), with the difference to the solved eigen-projection `block` (Alg. 1 as written).
Every cell is an `extrapolation.grid.row` from `run_grid` (all trials of all videos in one batched call).

    python -m benchmarks.bench_rollout --ckpt rot=runs/rot/.../last.ckpt --ckpt trans=... \\
        [--indices 10-19 --data-dir ../shared/data/mnist] [--trials 5] [--steps block filter-A2 ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import experiments as ex
from extrapolation import load_settings, run_grid

STEPS = {  # name -> the tangent step (settings-file form); eigen steps take k from --k
    "block": {"type": "eigen", "solver": "block"},
    "block-fd": {"type": "eigen", "solver": "block", "jacobian": "fd"},  # as slow as block: run on request
    "subspace-A-fd-2": {"type": "eigen", "solver": "subspace", "jacobian": "fd", "track_iters": 2},
    "subspace-J-fd-2": {"type": "eigen", "solver": "subspace", "jacobian": "fd", "symmetric": False, "track_iters": 2},
    "filter-J2": {"type": "filter", "power": 2, "symmetric": False},
    "filter-A1": {"type": "filter", "power": 1},
    "filter-A2": {"type": "filter", "power": 2},
    "filter-A3": {"type": "filter", "power": 3},
    "filter-A2-jvp": {"type": "filter", "power": 2, "jacobian": "autodiff"},
    "power": {"type": "eigen", "solver": "power"},
}


def forward_seconds(denoise, x, repeats: int = 20) -> float:
    import torch

    with torch.no_grad():
        denoise(x)
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            denoise(x)
            times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]


def cached_rows(cache: Path | None, key: dict, compute) -> dict:
    """The row stored under `key` in the JSON file `cache` (same checkpoint, videos, trials, settings), else
    `compute()`, stored there: long reference cells survive an interrupted benchmark and keep their own timing."""
    name = json.dumps(key, sort_keys=True)
    store = ex.read_json(cache) if cache and cache.exists() else {}
    if name in store:
        return store[name]
    r = compute()
    if cache:
        store = ex.read_json(cache) if cache.exists() else {}
        store[name] = r
        ex.write_json_atomic(cache, store)
    return r


def bench(dataset: str, ckpt: str, args) -> list[str]:
    config = ex.config_path(args.configs / f"{dataset}.yaml")
    device = ex.device(args.device)
    models = ex.load_models(denoiser=ckpt, device=device)
    provenance = ex.checkpoint_provenance(ckpt)
    overrides = ex.data_overrides(args.indices, args.data_dir)
    videos = ex.load_datamodule(config, overrides).videos.float().to(device)
    settings = load_settings(ex.settings_file(config), args.profile)
    tangent = settings[args.method]
    k = args.k or getattr(tangent.step, "k", 4)
    baseline = settings[args.baseline].override(eta=tangent.eta, sigma=tangent.sigma)
    n_videos, steps = videos.shape[0], tangent.steps
    t_fwd = forward_seconds(models.denoise, videos[:, 0])
    print(f"\n{dataset}: {ckpt} ({provenance['sha256']}), videos {ex.describe_overrides(overrides)}, {n_videos} videos "
          f"x {steps} steps, {args.trials} trials; eta {tangent.eta}, sigma {tangent.sigma * 255:.3g}/255, k {k}; "
          f"one forward of {n_videos} frames {1e3 * t_fwd:.1f} ms", flush=True)
    points = {args.baseline: baseline}
    for name in args.steps:
        step = dict(STEPS[name], **({"k": k} if STEPS[name]["type"] == "eigen" else {}))
        points[name] = tangent.with_overrides(step=step)
    rows = {}
    for name, method in points.items():
        key = dict(checkpoint=provenance["sha256"], videos=overrides, trials=args.trials, settings=method.settings())
        rows[name] = cached_rows(args.cache, key, lambda method=method: run_grid([method], models, videos, args.trials)[0])
        r = rows[name]
        print(f"  {name}: {r['seconds'] / args.trials:.1f} s per rollout, whole {r['whole_mean']:.3f}, "
              f"cut {r['cut_mean']:.3f}", flush=True)
    ref = rows.get("block")
    t_lin = rows[args.baseline]["seconds"] / args.trials
    lines = [f"### {dataset} ({n_videos} videos x {steps} steps, {args.trials} trials, eta {tangent.eta}, "
             f"sigma {tangent.sigma * 255:.3g}/255, k {k})", "",
             "| solver | step | s / rollout | x linear | J applications / image / step | forward-equiv. / step | "
             "whole | cut | whole - block | cut - block |", "|" + "---|" * 10]
    for name, r in rows.items():
        per = r["seconds"] / args.trials
        def sd(key, r=r):
            return f" +- {r[key]:.3f}" if args.trials > 1 else ""
        dw = f"{r['whole_mean'] - ref['whole_mean']:+.3f}" if ref is not None else ""
        dc = f"{r['cut_mean'] - ref['cut_mean']:+.3f}" if ref is not None else ""
        lines.append(f"| {name} | {r['step']} | {per:.1f} | {per / t_lin:.1f} | {r['applications']:.0f} | "
                     f"{per / steps / t_fwd:.1f} | {r['whole_mean']:.3f}{sd('whole_std')} | "
                     f"{r['cut_mean']:.3f}{sd('cut_std')} | {dw} | {dc} |")
    return lines


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    import torch

    p = ex.ArgumentParser(prog="python -m benchmarks.bench_rollout", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="DATASET=PATH (rot, trans); repeat")
    p.add_argument("--indices", default="10-19", help="MNIST digits of the videos (default: the selection digits)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (indices >= 10)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--profile", default="selected", help="settings profile for eta, sigma")
    p.add_argument("--method", default="tangent", help="the method whose step varies")
    p.add_argument("--baseline", default="linear", help="the method every step is timed against")
    p.add_argument("--k", type=int, default=None, help="k of the eigen-projection steps (default: the profile's "
                   "step's, else 4)")
    p.add_argument("--steps", nargs="+", default=[s for s in STEPS if s not in ("power", "block-fd")],
                   choices=list(STEPS))
    p.add_argument("--configs", type=Path, default=ex.CONFIGS)
    p.add_argument("--cache", type=Path, default=None,
                   help="JSON file of finished cells: a rerun with the same checkpoint, videos and settings reuses them")
    p.add_argument("--device", default="cpu", help="auto, cpu or gpu")
    p.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = p.parse_args(argv)
    if ex.device(args.device).type == "cpu":
        torch.set_num_threads(1)
    lines = [f"`python -m benchmarks.bench_rollout {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             f"{ex.today()}, {ex.machine()}, commit {ex.commit()}", ""]
    for dataset, path in ex.parse_assignments(args.ckpt):
        lines += bench(dataset, path, args) + [""]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        ex.write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
