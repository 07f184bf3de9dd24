"""Loss weighting: fine-tune one denoiser checkpoint with eq. 2 and with inverse-variance weighting, same steps.

    python -m benchmarks.bench_loss_weighting --config configs/weizmann.yaml \\
        --ckpt runs/archive/weizmann_small_sigma3/checkpoints/last.ckpt --steps 500 --floor 3 --sigmas 1 3 5 10 25

Both runs start from the checkpoint's weights and see the same batches and noise (Adam at --lr, cosine decay to 0).
Prints, side by side, the PSNR of the dataset's denoised ground-truth frames at each noise level (--sigmas, in
units of 1/255) and the DTW-SSID of the linear rollout (Alg. 2, `extrapolation.evaluate`, one trial) at the steps
and step size of --profile in the dataset's settings file, at each noise level. The network comes from the
checkpoint, the data from --config.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import experiments as ex


@ex.script
def main(argv: Sequence[str] | None = None) -> int:
    parser = ex.ArgumentParser(prog="python -m benchmarks.bench_loss_weighting", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="experiment config (its data and extrapolation settings)")
    parser.add_argument("--ckpt", type=Path, required=True, help="denoiser checkpoint to start both runs from")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--floor", type=float, default=3, help="sigma_floor of the inverse-variance run, in 1/255")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1, 3, 5, 10, 25], help="in units of 1/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="selected",
                        help="profile of the settings file for the rollouts' steps and eta")
    parser.add_argument("--method", default="linear", help="the rollout method scored at each noise level")
    args = parser.parse_args(argv)

    import torch

    from extrapolation import Models, evaluate, load_settings
    from lightning_modules import InverseVarianceNoiseLoss, NoiseLoss, psnr

    dm = ex.load_datamodule(args.config, stage="fit")
    frames, videos = dm.train_set.frames.float(), dm.videos.float()
    methods = load_settings(ex.settings_file(args.config), args.profile)
    if args.method not in methods:
        parser.error(f"--method {args.method}: not in the {args.profile!r} profile of {ex.settings_file(args.config)} "
                     f"(it has {', '.join(methods)}); give --profile")
    rollout = methods[args.method]

    results = {}
    losses = {"none": NoiseLoss(), "inverse_variance": InverseVarianceNoiseLoss(args.floor / 255)}
    for weighting, noise_loss in losses.items():
        module = ex.load_module(args.ckpt, "denoiser", noise_loss=noise_loss)
        opt = torch.optim.Adam(module.parameters(), lr=args.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
        torch.manual_seed(args.seed)  # same batches and noise for both weightings
        module.train()
        tic = time.perf_counter()
        for _ in range(args.steps):
            batch = frames[torch.randint(len(frames), (args.batch_size,))]
            loss, _ = module.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        module.eval()
        gt = videos.flatten(0, 1)
        gen = torch.Generator().manual_seed(args.seed)
        base = torch.randn(gt.shape, generator=gen)
        row = {}
        with torch.no_grad():
            for s in args.sigmas:
                row[f"psnr {s:g}"] = psnr(module.denoise(gt + s / 255 * base), gt).item()
        for s in args.sigmas:
            res = evaluate(Models(denoise=module.denoise), videos, rollout.override(sigma=s / 255), seed=args.seed)
            row[f"{args.method} DTW-SSID {s:g}"] = res.summary()["whole_mean"]
        row["seconds"] = time.perf_counter() - tic
        results[weighting] = row
        print(f"{weighting}: fine-tuned {args.steps} steps and evaluated in {row['seconds']:.0f} s", flush=True)

    print(f"\n{args.ckpt} fine-tuned {args.steps} steps (batch {args.batch_size}, lr {args.lr:g}, cosine), "
          f"inverse-variance floor {args.floor:g}/255; {args.method} rollouts: {rollout.steps} steps, "
          f"eta {getattr(rollout, 'eta', '')} ({args.profile})")
    print(f"{'':24s}{'eq. 2':>10s}{'inv. var.':>12s}{'difference':>12s}")
    for key in results["none"]:
        if key == "seconds":
            continue
        a, b = results["none"][key], results["inverse_variance"][key]
        unit = " dB" if key.startswith("psnr") else ""
        print(f"{key + '/255':24s}{a:10.3f}{b:12.3f}{b - a:+12.3f}{unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
