"""Benchmark: tangent-step solvers on trained denoisers, against the linear baseline in the same run.

For each dataset and solver: seconds per 10-video rollout, Jacobian applications (J q or J^T q) per image per
step, forward-equivalents per step (rollout time per step / one batched forward of the same videos), and
DTW-SSID both readings (mean +- std over trials), with the difference to solved `block` (Alg. 1 as written).
Every rollout goes through `extrapolation.evaluate`, all trials of all videos in one batched call.

    python benchmarks/bench_rollout.py --ckpt rot=runs/rot/.../last.ckpt --ckpt trans=... \
        [--indices 10-19 --data-dir ../shared/data/mnist] [--trials 5] [--solvers block filter-A2 ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

from extrapolation import Models, evaluate, load_settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SOLVERS = {
    "block": dict(method="block"),
    "block-fd": dict(method="block", jacobian="fd"),  # as slow as block (same iterations): run on request
    "subspace-A-fd-2": dict(method="subspace", jacobian="fd", track_iters=2),
    "subspace-J-fd-2": dict(method="subspace", jacobian="fd", symmetric=False, track_iters=2),
    "filter-J2": dict(method="filter", power=2, symmetric=False),
    "filter-A1": dict(method="filter", power=1),
    "filter-A2": dict(method="filter", power=2),
    "filter-A3": dict(method="filter", power=3),
    "filter-A2-jvp": dict(method="filter", power=2, jacobian="autodiff"),
    "power": dict(method="power"),
}
def forward_seconds(denoise, x: torch.Tensor, repeats: int = 20) -> float:
    with torch.no_grad():
        denoise(x)
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            denoise(x)
            times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]


def cached(args, key: tuple, run):
    """run(settings) -> Evaluation, or the cell stored under `key` in `--cache` (same checkpoint, videos, trials,
    settings): long reference cells survive an interrupted benchmark. Cached cells keep their own timing."""
    import json

    from extrapolation import Evaluation

    name = json.dumps([str(k) for k in key[:4]] + [key[4].as_dict()], sort_keys=True)
    store = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    if name in store:
        c = store[name]
        return Evaluation(torch.tensor(c["whole"]), torch.tensor(c["cut"]), c["seconds"], None, c["applications"])
    res = run(key[4])
    if args.cache:
        store = json.loads(args.cache.read_text()) if args.cache.exists() else {}
        store[name] = dict(whole=res.whole.tolist(), cut=res.cut.tolist(), seconds=res.seconds,
                           applications=res.applications)
        args.cache.write_text(json.dumps(store))
    return res


def bench(dataset: str, ckpt: str, args) -> list[str]:
    from lightning_modules import DenoiserModule

    module = DenoiserModule.load_from_checkpoint(ckpt, map_location=args.device).eval()
    models = Models(denoise=module.denoise)
    from scripts.reproduce_table1 import data_args, load_datamodule

    dm = load_datamodule(ROOT / "configs" / f"{dataset}.yaml", data_args(args.indices, args.data_dir))
    videos = dm.videos.float().to(args.device)
    settings = load_settings(ROOT / "configs" / "extrapolation" / f"{dataset}.yaml", args.profile)
    tangent, linear = settings["tangent"], settings["linear"]
    n_videos, steps = videos.shape[0], tangent.steps
    t_fwd = forward_seconds(module.denoise, videos[:, 0])
    print(f"\n{dataset}: {ckpt}, videos {args.indices}, {n_videos} videos x {steps} steps, {args.trials} trials; "
          f"eta {tangent.eta}, sigma {tangent.sigma * 255:.3g}/255, k {tangent.k}; "
          f"one forward of {n_videos} frames {1e3 * t_fwd:.1f} ms", flush=True)
    base = evaluate(models, videos, linear.with_overrides(eta=tangent.eta, sigma=tangent.sigma), args.trials)
    rows = [("linear (Alg. 2)", "", base)]
    for name in args.solvers:
        res = cached(args, (dataset, ckpt, args.indices, args.trials, tangent.with_overrides(solver=SOLVERS[name])),
                     lambda s: evaluate(models, videos, s, args.trials))
        rows.append((name, tangent.with_overrides(solver=SOLVERS[name]).step_name(), res))
        print(f"  {name}: {res.seconds / args.trials:.1f} s per rollout, whole {res.whole.mean():.3f}, "
              f"cut {res.cut.mean():.3f}", flush=True)
    ref = next((r for n, _, r in rows if n == "block"), None)
    t_lin = base.seconds / args.trials
    lines = [f"### {dataset} ({n_videos} videos x {steps} steps, {args.trials} trials, eta {tangent.eta}, "
             f"sigma {tangent.sigma * 255:.3g}/255, k {tangent.k})", "",
             "| solver | step | s / rollout | x linear | J applications / image / step | forward-equiv. / step | "
             "whole | cut | whole - block | cut - block |", "|" + "---|" * 10]
    for name, step, r in rows:
        per = r.seconds / args.trials
        whole = r.whole.mean(1)  # per trial
        cut = r.cut.mean(1)
        sd = (lambda t: f" +- {t.std():.3f}" if len(t) > 1 else "")
        dw = f"{whole.mean() - ref.whole.mean():+.3f}" if ref is not None else ""
        dc = f"{cut.mean() - ref.cut.mean():+.3f}" if ref is not None else ""
        lines.append(f"| {name} | {step} | {per:.1f} | {per / t_lin:.1f} | {r.applications:.0f} | "
                     f"{per / steps / t_fwd:.1f} | {whole.mean():.3f}{sd(whole)} | {cut.mean():.3f}{sd(cut)} | "
                     f"{dw} | {dc} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="DATASET=PATH (rot, trans); repeat")
    p.add_argument("--indices", default="10-19", help="MNIST digits of the videos (default: the selection digits)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (indices >= 10)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--profile", default="selected", help="settings profile for eta, sigma, k")
    p.add_argument("--solvers", nargs="+", default=[s for s in SOLVERS if s not in ("power", "block-fd")],
                   choices=list(SOLVERS))
    p.add_argument("--cache", type=Path, default=None,
                   help="JSON file of finished cells: a rerun with the same checkpoint, videos and settings reuses them")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(1) if args.device == "cpu" else None
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)")
    lines = [f"`python benchmarks/bench_rollout.py {' '.join(argv or __import__('sys').argv[1:])}`", "",
             f"{when}, {machine}, torch {torch.__version__}", ""]
    for spec in args.ckpt:
        dataset, _, path = spec.partition("=")
        lines += bench(dataset, path, args) + [""]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
