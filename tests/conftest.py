import os

# One thread per process: on a small shared CPU, torch's default of one thread per core makes the
# small convolutions here ~10x slower. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def strips(tmp_path):
    """Synthetic Weizmann strips: RGB, 64x64 frames side by side, one folder per action."""
    rng = np.random.default_rng(0)
    root = tmp_path / "strips"
    for action in ("0", "1"):
        (root / action).mkdir(parents=True)
        for i in range(2):
            t = 12
            yy, xx = np.mgrid[:64, :64]
            frames = [(127 + 120 * np.sin((xx + 3 * k + 7 * i) / 6.0 + rng.uniform(0, 6, 3)[:, None, None]
                                          * (yy / 64.0))).transpose(1, 2, 0) for k in range(t)]
            strip = np.concatenate(frames, axis=1).astype(np.uint8)
            Image.fromarray(strip, "RGB").save(root / action / f"{i:08d}.png")
    return root
