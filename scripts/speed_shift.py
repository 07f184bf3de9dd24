"""The speed-shift test: the same videos played at other speeds, every method at its settings, untuned per speed.

    python -m scripts.speed_shift --dataset rot --ckpt rot=runs/rot_s0 --ckpt rot=runs/rot_s1 --ckpt rot=runs/rot_s2 \\
        --ckpt vae_rot=runs/vae_rot_s0 [--profiles paper selected] [--speeds 0.5 1 2] [--trials 3]

A method that extrapolates a video should move at the pace of its two given frames. Here the scored MNIST videos
(the config's digits) are played at each `--speeds` times their speed (the dataset's `step_deg` / `step_px` scaled)
and every method of every `--profiles` profile rolls them out with the profile's settings, the same at every speed.
The ground truth is sampled at the video's own speed and long enough to measure a fast rollout: rotated MNIST
`--rotated-frames` frames (several turns), translated MNIST the same span of -6 to +6 px at every speed (100 / s
frames: the digit never leaves the range the denoiser was trained on, so a rollout faster than about 1.2x the
video's pace at 2x reads as the end of the span). Per (profile, method, speed, checkpoint) one
`extrapolation.grid.row`: the speed ratio (`extrapolation.dtw.readings`: the slope of the matched ground-truth frame
per rollout frame along an open-end DTW path; 1 = the video's pace), open-end, cut and whole DTW-SSID, the stalled
fraction (ratio under 0.5) and divergence. Writes `<out>.csv` after each cell (a rerun skips the cells it holds) and
`<out>.md`: per method and speed the median speed ratio and the readings, mean ± std over checkpoints (training
seeds).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import experiments as ex
from errors import InputError
from extrapolation.grid import combine, flat, row, settings_of, value

ROTATED_FRAMES = 300
TRANSLATED_SPAN = 100  # frames of the 1x translated video: the span the denoiser was trained on


def speed_overrides(config: Path, speed: float, rotated_frames: int) -> list[str]:
    """Data overrides of the config's videos played at `speed` times their speed."""
    data = ex.data_settings(config)["init_args"]
    if "step_deg" in data:
        return ex.data_overrides(num_frames=rotated_frames, step=data["step_deg"] * speed, config=config)
    if "step_px" in data:
        return ex.data_overrides(num_frames=max(3, round(TRANSLATED_SPAN / speed)), step=data["step_px"] * speed,
                                 config=config)
    raise InputError(f"{config}: its videos have no motion step (step_deg or step_px) to play at another speed")


def cell_id(r: Mapping) -> tuple:
    """The slot of a cell: profile, method, speed and checkpoint (one row each in the CSV)."""
    return (str(r["profile"]), str(r["method"]), f"{float(r['speed']):g}", str(r.get("checkpoint_sha256", "")))


def cell_key(slot: tuple, settings: Mapping, videos: str, trials: int, seed: int) -> tuple:
    """What a cell was computed from: its slot, settings, videos, trials and seed (a rerun reuses only an equal one)."""
    return slot + (json.dumps(settings, sort_keys=True), str(videos), int(trials), int(seed))


def row_key(r: Mapping) -> tuple:
    """`cell_key` of a CSV row."""
    return cell_key(cell_id(r), settings_of(r), r["videos"], value(r, "trials"), value(r, "seed"))


def markdown(rows: Sequence[Mapping], speeds: Sequence[float], title: str) -> str:
    """Per (profile, method): speed ratio (median over videos) and open-end / cut DTW-SSID at each speed, each the
    mean ± std over checkpoints."""
    def pm(x: Mapping, key: str) -> str:
        m, s = x[f"{key}_mean"] if key != "speed_ratio_median" else x[key], x.get(f"{key}_std", math.nan)
        if math.isnan(m):
            return "—"
        return f"{m:.2f}" if key == "speed_ratio_median" else f"{m:.3f}" + ("" if math.isnan(s) else f" ± {s:.3f}")

    md = [f"# {title}", "", "Per speed: speed ratio (median over videos and trials; 1 = the video's pace) · open-end "
          "DTW-SSID · cut DTW-SSID; mean (± std) over checkpoints (training seeds). † rollouts diverged; "
          "stalled: ratio under 0.5.", "",
          "| profile | method | " + " | ".join(f"{s:g}x" for s in speeds) + " | checkpoints |",
          "|---|---|" + "---|" * len(speeds) + "---|"]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["profile"], r["method"]), []).append(r)
    for (profile, _), mine in groups.items():
        cells, n = [], set()
        for s in speeds:
            at = [r for r in mine if math.isclose(float(r["speed"]), s)]
            if not at:
                cells.append("")
                continue
            c = combine(at)
            ratios = [value(r, "speed_ratio_median") for r in at]
            ok = [x for x in ratios if not math.isnan(x)]
            ratio = f"{sum(ok) / len(ok):.2f}" if ok else "—"
            if len(ok) > 1:
                ratio += f" ± {math.sqrt(sum((x - sum(ok) / len(ok)) ** 2 for x in ok) / (len(ok) - 1)):.2f}"
            flags = (" †" if c["diverged_rollouts"] else "") + (f", {c['stalled']:.0%} stalled" if c["stalled"] else "")
            cells.append(f"{ratio} · {pm(c, 'open_end')} · {pm(c, 'cut')}{flags}")
            n.add(len(at))
        md.append(f"| {profile} | {mine[0]['label']} | " + " | ".join(cells) + f" | {max(n) if n else 0} |")
    return "\n".join(md) + "\n"


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    p = ex.ArgumentParser(prog="python -m scripts.speed_shift", description=__doc__,
                          formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="rot or trans (a config with a motion step)")
    p.add_argument("--ckpt", action="append", default=[], metavar="EXPERIMENT=PATH",
                   help="a checkpoint (file or run folder) of the dataset's denoiser (rot=...) or VAE (vae_rot=...); "
                        "repeat for training-seed replicates")
    p.add_argument("--profiles", nargs="+", default=["paper", "selected"])
    p.add_argument("--methods", nargs="+", default=None, help="only these methods (default: every method of the profiles)")
    p.add_argument("--speeds", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rotated-frames", type=int, default=ROTATED_FRAMES)
    p.add_argument("--indices", default=None, help="other MNIST digits, e.g. 10..19 (the selection videos)")
    p.add_argument("--data-dir", default=None, help="MNIST folder, for --indices >= 10")
    p.add_argument("--configs", type=Path, default=ex.CONFIGS)
    p.add_argument("--out", type=Path, default=None, help="output stem (default results/speed_shift_<dataset>)")
    p.add_argument("--accelerator", default="auto")
    args = p.parse_args(argv)
    if args.trials < 1 or any(not (s > 0 and math.isfinite(s)) for s in args.speeds):
        raise InputError(f"--trials must be >= 1 and --speeds positive, got {args.trials} and {args.speeds}")
    from extrapolation import evaluate, load_settings

    config = ex.config_path(args.configs / f"{args.dataset}.yaml")
    settings_path = ex.settings_file(config)
    methods = {(prof, n): m for prof in args.profiles for n, m in load_settings(settings_path, prof).items()
               if args.methods is None or n in args.methods}
    if not methods:
        raise InputError(f"no method of {args.methods} in the profiles {args.profiles} of {settings_path}")
    given: dict[str, list[dict]] = {}
    for experiment, path in ex.parse_assignments(args.ckpt):
        kind = "vae" if experiment.startswith("vae_") else "denoiser"
        given.setdefault(experiment, []).append(ex.checkpoint_provenance(path, kind))
    out = args.out or Path("results") / f"speed_shift_{args.dataset}"
    csv_path, md_path = out.with_suffix(".csv"), out.with_suffix(".md")
    rows = ex.read_csv(csv_path) if csv_path.exists() else []
    done = {row_key(r) for r in rows}
    device = ex.device(args.accelerator)
    loaded: dict[str, object] = {}
    commit = ex.commit()  # of the code this process loaded, not of the checkout when a long cell ends
    for speed in args.speeds:
        overrides = ex.data_overrides(args.indices, args.data_dir) + speed_overrides(config, speed, args.rotated_frames)
        videos = ex.load_datamodule(config, overrides).videos.float().to(device)
        for (profile, name), method in methods.items():
            experiment = ex.experiment_of(method, args.dataset)
            ckpts = given.get(experiment, []) if experiment else [None]
            if experiment and not ckpts:
                ex.log(f"{profile}/{name}: no --ckpt {experiment}=...; skipped")
                continue
            for ckpt in ckpts:
                slot = (profile, name, f"{speed:g}", ckpt["sha256"] if ckpt else "")
                key = cell_key(slot, ex.strict(method.settings()), " ".join(overrides), args.trials, args.seed)
                if key in done:
                    continue
                rows = [r for r in rows if cell_id(r) != slot]  # an older cell of this slot (other settings) goes
                if ckpt is not None and ckpt["path"] not in loaded:
                    loaded[ckpt["path"]] = ex.load_models(**{ex.checkpoint_kind(method): ckpt["path"]}, device=device)
                models = loaded[ckpt["path"]] if ckpt else ex.load_models()
                method.check_frame(videos[0, 0].numel())
                res = evaluate(models, videos, method, args.trials, args.seed)
                r = flat(row(method, res, profile=profile, dataset=args.dataset, speed=speed, videos=" ".join(overrides),
                             checkpoint=ckpt, seed=args.seed, commit=commit, machine=ex.machine(),
                             date=ex.today()))
                r.pop("per_video", None), r.pop("per_video_cut", None)
                rows.append(r)
                ex.write_csv_atomic(csv_path, rows)
                ex.log(f"{speed:g}x {profile}/{name}: speed ratio {value(r, 'speed_ratio_median'):.2f}, open-end "
                       f"{value(r, 'open_end_mean'):.3f}, cut {value(r, 'cut_mean'):.3f}, diverged "
                       f"{value(r, 'diverged'):.0%} ({res.seconds:.0f} s)")
    ex.write_text_atomic(md_path, markdown(rows, args.speeds, f"Speed shift, {args.dataset}: `python -m "
                                            f"scripts.speed_shift --dataset {args.dataset}` ({ex.today()})"))
    ex.log(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
