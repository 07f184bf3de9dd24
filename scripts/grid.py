"""Grids of extrapolation settings: select each method's settings on videos that Table 1 never scores, or explore.

    python -m scripts.grid --dataset rot --denoiser CKPT [CKPT ...] [--vae CKPT ...] --indices 10..19 \\
        --data-dir ../shared/data/mnist [--trials 3] [--criterion cut] [--write]
    python -m scripts.grid --dataset weizmann --denoiser CKPT --data-dir DIR --clip-start 16 --methods tangent linear
    python -m scripts.grid --dataset rot --denoiser CKPT --indices 10..19 --data-dir DIR --methods linear \\
        --sigmas 5 10 --etas 1.5 1.8              # exploration: the product of the axes given

Selection (no axis given): each method's own grid (`Method.grid(paper)`) around the `paper` profile of the dataset's
settings file, keeping the rest of its `selected` settings (the tangent step). Exploration: the product of the axes
given (`--sigmas`, `--etas`, `--steps`, `--step`, `--reencode`, `--substeps`), each applied to the methods that have
that setting, around the `--profile` settings. Every cell is one `extrapolation.grid.row` (readings, divergence, the checkpoint's
path, sha256 and training seed, the commit) in the CSV `--out` (default results/grid_<dataset>.csv, rewritten after
each cell), the grids are drawn as markdown beside it (whole / cut / open-end per cell, winner in bold), the winner
of each method (`extrapolation.grid.select` on `--criterion`) is printed, and `--write` writes the winners into the
`selected` profile of the settings file (the other profiles, methods and comments kept).

Several checkpoints (`--denoiser A B C`, `--vae ...`: selection models of other training seeds) run every cell with
each checkpoint of the kind the method needs, and a method's winner is chosen on the mean over them
(`over_checkpoints`): a setting that fails on one model cannot win on another's luck.

Selection and `--write` refuse videos that Table 1 scores: MNIST selects on other digits (`--indices 10..19
--data-dir <MNIST folder>`), Weizmann on later clips of the same sequences (`--clip-start`, `--clip-length`): a
selection clip starts at or after the end of the longest scored clip (the config's clips and the 16-frame clips of
`reproduce_table1 --clip-length 16`).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import experiments as ex
from errors import InputError
from extrapolation.dtw import READINGS
from extrapolation.grid import combine, flat, run_grid, select, settings_of, value

SKIP = ("method", "steps")  # settings the printed lines leave out
COLUMNS = ["dataset", "videos", "method", "label", "step", "settings", "whole_mean", "whole_std", "cut_mean",
           "cut_std", "open_end_mean", "open_end_std", "coverage_mean", "speed_ratio_median", "stalled", "diverged",
           "median_video", "worst_video", "worst_video_index", "trials", "seed", "seconds", "applications"]


# ------------------------------------------------------------------------------------------- the videos
def selection_overlap(scored: Mapping[str, Any], indices: str | None, clip_start: int | None,
                      clip_length: int | None, clips: str | None = None) -> str | None:
    """Why selection videos would overlap the videos Table 1 scores (one line), or None. `scored`: the config's
    data arguments. Clips: every scored clip starts at the config's `clip_start` and is `clip_length` or one of
    `experiments.SCORED_CLIP_LENGTHS` frames long. Digits: the config's `indices`."""
    if clips == "unscored":  # other sequences than the scored clips' (WeizmannDataModule clips=unscored)
        return None
    if "clip_start" in scored and "clip_length" in scored:
        first, length = int(scored["clip_start"]), int(scored["clip_length"])
        start = first if clip_start is None else int(clip_start)
        size = length if clip_length is None else int(clip_length)
        lengths = sorted({length, *ex.SCORED_CLIP_LENGTHS})
        end = first + lengths[-1]
        if start < end and start + size > first:
            spans = ", ".join(f"{first}-{first + n - 1} ({n}-frame clips)" for n in lengths)
            return (f"selection clips of frames {start}-{start + size - 1} overlap the clips Table 1 scores "
                    f"(frames {spans}): start them at frame {end} or later (--clip-start {end}), or select on "
                    f"sequences the table never scores")
    if "indices" in scored:
        chosen = ex.index_list(indices) if indices is not None else list(scored["indices"])
        common = sorted(set(chosen) & set(scored["indices"]))
        if common:
            return (f"selection digits {common} are scored by Table 1 (the config's indices): select on others, "
                    f"e.g. --indices 10..19 --data-dir <folder with the MNIST IDX files>")
    return None


# ------------------------------------------------------------------------------------------- the points
def selection_points(paper: Mapping, selected: Mapping, names: Sequence[str], steps: int | None) -> dict:
    """{name: points}: each method's grid around its paper settings (a method the paper does not have: around its
    selected ones), keeping the rest of its selected settings."""
    out = {}
    for name in names:
        base = selected.get(name) or paper[name]
        out[name] = [p.with_overrides(steps=steps) for p in base.grid(paper.get(name))]
    return out


def exploration_points(base: Mapping, names: Sequence[str], axes: Mapping[str, list], steps: int | None) -> dict:
    """{name: points}: the product of the `axes` ({setting: values}) that a method has, around its `base` settings."""
    out = {}
    for name in names:
        method = base[name].with_overrides(steps=steps)
        fields = {f.name for f in dataclasses.fields(method)}
        mine = {k: v for k, v in axes.items() if v and k in fields}
        out[name] = [method.with_overrides(**dict(zip(mine, combo))) for combo in itertools.product(*mine.values())]
    return out


# ------------------------------------------------------------------------------------------- output
def over_checkpoints(rows: Sequence[Mapping]) -> list[dict]:
    """The rows of one method, one per setting (and videos, trials, seed): a setting run with several checkpoints
    (selection models of other training seeds) becomes their `combine`d row, mean ± std over checkpoints, each
    checkpoint's newest row once."""
    groups: dict[str, list] = {}
    for r in rows:
        key = json.dumps([settings_key(settings_of(r)), r.get("videos"), str(r.get("trials")), str(r.get("seed"))])
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        newest = list({r.get("checkpoint_sha256"): r for r in group}.values())  # a cell run twice counts once
        if len(newest) == 1:
            out.append(dict(newest[0]))
        else:
            out.append({**newest[0], **combine(newest)})
    return out


def grids_markdown(rows: Sequence[Mapping], paper: Mapping, criterion: str) -> str:
    """One grid per method: columns η, rows the other settings that vary; each cell whole / cut / open-end
    († where a rollout diverged; mean ± std over checkpoints where a setting ran with several), the winner
    (`select` on `criterion`) in bold, the paper's values marked."""
    md = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = over_checkpoints([r for r in rows if r["method"] == name])
        settings = [settings_of(r) for r in mine]
        try:
            best = select(mine, criterion)
        except ValueError:
            best = None
        ref = paper[name].settings() if name in paper else {}
        keys = [k for k in dict.fromkeys(k for s in settings for k in s)
                if k not in ("method", "eta") and len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]
        etas = sorted({s["eta"] for s in settings if "eta" in s})

        def mark(key, v, ref=ref):
            return " (paper)" if key in ref and json.dumps(ref[key], sort_keys=True) == json.dumps(v, sort_keys=True) \
                else ""

        cells: dict[str, dict] = {}
        for r, s in zip(mine, settings):
            spread = value(r, "checkpoints") > 1
            text = " / ".join("—" if math.isnan(value(r, f"{k}_mean")) else f"{value(r, f'{k}_mean'):.3f}"
                              + (f" ± {value(r, f'{k}_std'):.3f}" if spread else "")
                              for k in ("whole", "cut", "open_end"))
            text += " †" if value(r, "diverged") > 0 else ""
            label = ", ".join(ex.setting_text(k, s.get(k)) + mark(k, s.get(k)) for k in keys) or "settings"
            cells.setdefault(label, {})[s.get("eta")] = f"**{text}**" if r is best else text
        head = [f"η {e:g}" + mark("eta", e) for e in etas] or ["cell"]
        first, step = mine[0], {r.get("step") or "" for r in mine}
        models = max((int(value(r, "checkpoints")) for r in mine if value(r, "checkpoints") > 1), default=1)
        md += [f"**{name}**{', step ' + step.pop() if len(step) == 1 and first.get('step') else ''}: whole / cut / open-end "
               f"(† diverged), {first.get('trials')} trials, videos {first.get('videos')}"
               f"{f', mean ± std over {models} checkpoints' if models > 1 else ''}, winner by {criterion}", "",
               "| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        md += [f"| {label} | " + " | ".join(row.get(e, "") for e in (etas or [None])) + " |"
               for label, row in cells.items()]
        md.append("")
    return "\n".join(md)


def _flow(key: str, v: Any) -> str:
    """A setting as YAML flow text, as settings files write it (sigma as a fraction of 255)."""
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(k, x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    if key == "sigma" and isinstance(v, float):
        return f"{v * 255:.6g}/255"
    if isinstance(v, str) and not re.fullmatch(r"[A-Za-z_][\w.-]*", v):
        return json.dumps(v)
    return str(v)


def settings_line(method) -> str:
    """`  name: {...}`: a method's settings-file entry (its fields but the file-wide `steps`)."""
    s = {k: v for k, v in method.settings().items() if k not in ("method", "steps")}
    return f"  {method.name}: {_flow('', s)}"


def write_selected(path: Path, chosen: Mapping[str, Any]) -> None:
    """Replace the entries of the `chosen` methods in the `selected:` block of a settings file, keeping every other
    line (profiles, other methods, comments); add the block or an entry where there is none. Checked with
    `load_settings` before the file is replaced."""
    import yaml

    from extrapolation.settings import parse_profile

    lines = path.read_text().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^selected:", line)), None)
    if start is None:
        lines += ([] if not lines or lines[-1].endswith("\n") else ["\n"]) + ["selected:\n"]
        start = len(lines) - 1
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines after the block stay outside it
        end -= 1
    block, entries, i = lines[start + 1:end], {}, 0
    while i < len(block):
        m = re.match(r"^  ([A-Za-z_][\w-]*):", block[i])
        j = i + 1
        while j < len(block) and (re.match(r"^   ", block[j]) or not block[j].strip()):
            j += 1
        if m:
            entries[m.group(1)] = (i, j)
        i = j
    new_block = list(block)
    for name in sorted(chosen, key=lambda n: -entries.get(n, (len(block), 0))[0]):
        line = settings_line(chosen[name]) + "\n"
        if name in entries:
            a, b = entries[name]
            new_block[a:b] = [line]
        else:
            new_block.append(line)
    text = "".join(lines[:start + 1] + new_block + lines[end:])
    data = yaml.safe_load(text)
    parse_profile(data["selected"], data.get("steps"), where=f"{path} [selected]: ")  # never write a broken file
    ex.write_text_atomic(path, text)


def with_defaults(settings: Mapping, point) -> dict:
    """A row's settings with the plain fields it lacks at `point`'s class defaults: a row written before a setting
    existed ran that setting's default, the behaviour from before it was added."""
    out = dict(settings)
    if out.get("method") == point.name:
        for f in dataclasses.fields(point):
            if f.name not in out and isinstance(f.default, (bool, int, float, str)):
                out[f.name] = f.default
    return out


def settings_key(settings: Mapping) -> str:
    """Settings as canonical JSON: a CSV row's and a point's compare equal when they name the same cell."""
    return json.dumps(ex.strict(settings), sort_keys=True)


def same_cell(r: Mapping, point, checkpoint: Mapping | None, videos: str, args) -> bool:
    """Whether a CSV row is the cell `point` would compute: same settings (those the row lacks at their defaults),
    checkpoint, videos, trials and seed."""
    return (settings_key(with_defaults(settings_of(r), point)) == settings_key(point.settings())
            and r.get("checkpoint_sha256", "") == ((checkpoint or {}).get("sha256") or "")
            and r.get("videos") == videos and int(value(r, "trials")) == args.trials
            and int(value(r, "seed")) == args.seed)


# ------------------------------------------------------------------------------------------- main
def parser() -> ex.ArgumentParser:
    p = ex.ArgumentParser(prog="python -m scripts.grid", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="experiment config name under --configs, e.g. rot")
    p.add_argument("--configs", type=Path, default=ex.CONFIGS, help="folder of the experiment configs")
    p.add_argument("--settings", type=Path, default=None,
                   help="extrapolation settings file (default: the config's, configs/extrapolation/<dataset>.yaml)")
    p.add_argument("--denoiser", nargs="+", default=[], metavar="CKPT", help="denoiser checkpoints (files or run "
                   "folders), trained on the selection videos; several: the winner is chosen on their mean")
    p.add_argument("--vae", nargs="+", default=[], metavar="CKPT", help="VAE checkpoints, trained on the selection "
                   "videos; several: the winner is chosen on their mean")
    p.add_argument("--methods", nargs="+", default=None,
                   help="registered methods (default: the profile's, those with a checkpoint given)")
    p.add_argument("--indices", default=None, help="MNIST digits, e.g. 10..19 (selection digits)")
    p.add_argument("--data-dir", default=None, help="data folder (MNIST IDX files for --indices >= 10; Weizmann)")
    p.add_argument("--clip-start", type=int, default=None, help="Weizmann: first frame of the selection clips")
    p.add_argument("--clip-length", type=int, default=None,
                   help="Weizmann: frames per selection clip; every frame after the two given is generated")
    p.add_argument("--clips", default=None, choices=["unscored"],
                   help="Weizmann: clips of the sequences Table 1 never scores (WeizmannDataModule clips=unscored)")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--criterion", default="cut", choices=READINGS,
                   help="the reading the winner is chosen by (lowest mean over trials); whole: the older protocol")
    p.add_argument("--profile", default="selected", help="exploration: the settings the axes start from")
    p.add_argument("--sigmas", type=float, nargs="+", default=None, help="axis, in units of 1/255")
    p.add_argument("--etas", type=float, nargs="+", default=None, help="axis: step sizes")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="axis: frames generated after the two given")
    p.add_argument("--step", nargs="+", default=None, metavar="JSON",
                   help='axis: tangent steps, e.g. \'{"type": "eigen", "k": 2}\' \'{"type": "filter", "power": 2}\'')
    p.add_argument("--reencode", nargs="+", default=None, choices=["true", "false"], help="axis: VAE re-encoding")
    p.add_argument("--substeps", type=int, nargs="+", default=None, help="axis: paced methods' steps per frame")
    p.add_argument("--out", type=Path, default=None, help="CSV of the cells (default results/grid_<dataset>.csv, "
                   "relative to the working directory); the markdown grids go beside it")
    p.add_argument("--append", action="store_true", help="keep the CSV's rows of the methods not run this time")
    p.add_argument("--resume", action="store_true", help="reuse the CSV's cells of the same setting, checkpoint, "
                   "videos, trials and seed (an interrupted grid goes on; --write after a finished one computes nothing)")
    p.add_argument("--write", action="store_true", help="write the winners into the settings file's `selected`")
    p.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    p.add_argument("--batch-size", type=int, default=None, help="rollouts per batched call (numbers do not depend "
                   "on it)")
    return p


def axes_of(args) -> dict[str, list]:
    steps = []
    for spec in args.step or []:
        try:
            steps.append(json.loads(spec))
        except json.JSONDecodeError as err:
            raise InputError(f"--step {spec}: not JSON ({err.msg}); e.g. '{{\"type\": \"filter\", \"power\": 2}}'") \
                from None
    return {"sigma": [s / 255 for s in args.sigmas] if args.sigmas else None, "eta": args.etas, "steps": args.steps,
            "step": steps or None, "reencode": [r == "true" for r in args.reencode] if args.reencode else None,
            "substeps": args.substeps}


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from extrapolation import METHODS, load_settings

    args = parser().parse_args(argv)
    if args.trials < 1:
        raise InputError(f"--trials must be at least 1, got {args.trials}")
    config = ex.config_path(args.configs / f"{args.dataset}.yaml")
    settings_path = args.settings or ex.settings_file(config)
    paper, selected = load_settings(settings_path, "paper"), load_settings(settings_path, "selected")
    axes = axes_of(args)
    explore = any(axes.values())
    # selection: a method of the paper's, centred on its paper settings, or one of ours, centred on its selected ones
    base = load_settings(settings_path, args.profile) if explore else {**selected, **paper}
    unknown = [m for m in args.methods or [] if m not in METHODS]
    if unknown:
        raise InputError(f"--methods: unknown {unknown}; registered methods: {sorted(METHODS)}")
    missing = [m for m in args.methods or [] if m not in base]
    if missing:
        raise InputError(f"--methods {missing}: not in the {args.profile if explore else 'paper or selected'} "
                         f"profile of {settings_path}")
    given = {"denoiser": args.denoiser, "vae": args.vae}
    names = []
    for name in args.methods or [n for n, m in base.items() if type(m).selected_by_grid]:
        kind = ex.checkpoint_kind(base[name])
        if kind is not None and not given[kind] and args.methods:
            raise InputError(f"method {name} needs --{kind}")
        if kind is not None and not given[kind]:
            print(f"{name}: no --{kind} checkpoint; skipped")
            continue
        names.append(name)
    if not names:
        raise InputError("no method to run: pass --denoiser and/or --vae")

    overrides = ex.data_overrides(args.indices, args.data_dir, args.clip_start, args.clip_length, clips=args.clips)
    if not explore or args.write:  # the results choose settings: never on videos the table scores
        why = selection_overlap(ex.load_config(config).data.init_args, args.indices, args.clip_start,
                                args.clip_length, args.clips)
        if why:
            raise InputError(why)
    steps = args.clip_length - 2 if args.clip_length else None
    if explore:
        points = exploration_points(base, names, axes, steps)
    else:
        points = selection_points(paper, selected, names, steps)

    device = ex.device(args.accelerator)
    if device.type == "cpu":
        torch.set_num_threads(1)
    provenance = {k: [ex.checkpoint_provenance(v, k) for v in paths] for k, paths in given.items()}
    for kind, found in provenance.items():
        twice = sorted({c["path"] for c in found if sum(d["sha256"] == c["sha256"] for d in found) > 1})
        if twice:
            raise InputError(f"--{kind}: the same checkpoint given twice ({', '.join(map(str, twice))}); the mean "
                             f"over checkpoints needs different ones")
    dm = ex.load_datamodule(config, overrides)
    videos = dm.videos.float().to(device)
    for ps in points.values():  # every point checked before the first rollout
        for p in ps:
            p.check_frame(videos[0, 0].numel())

    out = args.out or Path("results") / f"grid_{args.dataset}.csv"
    earlier = ex.read_csv(out) if out.exists() and (args.append or args.resume) else []
    kept = [r for r in earlier if r.get("method") not in names] if args.append else []
    # --resume: the earlier cells of these methods stay in the file until this run reaches them (an interrupted
    # resumed run loses nothing)
    pending = [r for r in earlier if r.get("method") in names] if args.resume else []
    videos_label = ex.describe_overrides(overrides)
    context = dict(dataset=args.dataset, videos=videos_label, commit=ex.commit(), machine=ex.machine(),
                   date=ex.today())
    rows: list[dict] = []

    def on_row(r: dict, reused: bool = False) -> None:
        r = flat(r)  # a fresh row named like a CSV one (checkpoint_sha256), so over_checkpoints tells models apart
        rows.append(r)
        cost = "from the CSV" if reused else f"{value(r, 'seconds'):.1f} s"
        kind = ex.checkpoint_kind(points[r["method"]][0])
        total = len(points[r["method"]]) * max(len(provenance.get(kind) or []), 1)
        print(f"{r['method']} {sum(x['method'] == r['method'] for x in rows)}/{total}: "
              f"{ex.settings_text(settings_of(r), SKIP)}: whole {value(r, 'whole_mean'):.3f}, cut "
              f"{value(r, 'cut_mean'):.3f}, open-end {value(r, 'open_end_mean'):.3f}, diverged "
              f"{value(r, 'diverged'):.0%} ({cost})", flush=True)
        ex.write_csv_atomic(out, kept + rows + pending, COLUMNS)

    for i in range(max(1, *(len(v) for v in given.values()))):  # the i-th checkpoint of each kind together
        models = ex.load_models(given["denoiser"][i] if i < len(given["denoiser"]) else None,
                                given["vae"][i] if i < len(given["vae"]) else None, device)
        for name in names:
            kind = ex.checkpoint_kind(points[name][0])
            if (kind is None and i > 0) or (kind is not None and i >= len(given[kind])):
                continue
            checkpoint = provenance[kind][i] if kind else None
            for point in points[name]:
                same = [r for r in earlier if args.resume and same_cell(r, point, checkpoint, videos_label, args)]
                if same:
                    old = same[-1]
                    if old in pending:
                        pending.remove(old)
                    # written again with every setting named (a row from before a setting existed lacks it)
                    on_row({**old, "settings": json.dumps(ex.strict(point.settings()))}, reused=True)
                else:
                    run_grid([point], models, videos, args.trials, args.seed, on_row, batch_size=args.batch_size,
                             checkpoint=checkpoint, **context)
    all_rows = ex.read_csv(out)
    out.with_suffix(".md").write_text(grids_markdown(all_rows, paper, args.criterion))
    print(f"wrote {out} and {out.with_suffix('.md')}")

    winners, failed = {}, []
    for name in names:
        mine = over_checkpoints([r for r in rows if r["method"] == name])  # one row per point, over checkpoints
        try:
            best = select(mine, args.criterion)
        except ValueError as err:
            failed.append(str(err))
            continue
        winners[name] = next(p for p in points[name] if settings_key(p.settings()) == settings_key(settings_of(best)))
        over = value(best, "checkpoints")  # NaN for a one-checkpoint row
        print(f"{name}: selected {ex.settings_text(settings_of(best), SKIP)} by {args.criterion}"
              + (f" (mean over {int(over)} checkpoints)" if over > 1 else "") + ": "
              + ", ".join(f"{k} {value(best, f'{k}_mean'):.3f}" for k in ("whole", "cut", "open_end")))
    if failed:
        raise InputError("; ".join(failed))
    if args.write:
        write_selected(Path(settings_path), winners)
        print(f"updated the `selected` profile of {settings_path}: {', '.join(winners)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
