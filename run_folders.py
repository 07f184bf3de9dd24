"""Run folders and checkpoints: one version folder per run, one meaning of "last".

An experiment is a folder such as `runs/rot`: `runs/<experiment>`, from the config key `experiment`.
Every run of `train.py` gets its own `version_N` inside it, created atomically (`os.mkdir`), so runs started
together never share one. Everything a run writes lies in that folder:

    runs/<experiment>/version_N/
        config.yaml  hparams.yaml  metrics.csv    (CSVLogger, LightningCLI)
        checkpoints/last.ckpt, epoch=E-step=S.ckpt
        media/  predictions/  test_dtw_ssid_per_video.csv
        wandb/offline-run-*                       (WandbLogger)

`resolve_checkpoint` gives "last" its one meaning: the newest complete checkpoint file of an experiment,
whichever run wrote it. `train.py {fit,test,validate,predict} --ckpt_path last` and settings such as the
extrapolation callback's `vae_checkpoint: runs/vae_rot` all resolve through it.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from errors import InputError, MissingInputError

RUNS = Path("runs")  # every experiment: runs/<experiment>, relative to where train.py runs
VERSION = re.compile(r"^version_(\d+)$")
# set by the process that chose the version folder, read by the DDP processes it launches
RUN_DIR_ENV = "MANIFOLD_EXTRAPOLATION_RUN_DIR"


def version_dirs(experiment: str | Path) -> list[Path]:
    """`version_N` folders of an experiment, by N."""
    experiment = Path(experiment)
    if not experiment.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in experiment.iterdir() if (m := VERSION.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def new_version_dir(experiment: str | Path) -> Path:
    """Create and return the next `version_N` folder of `experiment`.

    `os.mkdir` either creates the folder or fails because it exists, so two runs started at the same
    moment get different folders; neither ever writes into a folder it did not create."""
    experiment = Path(experiment)
    experiment.mkdir(parents=True, exist_ok=True)
    dirs = version_dirs(experiment)
    n = int(VERSION.match(dirs[-1].name).group(1)) + 1 if dirs else 0
    while True:
        path = experiment / f"version_{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def is_complete(path: str | Path) -> bool:
    """Whether `path` is a whole PyTorch checkpoint file (a zip archive with its `data.pkl`).

    A truncated file has no zip directory at its end; another kind of file is no zip at all."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("data.pkl") for name in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def checkpoint_files(folder: str | Path) -> list[Path]:
    """`*.ckpt` files of an experiment, a run or a checkpoints folder: `folder/*.ckpt`,
    `folder/checkpoints/*.ckpt` (also the layout before version folders held checkpoints) and
    `folder/version_*/checkpoints/*.ckpt`."""
    folder = Path(folder)
    dirs = [folder, folder / "checkpoints"] + [v / "checkpoints" for v in version_dirs(folder)]
    return [f for d in dirs if d.is_dir() for f in d.glob("*.ckpt") if f.is_file()]


def newest_checkpoint(folder: str | Path, exclude: str | Path | None = None) -> Path | None:
    """The most recently written complete checkpoint under `folder` (see `checkpoint_files`), or None."""
    files = sorted(checkpoint_files(folder), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    if exclude is not None:
        files = [f for f in files if f.resolve() != Path(exclude).resolve()]
    return next((f for f in files if is_complete(f)), None)


def read_checkpoint(path: str | Path) -> dict | None:
    """The contents of a complete Lightning checkpoint, tensors memory-mapped (they stay on disk): its
    `state_dict`, `hyper_parameters` (a LightningCLI checkpoint records the module's class as `_class_path`),
    `datamodule_hyper_parameters`, `epoch` ... None when the file is complete but holds objects beyond
    tensors and containers (`torch.load(weights_only=True)` refuses those). `InputError` if `path` is not a
    complete Lightning checkpoint; the message of a broken file names the newest complete one beside it."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path}: no such file")

    def broken(why: str) -> InputError:
        beside = newest_checkpoint(path.parent, exclude=path)
        hint = f"; the newest complete checkpoint beside it is {beside}" if beside else ""
        return InputError(f"{path} is not a usable checkpoint ({why}){hint}")

    if not is_complete(path):
        raise broken("truncated, or not a PyTorch checkpoint file")
    import pickle

    import torch

    try:  # mmap: tensors stay on disk, only the small metadata is read
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e):  # complete, but holds objects beyond tensors and containers
            return None
        raise broken(f"cannot be read: {str(e).splitlines()[0]}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise broken(f"cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    missing = [k for k in ("state_dict", "pytorch-lightning_version") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise broken(f"a PyTorch file, but no Lightning checkpoint: it has no {' or '.join(missing)}")
    return ckpt


def checkpoint_info(path: str | Path) -> dict:
    """`{"epoch", "global_step"}` of a Lightning checkpoint; `InputError` if `path` is not a complete one
    (see `read_checkpoint`)."""
    ckpt = read_checkpoint(path)
    if ckpt is None:
        return {"epoch": None, "global_step": None}
    return {"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}


def recorded_class(hparams: dict | None) -> str | None:
    """The class path a checkpoint records for its module or datamodule: LightningCLI saves it in the
    hyper-parameters as `_class_path`; else None."""
    return (hparams or {}).get("_class_path")


def run_of(path: str | Path) -> str:
    """`runs/rot/version_3/checkpoints/last.ckpt` -> `runs/rot/version_3` (the folder of the run that wrote it)."""
    path = Path(path)
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return str(parent)


def describe(path: str | Path, info: dict | None = None) -> str:
    """`<file> (run <folder>, epoch E, step S)` for the line a run prints about what it loaded."""
    info = checkpoint_info(path) if info is None else info
    epoch, step = info.get("epoch"), info.get("global_step")
    stamp = f", epoch {epoch}, step {step}" if epoch is not None else ""
    return f"{path} (run {run_of(path)}{stamp})"


def resolve_checkpoint(spec: str | Path, experiment_dir: str | Path | None = None,
                       setting: str = "checkpoint") -> Path:
    """The checkpoint file that `spec` names.

    - `"last"`: the newest complete checkpoint of `experiment_dir` (any of its runs);
    - a folder (an experiment such as `runs/vae_rot`, one of its `version_N` runs, or a checkpoints folder):
      the newest complete checkpoint in it;
    - a file: that file, if it is a complete Lightning checkpoint.
    Raises `MissingInputError` when nothing is found and `InputError` for a file that is not a complete
    checkpoint; the message starts with `setting` and says what was looked for where."""
    spec = str(spec)
    if spec == "last":
        if experiment_dir is None:
            raise InputError(f"{setting} last: no experiment folder to look in (the config has no CSVLogger)")
        found = newest_checkpoint(experiment_dir)
        if found is None:
            raise MissingInputError(
                f"{setting} last: no complete checkpoint in {experiment_dir}/version_*/checkpoints/ "
                f"({_where(experiment_dir)}); train one first with `train.py fit` and the same config")
        return found
    path = Path(spec)
    if path.is_dir():
        found = newest_checkpoint(path)
        if found is None:
            raise MissingInputError(f"{setting} {spec}: no complete checkpoint (*.ckpt) in {path}, "
                                    f"{path}/checkpoints/ or {path}/version_*/checkpoints/ ({_where(path)})")
        return found
    if not path.exists():
        raise MissingInputError(f"{setting} {spec}: no such checkpoint file or experiment folder ({_where(path)})")
    try:
        checkpoint_info(path)  # complete and a Lightning checkpoint, or one clear error
    except InputError as e:
        raise type(e)(f"{setting}: {e}") from None
    return path


def _where(path: str | Path) -> str:
    path = Path(path)
    return f"absolute path {path}" if path.is_absolute() else f"relative to {Path.cwd()}"
