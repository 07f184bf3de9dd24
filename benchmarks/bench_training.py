"""Training throughput (images/s) of the configured denoiser and VAE at each dataset's frame size.

    python benchmarks/bench_training.py                 # throughput only (about a minute)
    python benchmarks/bench_training.py --converge      # also train configs/rot.yaml to the end

Networks and batch sizes are read from the configs, so the figures follow the defaults. On a shared
CPU the figures are pessimistic. ``--converge`` runs ``train.py fit`` (output under runs/) and then
reports wall time and the held-out PSNR at 15/255, 25/255, 50/255.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli import load_config  # noqa: E402
from lightning_modules import DenoiserModule, VAEModule  # noqa: E402
from lightning_modules._common import build_network  # noqa: E402


def _from_config(name: str):
    cfg = load_config(["--config", ROOT / "configs" / name])
    init = cfg.model.init_args.as_dict()
    net = build_network(init.pop("network"))
    cls = VAEModule if cfg.model.class_path.endswith("VAEModule") else DenoiserModule
    return cls(net, **init), cfg.data.init_args.batch_size


def throughput(module, shape, batch: int, seconds: float) -> float:
    """Images/s of forward + backward + Adam step (no data loading, no logging)."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    x = torch.rand(batch, *shape)
    module.train()
    n, start, steps = 0, None, 0
    while True:
        loss = module.loss(x)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps == 2:  # warm-up
            start = time.perf_counter()
        elif steps > 2:
            n += batch
            if time.perf_counter() - start > seconds:
                return n / (time.perf_counter() - start)


def converge(config: str) -> None:
    start = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "fit", "--config", config], cwd=ROOT, check=True)
    fit_s = time.perf_counter() - start
    out = subprocess.run(
        [sys.executable, "train.py", "test", "--config", config, "--ckpt_path", "last"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    print(out)
    print(f"{config}: fit {fit_s / 60:.1f} min (test metrics above: test/psnr_15, test/psnr_25, test/psnr_50)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    p.add_argument("--converge", action="store_true", help="train configs/rot.yaml to the end and test it")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for config, shape in [
        ("rot.yaml", (1, 20, 20)), ("weizmann.yaml", (3, 64, 64)),
        ("vae_rot.yaml", (1, 20, 20)), ("vae_weizmann.yaml", (3, 64, 64)),
    ]:
        module, batch = _from_config(config)
        params = sum(p.numel() for p in module.parameters()) / 1e6
        ips = throughput(module, shape, batch, a.seconds)
        print(f"{config:18s} {'x'.join(map(str, shape)):8s} batch {batch:4d}  {params:6.2f} M params  {ips:8.1f} img/s")
    if a.converge:
        converge("configs/rot.yaml")


if __name__ == "__main__":
    main()
