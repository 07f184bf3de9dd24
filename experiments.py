"""The experiment library that `scripts/` and `benchmarks/` share; each piece lives here once.

- config -> data: `load_config`, `build`, `load_datamodule`, `data_overrides` (config overrides that select other
  videos), `settings_file` (the config's extrapolation settings file);
- checkpoint -> models: `load_module`, `load_models` (-> `extrapolation.Models`), `checkpoint_provenance` (path,
  sha256, module class, epoch, training seed) and `experiment_of` (which trained experiment a method needs);
- the device policy (`device`), provenance (`commit`, `machine`, `today`);
- files: `write_json_atomic`, `read_json`, `write_csv_atomic`;
- command lines: `ArgumentParser` (its errors are `InputError`s), `script` (a `main` that prints one `error:` line
  and returns 2 for a mistake in the user's input), `parse_assignments` (`EXPERIMENT=PATH` options), `log`.

Relative paths (outputs, `runs/`, data folders) are relative to the caller's working directory; the configs and
settings files are found in the checkout wherever the caller runs.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from errors import InputError, MissingInputError

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
# `extrapolation.Models` fields -> the kind of checkpoint that provides them; kind -> its experiment per dataset
NEEDS = {"denoise": "denoiser", "encode": "vae", "decode": "vae"}
EXPERIMENTS = {"denoiser": "{dataset}", "vae": "vae_{dataset}"}
# Longer Weizmann clips that Table 1 also scores (`reproduce_table1 --clip-length 16`): selection clips avoid them
SCORED_CLIP_LENGTHS = (16,)


# ------------------------------------------------------------------------------------------- command lines
class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one-line `InputError`s (see `script`)."""

    def error(self, message: str):
        raise InputError(message)


def script(main: Callable[[Sequence[str] | None], int | None]) -> Callable[[Sequence[str] | None], int]:
    """Decorate a script's `main(argv)`: a mistake in the user's input (`InputError`) prints one `error: ...` line
    to stderr and returns 2 (no traceback); otherwise it returns main's status (0 for None)."""
    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except InputError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2

    return wrapped


def one_line(err: BaseException) -> str:
    return re.sub(r"\s*\n\s*", " ", str(err)).strip()


def parse_assignments(specs: Iterable[str], option: str = "--ckpt") -> list[tuple[str, str]]:
    """['rot=a.ckpt', 'rot=b.ckpt'] -> [('rot', 'a.ckpt'), ('rot', 'b.ckpt')]; one-line error without `=PATH`."""
    out = []
    for spec in specs:
        name, sep, value = str(spec).partition("=")
        if not sep or not name or not value:
            raise InputError(f"{option} {spec}: expected EXPERIMENT=PATH, e.g. {option} rot=runs/rot/version_0")
        out.append((name, value))
    return out


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- configs and data
def config_path(config: str | Path) -> Path:
    """`rot` -> configs/rot.yaml of the checkout; a path as given (one-line error if it does not exist)."""
    path = Path(config)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = CONFIGS / f"{config}.yaml"
    if not path.is_file():
        raise MissingInputError(f"config {config}: no such file ({path})")
    return path


def load_config(config: str | Path, overrides: Sequence[str] = ()):
    """The parsed config (`cli.load_config`) of `config` with `overrides`; nothing is built."""
    import cli

    return cli.load_config(["--config", str(config_path(config)), *overrides])


def build(config: str | Path, overrides: Sequence[str] = ()):
    """(model, datamodule, parsed config) of `config` with `overrides`, built as `train.py fit` would build them
    (`train.main(run=False)`: no run folder, no logger); the datamodule is not set up."""
    import train

    args = ["--config", str(config_path(config)), "--trainer.logger=false", *overrides]
    with warnings.catch_warnings():  # LightningCLI warns when the caller has a command line of its own
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
        built = train.main(args=args, run=False)
    return built.model, built.datamodule, built.config


def load_datamodule(config: str | Path, overrides: Sequence[str] = (), stage: str = "test"):
    """The config's datamodule (with `overrides`, e.g. `data_overrides(...)`), prepared and set up for `stage`."""
    _, dm, _ = build(config, overrides)
    dm.prepare_data()
    dm.setup(stage)
    return dm


def data_overrides(indices: str | Sequence[int] | None = None, data_dir: str | Path | None = None,
                   clip_start: int | None = None, clip_length: int | None = None, num_frames: int | None = None,
                   step: float | None = None, *, config: str | Path | None = None, clips: str | None = None) -> list[str]:
    """Config overrides that select other videos: MNIST digits `indices` ('10..19', '0,3' or a list), Weizmann
    clips of `clip_length` frames from frame `clip_start`, `num_frames` per MNIST video, the motion per frame `step`
    (the dataset's `step_*` argument: degrees when rotated, pixels when translated; needs `config`), Weizmann's clip
    rule `clips` (e.g. "unscored") and the data folder (made absolute)."""
    out = [f"--data.init_args.clips={clips}"] if clips is not None else []  # num_clips: the config's scored count
    if indices is not None:
        out.append(f"--data.init_args.indices=[{','.join(map(str, index_list(indices)))}]")
    for name, value in (("clip_start", clip_start), ("clip_length", clip_length), ("num_frames", num_frames)):
        if value is not None:
            out.append(f"--data.init_args.{name}={int(value)}")
    if step is not None:
        if config is None:
            raise ValueError("data_overrides(step=...) needs the config: the argument's name depends on the dataset")
        names = [k for k in load_config(config).data.init_args.keys() if k.startswith("step_")]
        if len(names) != 1:
            raise InputError(f"{config}: its videos have no motion step to override (data arguments step_*)")
        out.append(f"--data.init_args.{names[0]}={float(step)}")
    if data_dir is not None:  # absolute: rows name their videos the same however the folder was spelled
        out.append(f"--data.init_args.data_dir={Path(data_dir).resolve()}")
    return out


def index_list(indices: str | Sequence[int]) -> list[int]:
    """MNIST digits from '10..19', '10-19', '0,3,5' or a list; one-line error for anything else."""
    from datamodules import parse_indices

    try:
        return parse_indices(indices) if isinstance(indices, str) else [int(i) for i in indices]
    except (TypeError, ValueError):
        raise InputError(f"indices {indices!r}: expected digits such as 10..19, 10-19 or 0,3,5") from None


def data_settings(config: str | Path, overrides: Sequence[str] = ()) -> dict:
    """The config's data class and arguments with `overrides` applied (what selects the videos), as plain values."""
    data = load_config(config, overrides).data
    return json.loads(json.dumps({"class_path": data.class_path, "init_args": dict(data.init_args.as_dict())},
                                 default=str))


def experiment_folder(config: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Where `config`'s runs go, relative to the working directory: `runs/<experiment>` (`cli.experiment_folder`)."""
    import cli

    return cli.experiment_folder(load_config(config, overrides))


def settings_file(config: str | Path) -> Path:
    """The extrapolation settings file of `config`'s callback (`extrapolation.settings`, e.g.
    configs/extrapolation/rot.yaml)."""
    from callbacks.method_settings import settings_path

    return settings_path(load_config(config).extrapolation.settings).resolve()


# ------------------------------------------------------------------------------------------- checkpoints
MODULES = {"denoiser": "lightning_modules.DenoiserModule", "vae": "lightning_modules.VAEModule"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def _read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's metadata (tensors left on disk); one-line `InputError` for a missing or broken file."""
    import pickle

    import torch

    from run_folders import checkpoint_info

    checkpoint_info(path)  # a complete Lightning checkpoint, or one clear error
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # hyperparameters that are objects (checkpoints of old versions)
        return torch.load(path, map_location="cpu", weights_only=False)


def module_class(checkpoint: Mapping) -> str | None:
    """The class path of the LightningModule that wrote `checkpoint` (LightningCLI records it; otherwise it is
    inferred from the network it trained), or None when it cannot be told."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if hparams.get("_class_path"):
        return hparams["_class_path"]
    network = hparams.get("network")
    network = network.get("class_path", "") if isinstance(network, Mapping) else type(network).__name__
    kind = str(network).rsplit(".", 1)[-1]
    return {"UNet": MODULES["denoiser"], "VAE": MODULES["vae"]}.get(kind)


def training_seed(path: str | Path) -> int | None:
    """`seed_everything` of the run that wrote the checkpoint (the `config.yaml` LightningCLI writes into
    `runs/<exp>/version_N/`, the checkpoint lying in `version_N/checkpoints/`), None if absent."""
    import yaml

    path = Path(path)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = run / "config.yaml"
    if not config.is_file():
        return None
    try:
        seed = (yaml.safe_load(config.read_text()) or {}).get("seed_everything")
    except (yaml.YAMLError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def checkpoint_provenance(path: str | Path, kind: str | None = None) -> dict:
    """{path, sha256 (first 12 hex digits), module (class path), epoch, training_seed} of a checkpoint file or of
    the newest checkpoint in a run folder; one-line `InputError` for a missing or broken one, or for one of another
    module than `kind` ("denoiser" or "vae") when given."""
    from run_folders import resolve_checkpoint

    path = resolve_checkpoint(path, setting="checkpoint" if kind is None else f"{kind} checkpoint")
    stat = path.stat()
    ckpt = _read_checkpoint(path)
    found, wanted = module_class(ckpt), MODULES.get(kind)
    if kind is not None and found is not None and found != wanted:
        raise InputError(f"{kind} checkpoint {path} holds a {found.rsplit('.', 1)[-1]}, not a "
                         f"{wanted.rsplit('.', 1)[-1]}")
    return dict(path=str(path), sha256=_sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)[:12],
                module=found, epoch=ckpt.get("epoch"), training_seed=training_seed(path))


def load_module(path: str | Path, kind: str, device: Any = "cpu", **hparams):
    """The trained module of kind "denoiser" or "vae" in eval mode on `device` (`hparams` override the saved
    ones); a checkpoint of the other kind, a missing or broken file is a one-line `InputError`."""
    import importlib

    path = Path(checkpoint_provenance(path, kind)["path"])
    module_path, name = MODULES[kind].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_path), name)
    try:
        module = cls.load_from_checkpoint(path, map_location=device, **hparams)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{kind} checkpoint {path} cannot be loaded as a {name}: "
                         f"{one_line(err).split('. ')[0][:200]}") from err
    return module.eval()


def load_models(denoiser: str | Path | None = None, vae: str | Path | None = None, device: Any = "cpu"):
    """`extrapolation.Models` from a denoiser and/or a VAE checkpoint (files or run folders), in eval mode."""
    from extrapolation import Models

    models = Models()
    if denoiser is not None:
        models.denoise = load_module(denoiser, "denoiser", device).denoise
    if vae is not None:
        module = load_module(vae, "vae", device)
        models.encode, models.decode = module.encode, module.decode
    return models


def checkpoint_kind(method) -> str | None:
    """The kind of checkpoint ("denoiser" or "vae") whose models `method` needs (`Method.needs`), None for none."""
    kinds = {NEEDS[need] for need in type(method).needs}
    if len(kinds) > 1:
        raise ValueError(f"method {method.name!r} needs models of several checkpoints: {sorted(kinds)}")
    return kinds.pop() if kinds else None


def experiment_of(method, dataset: str) -> str | None:
    """The experiment (config name) that trains the checkpoint `method` needs on `dataset` (`rot` for a denoiser,
    `vae_rot` for a VAE), or None for a method that needs no model."""
    kind = checkpoint_kind(method)
    return None if kind is None else EXPERIMENTS[kind].format(dataset=dataset)


def describe_overrides(overrides: Sequence[str]) -> str:
    """['--data.init_args.indices=[10,11]'] -> 'indices=[10,11]'; 'config' for the config's own videos."""
    return " ".join(o.replace("--data.init_args.", "") for o in overrides) or "config"


def setting_text(key: str, value: Any) -> str:
    """One setting for tables and logs: `σ 25/255`, `eta 0.45`, `reencode true`, `step filter power 2`."""
    if key == "sigma" and isinstance(value, (int, float)):
        return f"σ {value * 255:.4g}/255"
    if isinstance(value, Mapping):
        return f"{key} " + " ".join([str(value.get("type", ""))] + [f"{k} {v}" for k, v in value.items() if k != "type"])
    return f"{key} {str(value).lower() if isinstance(value, bool) else value}"


def settings_text(settings: Mapping, skip: Sequence[str] = ("method",)) -> str:
    """A method's settings (`Method.settings()`) as `eta 0.45, σ 25/255, step filter power 2`."""
    return ", ".join(setting_text(k, v) for k, v in settings.items() if k not in skip)


# ------------------------------------------------------------------------------------------- device, provenance
def device(accelerator: str = "auto"):
    """The device rollouts run on: "auto" (a GPU when there is one, else the CPU), "cpu", "gpu"/"cuda" or "mps"."""
    import torch

    accelerator = str(accelerator).lower()
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"accelerator {accelerator}: no CUDA GPU on this machine (use auto or cpu)")
        return torch.device("cuda")
    if accelerator == "mps":
        if not torch.backends.mps.is_available():
            raise InputError("accelerator mps: not available on this machine (use auto or cpu)")
        return torch.device("mps")
    raise InputError(f"accelerator {accelerator!r}: expected auto, cpu, gpu, cuda or mps")


NOT_CODE = (":!results", ":!docs", ":(glob,exclude)**/*.md")  # changes that leave a run's numbers as they are


def commit() -> str:
    """The checkout's short commit, with "+uncommitted" when tracked files other than the tables under `results/` and
    the documentation (`docs/`, `*.md`) changed: those do not change what a run computes, and a run writes its tables
    there. `GIT_COMMIT` wins (a copy of the tree may carry a stale .git); "unknown" without git."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> str:
    """The GPU, or the CPU model with its cores and torch threads, and the torch version."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"


def today() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


# ------------------------------------------------------------------------------------------- files
def strict(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (strict JSON), tuples as lists, paths as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write strict JSON (NaN -> null) through a temporary file in the same folder and `os.replace`: a reader
    sees the old file or the new one, never half of one."""
    write_text_atomic(path, json.dumps(strict(obj), indent=1, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; a file that is not valid JSON is an `InputError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not valid JSON (not UTF-8 text)") from None


def write_csv_atomic(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()) -> None:
    """Rows as CSV (columns: `columns`, then every other key in order of appearance), atomically."""
    fields = list(dict.fromkeys([*columns, *(k for r in rows for k in r)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


__all__ = ["ArgumentParser", "script", "one_line", "parse_assignments", "log", "config_path", "load_config", "build",
           "load_datamodule", "experiment_folder", "data_overrides", "index_list", "write_text_atomic",
           "data_settings", "settings_file", "checkpoint_provenance", "load_module", "load_models", "module_class",
           "training_seed", "experiment_of", "device", "commit", "machine", "today", "strict", "write_json_atomic",
           "read_json", "write_csv_atomic", "read_csv", "NEEDS", "EXPERIMENTS", "checkpoint_kind",
           "describe_overrides", "setting_text", "settings_text", "SCORED_CLIP_LENGTHS", "ROOT", "CONFIGS"]
