"""Validation PSNR against training images and wall-clock time, from finished runs: where a budget stops paying.

    python -m benchmarks.convergence runs/rot/version_0 runs/rot_fp32/version_0 --out docs/convergence_rot.png \\
        [--labels today new] [--reference runs/rot/version_0]

Reads each run folder's `metrics.csv` (val/psnr_15, _25, _50, logged every `check_val_every_n_epoch`, and the fit's
wall-clock seconds `time/fit_seconds` beside them, `callbacks.WallClock`) and `config.yaml` (the batch size: images =
global step x batch size; a run resumed from another's checkpoint, its `ckpt_path`, continues that run's curve),
draws PSNR at 25/255 against training images and against minutes side by side, and prints per run and noise level
the final PSNR, the PSNR at 50% / 80% / 90% of the images (linear between validations) and the gain over the last
10% of them (the budget rule: under 0.05 dB means the curve is flat). With `--reference RUN`, also the minutes
each run needed to come within 0.1 dB of that run's final PSNR (at each sigma; linear between validations).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

SIGMAS = (15, 25, 50)


def read_run(folder: Path) -> tuple[list[int], dict[int, list[float]], list[float]]:
    """(training images at each validation, {sigma: PSNR at each validation}, wall-clock seconds at each validation,
    NaN where the run did not log them) of one run folder; a run resumed from another run's checkpoint (its config's
    `ckpt_path`) continues that run's curve."""
    import yaml

    metrics, config = folder / "metrics.csv", folder / "config.yaml"
    for path in (metrics, config):
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist (expected a finished run folder runs/<exp>/version_N)")
    settings = yaml.safe_load(config.read_text())
    batch = settings["data"]["init_args"]["batch_size"]
    steps, psnr = [], {s: [] for s in SIGMAS}
    clock: dict[int, float] = {}  # step -> seconds: a logger may write them on rows of their own
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("time/fit_seconds"):
                clock[int(row["step"])] = float(row["time/fit_seconds"])
            if row.get("val/psnr_25"):
                steps.append(int(row["step"]))
                for s in SIGMAS:
                    psnr[s].append(float(row[f"val/psnr_{s}"]))
    seconds = [clock.get(n, math.nan) for n in steps]
    if not steps:
        raise SystemExit(f"error: {metrics} holds no val/psnr_25 rows")
    earlier = resumed_from(folder, settings.get("ckpt_path"))
    if earlier is not None:
        before, old, old_seconds = read_run(earlier)
        keep = [i for i, n in enumerate(before) if n < steps[0] * batch]
        return [before[i] for i in keep] + [n * batch for n in steps], {
            s: [old[s][i] for i in keep] + psnr[s] for s in SIGMAS}, [old_seconds[i] for i in keep] + seconds
    return [n * batch for n in steps], psnr, seconds


def resumed_from(folder: Path, ckpt_path: str | None) -> Path | None:
    """The run folder of the checkpoint a run resumed from (relative paths: to the working directory the run
    started in, the folder above `runs/`), or None."""
    if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
        return None
    for base in (Path.cwd(), folder.resolve().parents[2]):
        ckpt = base / ckpt_path
        if ckpt.is_file() and (ckpt.parent.parent / "metrics.csv").is_file():
            return ckpt.parent.parent
    print(f"warning: {folder}: resumed from {ckpt_path}, not found; its curve starts at this run", file=sys.stderr)
    return None


def at(images: list[int], values: list[float], fraction: float) -> float:
    """The value at `fraction` of the run's images, linear between the validations around it."""
    import numpy as np

    return float(np.interp(fraction * images[-1], images, values))


def reached(xs: list[float], values: list[float], target: float) -> float:
    """The first x at which `values` reach `target` (linear between points); NaN if never."""
    for i, v in enumerate(values):
        if v >= target:
            if i == 0 or math.isnan(xs[i - 1]):
                return xs[i]
            frac = (target - values[i - 1]) / (v - values[i - 1])
            return xs[i - 1] + frac * (xs[i] - xs[i - 1])
    return math.nan


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<experiment>/version_N)")
    p.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the folder)")
    p.add_argument("--out", type=Path, default=None, help="PNG of PSNR at 25/255 against training images and minutes")
    p.add_argument("--reference", type=Path, default=None,
                   help="a run folder whose final PSNR the others are timed to (within 0.1 dB)")
    a = p.parse_args(argv)
    labels = a.labels or [str(r) for r in a.runs]
    if len(labels) != len(a.runs):
        raise SystemExit(f"error: --labels gives {len(labels)} labels for {len(a.runs)} runs")
    curves = {label: read_run(run) for label, run in zip(labels, a.runs)}
    print("| run | σ (/255) | images | minutes | PSNR at 50% | 80% | 90% | final | gain over the last 10% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, (images, psnr, seconds) in curves.items():
        for s in SIGMAS:
            v = psnr[s]
            print(f"| {label} | {s} | {images[-1] / 1e3:.0f}k | {seconds[-1] / 60:.1f} | {at(images, v, 0.5):.2f} | "
                  f"{at(images, v, 0.8):.2f} | {at(images, v, 0.9):.2f} | {v[-1]:.2f} | {v[-1] - at(images, v, 0.9):+.3f} |")
    if a.reference is not None:
        _, ref, _ = read_run(a.reference)
        targets = {s: ref[s][-1] - 0.1 for s in SIGMAS}
        print(f"\nMinutes to come within 0.1 dB of {a.reference}'s final PSNR "
              f"({' / '.join(f'{ref[s][-1]:.2f}' for s in SIGMAS)} dB at σ {' / '.join(map(str, SIGMAS))}):\n")
        print("| run | " + " | ".join(f"σ {s}" for s in SIGMAS) + " | all three |")
        print("|---|" + "---|" * (len(SIGMAS) + 1))
        for label, (_, psnr, seconds) in curves.items():
            mins = [reached(seconds, psnr[s], targets[s]) / 60 for s in SIGMAS]
            both = math.nan if any(math.isnan(m) for m in mins) else max(mins)
            cells = ["not reached" if math.isnan(m) else f"{m:.1f}" for m in [*mins, both]]
            print(f"| {label} | " + " | ".join(cells) + " |")
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
        for label, (images, psnr, seconds) in curves.items():
            line = ax.plot([i / 1e3 for i in images], psnr[25], label=label, lw=1.2)[0]
            ax_t.plot([t / 60 for t in seconds], psnr[25], lw=1.2, color=line.get_color())
        ax.set_xlabel("training images (thousands)")
        ax_t.set_xlabel("wall clock (minutes, validations and rollouts included)")
        ax.set_ylabel("val PSNR at σ 25/255 (dB)")
        for axis in (ax, ax_t):
            axis.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.out, dpi=110)
        print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
