"""Benchmark: what a rollout costs against the linear baseline (Alg. 2) in the same run, and what it scores.

For each dataset: the profile's methods (default: Alg. 1 `tangent`, the paced tangent method and the paced
baseline, all at their `selected` settings) and Alg. 1 with other tangent steps (`--steps`), each timed against
`--baseline` (linear, at its own settings): seconds per 10-video rollout (all trials batched in one call, divided
by the trials), the ratio to linear, denoiser passes per generated frame (images denoised, counted), the same
plus 2 per VJP (forward-equivalents by count), forward-equivalents by time (seconds per frame / one forward of
the first frames), and DTW-SSID cut, open-end and whole (mean +- std over trials). Cells are
`extrapolation.grid.row`s from `run_grid`; `--cache` keeps finished cells (same checkpoint, videos, settings and
commit).

    python -m benchmarks.bench_rollout --ckpt rot=runs/rot/.../last.ckpt --ckpt trans=... \\
        [--indices 10-19 --data-dir ../shared/data/mnist] [--trials 5] [--steps filter-J2 block ...] [--out FILE] \\
        [--accelerator gpu]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import experiments as ex
from errors import InputError
from extrapolation import load_settings, run_grid

STEPS = {  # name -> the tangent step (settings-file form); eigen steps take k from --k
    "block": {"type": "eigen", "solver": "block"},
    "block-fd": {"type": "eigen", "solver": "block", "jacobian": "fd"},  # as slow as block: run on request
    "subspace-A-fd-2": {"type": "eigen", "solver": "subspace", "jacobian": "fd", "track_iters": 2},
    "subspace-J-fd-2": {"type": "eigen", "solver": "subspace", "jacobian": "fd", "symmetric": False, "track_iters": 2},
    "filter-J1": {"type": "filter", "power": 1, "symmetric": False},
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


class Counted:
    """The denoiser, counting the images it denoises (all calls, batched or not)."""

    def __init__(self, denoise):
        self.denoise, self.images = denoise, 0

    def __call__(self, x):
        self.images += x.shape[0]
        return self.denoise(x)


def fast_passes(denoise, channels_last: bool, bf16: bool):
    """D(x) = x - network(x) with a copy of the module's network in channels-last memory and/or under bfloat16
    autocast (output float32): what the baseline's rows `--fast-baseline` time. Not for forward differences (see
    docs). A copy, so the float32 rows keep the network as loaded."""
    import copy

    import torch

    net = copy.deepcopy(denoise.__self__.network)
    net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def den(x):
        y = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return (y - net(y)).float().contiguous()
    return den


def _vjps_per_step(method) -> float:
    """VJPs per image per step of a method's tangent step (each worth about two forward passes)."""
    step = getattr(method, "step", None)
    if step is None or not getattr(step, "symmetric", False):
        return 0.0
    if getattr(step, "name", "") == "filter":
        return float(step.power) * getattr(method, "substeps", 1)
    return math.nan  # an eigen-solve: as many as its iterations; `applications` counts them


def bench(dataset: str, ckpt: str, args) -> list[str]:
    config = ex.config_path(args.configs / f"{dataset}.yaml")
    device = ex.device(args.device)
    models = ex.load_models(denoiser=ckpt, device=device)
    provenance = ex.checkpoint_provenance(ckpt)
    overrides = ex.data_overrides(args.indices, args.data_dir)
    videos = ex.load_datamodule(config, overrides).videos.float().to(device)
    settings = load_settings(ex.settings_file(config), args.profile)
    for name in [*args.methods, args.method, args.baseline]:
        if name not in settings:
            raise InputError(f"--methods: {ex.settings_file(config)} [{args.profile}] has no {name!r}; "
                             f"it has {sorted(settings)}")
    tangent = settings[args.method]
    k = args.k or getattr(tangent.step, "k", 4)
    n_videos, steps = videos.shape[0], tangent.steps
    t_fwd = forward_seconds(models.denoise, videos[:, 0])
    print(f"\n{dataset}: {ckpt} ({provenance['sha256']}), videos {ex.describe_overrides(overrides)}, {n_videos} videos "
          f"x {steps} steps, {args.trials} trials, profile {args.profile}; one forward of {n_videos} frames "
          f"{1e3 * t_fwd:.1f} ms", flush=True)
    points = {args.baseline: settings[args.baseline]}
    points.update({name: settings[name] for name in args.methods})
    for name in args.steps:  # the Alg. 1 method with other steps, at its own sigma and eta
        step = dict(STEPS[name], **({"k": k} if STEPS[name]["type"] == "eigen" else {}))
        points[f"{args.method} {name}"] = tangent.with_overrides(step=step)
    variants = {name: (method, None) for name, method in points.items()}
    if args.fast_baseline:
        for cl, bf in ((True, False), (False, True), (True, True)):
            label = "+".join(n for n, on in (("channels-last", cl), ("bf16", bf)) if on)
            variants[f"{args.baseline} {label}"] = (points[args.baseline], (cl, bf))
    rows, passes = {}, {}
    for name, (method, fast) in variants.items():
        key = dict(checkpoint=provenance["sha256"], videos=overrides, trials=args.trials, settings=method.settings(),
                   commit=ex.commit(), passes="float32" if fast is None else list(fast))
        counted = Counted(models.denoise if fast is None else fast_passes(models.denoise, *fast))
        run = dataclasses.replace(models, denoise=counted)
        rows[name] = cached_rows(args.cache, key, lambda method=method, run=run, counted=counted: dict(
            run_grid([method], run, videos, args.trials)[0],
            passes=counted.images / (n_videos * args.trials * method.steps)))
        r = rows[name]
        print(f"  {name}: {r['seconds'] / args.trials:.2f} s per rollout, {r['passes']:.1f} passes / frame, "
              f"cut {r['cut_mean']:.3f}, open-end {r['open_end_mean']:.3f}", flush=True)
        passes[name] = r["passes"] + 2 * _vjps_per_step(method)
    t_lin = rows[args.baseline]["seconds"] / args.trials
    lines = [f"### {dataset} ({n_videos} videos x {steps} steps, {args.trials} trials batched, profile {args.profile}; "
             f"{ckpt}, sha256 {provenance['sha256']})", "",
             "| method | step | s / rollout | x linear | denoiser passes / frame | + 2 x VJPs | "
             "forward-equiv. / frame (time) | cut | open-end | whole |", "|" + "---|" * 10]
    for name, r in rows.items():
        per = r["seconds"] / args.trials

        def sd(key, r=r):
            return f" +- {r[key]:.3f}" if args.trials > 1 else ""
        lines.append(f"| {name} | {r['step']} | {per:.2f} | {per / t_lin:.1f} | {r['passes']:.1f} | "
                     f"{passes[name]:.1f} | {per / steps / t_fwd:.1f} | {r['cut_mean']:.3f}{sd('cut_std')} | "
                     f"{r['open_end_mean']:.3f}{sd('open_end_std')} | {r['whole_mean']:.3f}{sd('whole_std')} |")
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
    p.add_argument("--methods", nargs="+", default=["tangent", "tangent_paced", "linear_paced"],
                   help="methods at the profile's settings, each a row")
    p.add_argument("--method", default="tangent", help="the method whose step varies (--steps)")
    p.add_argument("--baseline", default="linear", help="the method every row is timed against (its own settings)")
    p.add_argument("--k", type=int, default=None, help="k of the eigen-projection steps (default: the profile's "
                   "step's, else 4)")
    p.add_argument("--steps", nargs="*", default=["filter-J2", "filter-A2"], choices=list(STEPS),
                   help="the --method with these steps beside its own (block and the subspace steps take minutes)")
    p.add_argument("--fast-baseline", action="store_true",
                   help="also time the baseline with channels-last and/or bfloat16 denoising passes")
    p.add_argument("--configs", type=Path, default=ex.CONFIGS)
    p.add_argument("--cache", type=Path, default=None,
                   help="JSON file of finished cells: a rerun with the same checkpoint, videos and settings reuses them")
    p.add_argument("--accelerator", "--device", dest="device", default="cpu",
                   help="auto, cpu or gpu (on a GPU the denoiser runs there; CPU runs take one torch thread)")
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
