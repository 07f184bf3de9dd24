"""Training throughput of each config, fp32 against the default precision side by side, and its fit time here.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_training [--seconds 4] [--data-dir <Weizmann folder>]
    python -m benchmarks.bench_training --converge        # also train configs/rot.yaml to the end and test it

For each config (the rotated, translated and Weizmann denoisers, the rotated and Weizmann VAEs) the module, its
training frames and its epochs come from the config itself (`experiments.build`, as `train.py fit` builds them).
One training step is forward + loss + backward + Adam step on a batch of real training frames, timed for
`--seconds` after one warm-up step:
- *fp32*: no autocast, contiguous memory;
- *default*: what training runs: the config's `trainer.precision` (`bf16-mixed` in configs/base.yaml: bfloat16
  autocast around forward and loss, on the CPU too) and the module's `channels_last` (network and batches in
  channels-last memory).
Printed per config: images/s of both, their ratio, and the estimated wall time of the config's whole fit on this
machine at the default (training frames per epoch x max_epochs / images/s; no validation, rollouts or data loading).
MNIST runs on the bundled digits; Weizmann needs its folder (`--data-dir`, else `WEIZMANN_DIR` / data/weizmann) and
is skipped with a note without it. The batch is the config's, capped by `--max-batch` to keep the run short.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import experiments as ex
from errors import InputError

CONFIGS = ("rot", "trans", "weizmann", "vae_rot", "vae_weizmann")


def autocast_dtype(precision) -> str | None:
    """The autocast dtype of a Lightning `trainer.precision` ("bf16-mixed" -> "bfloat16"), None for full precision."""
    precision = str(precision)
    if "mixed" not in precision:
        return None
    return "bfloat16" if precision.startswith("bf16") else "float16"


def throughput(module, frames, seconds: float, dtype: str | None, channels_last: bool) -> float:
    """Images/s of forward + loss + backward + Adam step on the batch `frames` (no data loading, no logging)."""
    import torch

    from lightning_modules import to_memory_format

    if channels_last:
        module.network.to(memory_format=torch.channels_last)
    x = to_memory_format(frames, channels_last)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    module.train()

    def step():
        cast = torch.autocast("cpu", dtype=getattr(torch, dtype)) if dtype else contextlib.nullcontext()
        with cast:
            loss = module.loss(x)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: kernel selection, allocations
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < seconds:
        step()
        n += len(x)
    return n / (time.perf_counter() - start)


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def bench(name: str, args) -> str:
    """One config's line of the table (or a note why it was skipped)."""
    config = ex.config_path(args.configs_dir / f"{name}.yaml")
    reads_folder = ex.load_config(config).data.init_args.get("data_dir") is not None
    overrides = ex.data_overrides(data_dir=args.data_dir) if args.data_dir and reads_folder else []
    try:
        model, dm, cfg = ex.build(config, overrides)
        dm.prepare_data()
        dm.setup("fit")
    except InputError as err:
        return f"{name:14s} skipped: {ex.one_line(err)} (pass --data-dir)"
    frames = dm.train_set.frames
    batch = min(cfg.data.init_args.batch_size, args.max_batch or 10 ** 9)
    x = frames[:batch].float()
    dtype = autocast_dtype(cfg.trainer.precision)
    channels_last = bool(model.hparams.get("channels_last", False))
    fp32 = throughput(copy.deepcopy(model), x, args.seconds, None, False)
    default = throughput(model, x, args.seconds, dtype, channels_last)
    epochs = cfg.trainer.max_epochs
    fit = len(frames) * epochs / default
    params = sum(p.numel() for p in model.parameters()) / 1e6
    mode = f"{dtype or 'fp32'}{' + channels-last' if channels_last else ''}"
    return (f"{name:14s} {'x'.join(map(str, frames.shape[1:])):9s} {batch:5d} {params:7.2f} {fp32:9.1f} {default:9.1f} "
            f"{default / fp32:6.2f} {len(frames):7d} {epochs:6d} {duration(fit):>9s}  {mode}")


def converge(config: str) -> None:
    start = time.perf_counter()
    train = str(ex.ROOT / "train.py")
    subprocess.run([sys.executable, train, "fit", "--config", config], check=True)
    fit_s = time.perf_counter() - start
    out = subprocess.run([sys.executable, train, "test", "--config", config, "--ckpt_path", "last"],
                         check=True, capture_output=True, text=True).stdout
    print(out)
    print(f"{config}: fit {fit_s / 60:.1f} min (test metrics above: test/psnr_15, test/psnr_25, test/psnr_50)")


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    import torch

    p = ex.ArgumentParser(prog="python -m benchmarks.bench_training", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement (after one warm-up step)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="experiment configs under --configs-dir")
    p.add_argument("--configs-dir", type=Path, default=ex.CONFIGS)
    p.add_argument("--data-dir", default=None, help="Weizmann folder (default: WEIZMANN_DIR, else data/weizmann)")
    p.add_argument("--max-batch", type=int, default=16, help="cap on the config's batch (0: the config's batch)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--converge", action="store_true", help="train configs/rot.yaml to the end and test it")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"{ex.today()}, {ex.machine()}, commit {ex.commit()}")
    print(f"images/s of one training step (forward, loss, backward, Adam), {a.seconds:g} s each after a warm-up step; "
          f"fit: frames/epoch x epochs / default images/s")
    print(f"{'config':14s} {'frame':9s} {'batch':>5s} {'M par':>7s} {'fp32':>9s} {'default':>9s} {'ratio':>6s} "
          f"{'frames':>7s} {'epochs':>6s} {'fit':>9s}  default", flush=True)
    for name in a.configs:
        print(bench(name, a), flush=True)
    if a.converge:
        converge(str(ex.CONFIGS / "rot.yaml"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
