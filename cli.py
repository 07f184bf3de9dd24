"""`train.py`: LightningCLI with one run folder per run, checked checkpoints and one-line user errors.

- The config key `experiment` (configs/base.yaml: the dataset) names the experiment folder `runs/<experiment>/`.
  Every run (fit, validate, test, predict) gets its own `runs/<experiment>/version_N/`, created atomically
  (`run_folders.new_version_dir`); the CSV (or TensorBoard) logger, the W&B logger, the checkpoints
  (`version_N/checkpoints/`), the media and `trainer.default_root_dir` all point at it, whatever the config
  says (a run's saved `config.yaml` names its own folder: reused, it must not write there again).
- Configs compose: `configs/base.yaml` (what every experiment shares) comes first, then each `--config` and
  option. Values may name other keys of the same config (`${dataset}`: omegaconf, resolved after merging), and
  the extrapolation callback is the `extrapolation:` key, so a config overrides single settings of it.
- `--ckpt_path last` is the newest complete checkpoint of the experiment (`run_folders.resolve_checkpoint`);
  a folder names the newest checkpoint in it. The resolved file goes into the config, so Lightning loads it.
  `validate`, `test` and `predict` refuse to run without a checkpoint; `fit --ckpt_path last` with none yet
  starts from random weights and says so. The run prints which file, run and epoch it loaded.
- Before anything is built, the checkpoint is checked against the config: another model class, or a model
  option on the command line that contradicts it, is refused; another dataset or network (from a config file)
  is reported in a warning line (Lightning rebuilds the model from the checkpoint's hyper-parameters). Before
  the trainer runs, its weights are checked against the model built (`before_<subcommand>`).
- `predict --ckpt_path runs/rot/version_3` (or an experiment folder, or a checkpoint file) without `--config`
  reads the config of the run that wrote the checkpoint (its `config.yaml`) and `configs/predict.yaml`.
  The CLI hands the model's `input_shape()` to a datamodule with `set_input_shape` (FramePairsDataModule).
- The extrapolation callback's `vae_checkpoint` is resolved and checked at start-up; the VAE is loaded here and
  handed over with `callback.set_vae(module, path)` (a folder without a checkpoint yet: `latent` is skipped,
  with one warning).
- `run()` is the one place that turns errors into one line: an `errors.InputError` anywhere in the exception
  chain (exit 2); a write that failed for lack of space or permission (exit 1); SIGTERM (exit 143, after
  Lightning stopped at a batch boundary). Anything else keeps its traceback. After a user error the run
  folder it created is removed, unless it holds a checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import re
import shutil
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from callbacks import ExtrapolationCallback
from errors import InputError, MissingInputError
from run_folders import (
    RUN_DIR_ENV,
    RUNS,
    VERSION,
    checkpoint_info,
    describe,
    new_version_dir,
    newest_checkpoint,
    read_checkpoint,
    recorded_class,
    resolve_checkpoint,
    run_of,
)

NEEDS_WEIGHTS = ("validate", "test", "predict")
ROOT = Path(__file__).resolve().parent
BASE_CONFIG = ROOT / "configs" / "base.yaml"
PREDICT_CONFIG = ROOT / "configs" / "predict.yaml"
SIGTERM_EXIT = 128 + 15  # what a shell reports for a process ended by SIGTERM
# a write that failed for want of space, quota or permission: one line naming the path (exit 1)
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
# data options that do not change which frames a model sees
_LOADER_ARGS = {"batch_size", "num_workers"}
# `${dataset}` in a config file names the key `dataset` of the same config, also in a subcommand's config
set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
_QUIET = ("💡 Tip:", "Loading `train_dataloader` to estimate number of stepping batches")
_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # Lightning's console handler prints it


@rank_zero_only
def warn(message: str) -> None:
    """One `warning: ...` line on the console (Python's warnings print the source line too)."""
    _log.warning(f"warning: {message}")


def _quiet_first_screen() -> None:
    """Lightning's advertising tips and one of its info lines, and a deprecation warning Lightning itself
    triggers under recent torch: noise on the first screen of every run."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).lstrip().startswith(_QUIET)

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in log.filters):
            log.addFilter(_Drop())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # the CSVLogger finds the run folder that this CLI just created (holding config.yaml, wandb/): nothing to delete
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # every run checkpoints into its own folder, so a restored ModelCheckpoint always sees another dirpath
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")


# ---------------------------------------------------------------------- config helpers
def _entries(value: Any) -> list:
    """`trainer.logger` / `trainer.callbacks` as a list of `class_path` namespaces (none for bool / None)."""
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is(entry: Any, name: str) -> bool:
    return str(getattr(entry, "class_path", "") or "").split(".")[-1] == name


def _plain(value: Any) -> Any:
    """Namespaces as dicts and tuples as lists, recursively: config values and checkpoint hparams compare equal."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_MISSING = object()


def _walk(tree: Any, parts: list[str]) -> Any:
    """The value at `parts` of a config (`{class_path, init_args}` at every level) or of a checkpoint's
    hyper-parameters (the module's arguments at the top, `{class_path, init_args}` below); `init_args` is implied."""
    for part in parts:
        if not isinstance(tree, dict):
            return _MISSING
        if part in tree:
            tree = tree[part]
        elif isinstance(tree.get("init_args"), dict) and part in tree["init_args"]:
            tree = tree["init_args"][part]
        else:
            return _MISSING
    return tree


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(ours: dict, theirs: dict, skip: set[str] = frozenset()) -> list[str]:
    """`key ours -> theirs` for the init arguments that differ (a class change names the classes)."""
    ours, theirs = _plain(ours) or {}, _plain(theirs) or {}
    if ours.get("class_path") != theirs.get("class_path"):
        return [f"{theirs.get('class_path')} instead of {ours.get('class_path')}"]
    a, b = ours.get("init_args") or {}, theirs.get("init_args") or {}
    return [f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b))
            if k not in skip and not k.startswith("_") and a.get(k) != b.get(k)]


def _as_config(hparams: dict) -> dict:
    """A LightningCLI checkpoint's hyper-parameters (`_class_path` + arguments) as a `{class_path, init_args}` dict."""
    args = {k: v for k, v in hparams.items() if not k.startswith("_")}
    return {"class_path": hparams.get("_class_path"), "init_args": args}


def experiment_folder(cfg: Namespace) -> Path:
    """`runs/<experiment>` of a parsed config: the one folder its runs are written to."""
    name = cfg.get("experiment")
    if not name or not str(name).strip():
        raise InputError("experiment is not set: pass --experiment NAME (runs go to runs/NAME/version_N/; "
                         "configs/base.yaml sets it to the dataset)")
    return RUNS / str(name)


def load_config(args) -> Namespace:
    """The config a `train.py` command line without a subcommand gives (`configs/base.yaml`, each `--config`,
    each option), resolved and validated; nothing is built and no folder is created."""
    return CLI(args=list(map(str, args)), run=False, parse_only=True).config


def _option_value(args: list[str], name: str) -> str | None:
    """The value of `--name V` / `--name=V` in a command line (the last one), or None."""
    found = None
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith(f"--{name}="):
            found = a.split("=", 1)[1]
    return found


def _model_options(args: list[str]) -> list[str]:
    """The config keys (`model.init_args.lr`) that command-line options set under `--model.`."""
    keys = []
    for a in args:
        if a.startswith("--model."):
            keys.append(a[2:].split("=", 1)[0])
    return keys


class CLI(LightningCLI):
    """LightningCLI with a run folder per run and checked checkpoints (see the module docstring)."""

    def __init__(self, *args, parse_only: bool = False, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})  # the run's own folder is always new
        # base.yaml under every config; with subcommands, their parsers read it (the main one holds only the subcommand)
        composed = {"parser_mode": "omegaconf+", "default_config_files": [str(BASE_CONFIG)]}
        subcommands = {sub: dict(composed) for sub in self.subcommands()}
        run = kwargs.get("run", True)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf+", **subcommands} if run else composed)
        self._parse_only = parse_only
        self.experiment: Path | None = None
        self.run_dir: Path | None = None
        self.checkpoint: Path | None = None  # the resolved --ckpt_path
        self._checkpoint: dict | None = None  # its contents (tensors memory-mapped); None: more than tensors
        self._created: list[Path] = []  # folders this process created (removed again after a user error)
        self._constructor_errors: list[InputError] = []
        self.trainer = None
        _quiet_first_screen()
        try:
            super().__init__(*args, **kwargs)
        except _Parsed:  # `load_config`: the config is all that was asked for
            return
        except BaseException as err:
            self._after_failure(err)
            raise
        else:
            if self.trainer is not None and self.trainer.received_sigterm:  # after the last batch: `run` exits 143
                self._after_failure(SIGTERMException())
            # e.g. fast_dev_run: no logger, no checkpoint, no config written
            if self.run_dir is not None and self._created and not any(p.is_file() for p in self.run_dir.rglob("*")):
                self._remove_run_folder()
        finally:
            if self._created:  # the DDP processes launched by this run have read it by now
                os.environ.pop(RUN_DIR_ENV, None)

    # -------------------------------------------------------------- parsing: the checkpoint
    def init_parser(self, **kwargs):
        kwargs.setdefault("exit_on_error", False)  # parse errors become one line (`run`), not usage + 10 lines
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--dataset", type=str, required=True,
                            help="the extrapolation settings configs/extrapolation/<dataset>.yaml (base.yaml)")
        parser.add_argument("--experiment", type=str,
                            help="runs/<experiment>/version_N/ holds each run; also the W&B run name (base.yaml: the dataset)")
        # a key of its own (not an entry of trainer.callbacks): configs and options override single settings
        parser.add_lightning_class_args(ExtrapolationCallback, "extrapolation")

    def parse_arguments(self, parser, args) -> None:
        if not isinstance(args, (dict, Namespace)):
            args = [str(a) for a in (sys.argv[1:] if args is None else args)]
            args = self._with_run_config(args)
        try:  # what LightningCLI.parse_arguments does, without its warning about sys.argv (args may come from it)
            self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)
            if self._parse_only:  # `load_config`
                raise _Parsed
        except ArgumentError as err:
            raise InputError(summarize_parse_error(str(err))) from None
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        self.experiment = experiment_folder(cfg)
        if sub:
            cfg.ckpt_path = self._checkpoint_for(sub, cfg.get("ckpt_path"))
            if self.checkpoint is not None:
                self._check_checkpoint_fits_config(sub, cfg, args if isinstance(args, list) else [])

    def _with_run_config(self, args: list[str]) -> list[str]:
        """`predict --ckpt_path <run, experiment or file>` without `--config`: the config of the run that wrote
        the checkpoint (its config.yaml) and configs/predict.yaml, like nanoGPT's sample.py."""
        if not args or args[0] != "predict" or any(a == "--config" or a.startswith("--config=") for a in args):
            return args
        spec = _option_value(args, "ckpt_path")
        if spec is None:
            return args  # refused later: predict needs trained weights
        if spec == "last":
            raise InputError("predict --ckpt_path last without --config: name the run or experiment folder instead "
                             "(e.g. --ckpt_path runs/rot), or pass the training config with --config")
        path = resolve_checkpoint(spec, setting="--ckpt_path")
        config = Path(run_of(path)) / "config.yaml"
        if not config.is_file():
            raise MissingInputError(f"--ckpt_path {spec}: no config.yaml in {run_of(path)}, the run that wrote {path}; "
                                    f"pass its training config with --config")
        rank_zero_info(f"predict: the config of {run_of(path)} ({config}) with {PREDICT_CONFIG.relative_to(ROOT)}")
        return [args[0], "--config", str(config), "--config", str(PREDICT_CONFIG), *args[1:]]

    def _checkpoint_for(self, sub: str, spec: str | None) -> str | None:
        if spec is None:
            if sub in NEEDS_WEIGHTS:
                raise InputError(f"{sub} needs trained weights: pass --ckpt_path last (the newest checkpoint of "
                                 f"{self.experiment}) or --ckpt_path <file.ckpt>")
            return None
        if sub == "fit" and str(spec) == "last" and newest_checkpoint(self.experiment) is None:
            rank_zero_info(f"fit: --ckpt_path last: no checkpoint of {self.experiment} yet; training from random weights")
            return None
        path = resolve_checkpoint(spec, self.experiment, setting="--ckpt_path")
        self._checkpoint = read_checkpoint(path)
        info = checkpoint_info(path) if self._checkpoint is None else {
            "epoch": self._checkpoint.get("epoch"), "global_step": self._checkpoint.get("global_step")}
        verb = "resuming from" if sub == "fit" else "loading"
        rank_zero_info(f"{sub}: {verb} {describe(path, info)}")
        self.checkpoint = path
        return str(path)

    def _check_checkpoint_fits_config(self, sub: str, cfg: Namespace, args: list[str]) -> None:
        """Lightning rebuilds the model from the checkpoint's hyper-parameters (they replace the config's model):
        refuse what would silently change the experiment, say what differs."""
        hparams = dict((self._checkpoint or {}).get("hyper_parameters") or {})
        theirs = recorded_class(hparams)
        model = _plain(cfg.get("model")) or {}
        ours = model.get("class_path")
        path = self.checkpoint
        if theirs and ours and theirs != ours:
            raise InputError(f"--ckpt_path {path} holds a {theirs.split('.')[-1]} ({theirs}), but the config's model "
                             f"is {ours}: pass the config it was trained with ({run_of(path)}/config.yaml)")
        if theirs is None:  # not written through LightningCLI: nothing recorded to compare
            return
        for key in _model_options(args):
            parts = [p for p in key.split(".")[1:] if p != "init_args"]
            given, recorded = _walk(model, parts), _walk(hparams, parts)
            if given is _MISSING or recorded is _MISSING or _plain(given) == _plain(recorded):
                continue
            raise InputError(f"--{key}={_short(_plain(given))} contradicts --ckpt_path {path}, whose model has "
                             f"{'.'.join(parts)}={_short(_plain(recorded))} (the checkpoint's hyper-parameters "
                             f"rebuild the model): leave the option out, or train a new model without --ckpt_path")
        self._check_hparams_parse(sub, hparams)
        changed = _differences(model.get("init_args", {}).get("network") or {}, hparams.get("network") or {})
        if changed:
            warn(f"--ckpt_path {path} holds another network than the config's ({'; '.join(changed)}); "
                 f"the checkpoint's network is used")
        data = (self._checkpoint or {}).get("datamodule_hyper_parameters")
        if sub != "predict" and data and recorded_class(data) and cfg.get("data") is not None:
            changed = _differences(_plain(cfg.data), _as_config(data), skip=_LOADER_ARGS)
            if changed:
                warn(f"--ckpt_path {path} was trained on other data than this run's ({'; '.join(changed)})")

    def _check_hparams_parse(self, sub: str, hparams: dict) -> None:
        """The checkpoint's hyper-parameters must parse as this config's model (LightningCLI applies them next)."""
        model = {"class_path": hparams["_class_path"],
                 "dict_kwargs": {k: v for k, v in hparams.items() if not k.startswith("_")}}
        try:
            self.parser.parse_object({sub: {"model": model}}, self.config)
        except ArgumentError as err:
            raise InputError(f"--ckpt_path {self.checkpoint}: its hyper-parameters do not fit this config: "
                             f"{summarize_parse_error(str(err))}") from None

    # -------------------------------------------------------------- the run folder
    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        # jsonargparse reports a constructor's error inside a Union (trainer.logger: Logger | Iterable[Logger] |
        # bool) only as text; this instantiator keeps the InputError itself (see `instantiate_classes`)
        self.parser.add_instantiator(self._instantiate, object, subclasses=True)
        trainer = self.config[sub].get("trainer") if sub else None
        if trainer is None:  # `main(run=False)` builds the objects as configured and creates no folder
            return
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:  # a DDP process launched by the run that chose the folder
            self.run_dir = Path(inherited)
        else:
            missing = [p for p in (self.experiment, *self.experiment.parents) if not p.exists()]
            self._created.extend(reversed(missing))  # outermost first
            self.run_dir = new_version_dir(self.experiment)
            self._created.append(self.run_dir)
            os.environ[RUN_DIR_ENV] = str(self.run_dir)
        run_dir = str(self.run_dir)
        trainer.default_root_dir = run_dir  # Lightning's fallback for logs, checkpoints, tuner files

        loggers = _entries(trainer.get("logger"))
        if trainer.get("logger") in (None, True):  # Lightning's default logger, placed in the run folder
            loggers = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace())]
        kept = []
        for lg in loggers:
            args = lg.init_args
            if _is(lg, "WandbLogger"):
                if sub == "predict":  # predict writes files and logs nothing: no W&B run
                    continue
                args.save_dir = run_dir
                if "dir" in args:
                    args.dir = None
            elif _is(lg, "CSVLogger") or _is(lg, "TensorBoardLogger"):  # <save_dir>/<name>/<version>: the run folder
                args.save_dir, args.name, args.version = (str(self.experiment.parent), self.experiment.name,
                                                          self.run_dir.name)
            kept.append(lg)
        trainer.logger = kept or False  # --trainer.logger=false (or only W&B in predict): no logger

        callbacks = _entries(trainer.get("callbacks"))
        if not kept and any(_is(c, "LearningRateMonitor") for c in callbacks):  # it refuses to run without one
            callbacks = [c for c in callbacks if not _is(c, "LearningRateMonitor")]
            rank_zero_info("no logger: LearningRateMonitor left out")
        for cb in callbacks:
            if _is(cb, "ModelCheckpoint"):
                given = cb.init_args.get("dirpath")
                if given is not None and not _is_run_checkpoints(given):  # a run's config.yaml names its own folder
                    rank_zero_info(f"ModelCheckpoint: dirpath {given} replaced by this run's own folder")
                cb.init_args.dirpath = str(self.run_dir / "checkpoints")
        if trainer.get("callbacks") is not None or callbacks:
            trainer.callbacks = callbacks

    def _instantiate(self, class_type, *args, **kwargs):
        """jsonargparse's default instantiator (`class_type(*args, **kwargs)`) that keeps a constructor's
        InputError for `instantiate_classes`."""
        try:
            return class_type(*args, **kwargs)
        except InputError as err:
            self._constructor_errors.append(err)
            raise

    def instantiate_classes(self) -> None:
        self._constructor_errors = []
        try:
            super().instantiate_classes()
        except Exception as err:
            if self._constructor_errors and user_error(err) is None:
                raise self._constructor_errors[-1] from err
            raise

    def instantiate_trainer(self, **kwargs):
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # Trainer(...) refuses a value of the config
            trainer = _in_subcommand(self.config, self.subcommand).get("trainer") or Namespace()
            where = ", ".join(f"{k}={trainer.get(k)}" for k in ("accelerator", "devices", "strategy")
                              if k in str(err).lower() or "gpu" in str(err).lower() or "backend" in str(err).lower())
            raise InputError(f"--trainer: {err}{f' ({where})' if where else ''}") from err

    def after_instantiate_classes(self) -> None:
        if self.model is not None:
            check_model_values(self.model)
        if self.subcommand is not None:
            self._hand_over_vae()

    # -------------------------------------------------------------- start-up checks of the built objects
    def _hand_over_vae(self) -> None:
        """Resolve the extrapolation callback's `vae_checkpoint` now, check that it holds a VAE and hand the
        loaded VAEModule to the callback (`set_vae`), rather than find out after the first validation epoch."""
        callback = _in_subcommand(self.config_init, self.subcommand).get("extrapolation")
        if not isinstance(callback, ExtrapolationCallback) or "latent" not in callback.methods:
            return
        if all(hasattr(self.model, name) for name in ("encode", "decode")) and not hasattr(self.model, "denoise"):
            return  # the model is the VAE itself
        spec = callback.vae_checkpoint
        setting = "extrapolation.vae_checkpoint"
        if not spec:
            warn(f"extrapolation: method 'latent' skipped: {setting} is not set")
            callback.methods = tuple(m for m in callback.methods if m != "latent")
            return
        try:
            path = resolve_checkpoint(spec, setting=setting)
        except MissingInputError as err:  # e.g. runs/vae_rot before the VAE is trained: not an error
            warn(f"extrapolation: method 'latent' skipped: {err}; train the VAE first (configs/vae_<dataset>.yaml)")
            callback.methods = tuple(m for m in callback.methods if m != "latent")
            return
        from lightning_modules import VAEModule
        from networks import VAE

        ckpt = read_checkpoint(path)
        hparams = (ckpt or {}).get("hyper_parameters") or {}
        network = hparams.get("network") if isinstance(hparams.get("network"), dict) else {}
        module, net = recorded_class(hparams), network.get("class_path")
        held = (f"a {module.split('.')[-1]}" if module else
                f"a module with a {net.split('.')[-1]} network" if net else None)
        if module or net:  # the class LightningCLI recorded, else the network's (checkpoints written without it)
            cls = _imported(module or net)
            if not (isinstance(cls, type) and issubclass(cls, VAEModule if module else VAE)):
                raise InputError(f"{setting} {path} holds {held}, expected a VAEModule: name a checkpoint or "
                                 f"experiment folder of a VAE config (e.g. runs/vae_rot from configs/vae_rot.yaml)")
        try:
            vae = VAEModule.load_from_checkpoint(path, map_location="cpu")
        except (RuntimeError, TypeError, KeyError) as err:  # recorded nothing, and it is no VAE after all
            raise InputError(f"{setting} {path} does not hold a VAEModule ({str(err).splitlines()[0][:160]})") from err
        rank_zero_info(f"extrapolation: latent rollouts with the VAE {describe(path)}")
        callback.set_vae(vae, path)

    def _check_weights(self) -> None:
        """The checkpoint's weights must fit the model built from the config (before the trainer loads them)."""
        ckpt = self._checkpoint
        if ckpt is None or self.model is None:
            return
        own = self.model.state_dict()
        theirs = ckpt.get("state_dict") or {}
        missing = [k for k in own if k not in theirs]
        unexpected = [k for k in theirs if k not in own] if getattr(self.model, "strict_loading", True) else []
        resized = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
                   if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(own[k].shape)]
        if not (missing or unexpected or resized):
            return
        parts = [f"{what} {', '.join(keys[:3])}{f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''}"
                 for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("other shapes", resized)) if keys]
        raise InputError(f"--ckpt_path {self.checkpoint} does not fit the config's model "
                         f"{type(self.model).__name__} ({'; '.join(parts)}): pass the training config of that "
                         f"checkpoint")

    def before_fit(self) -> None:
        self._check_weights()

    def before_validate(self) -> None:
        self._check_weights()

    def before_test(self) -> None:
        self._check_weights()

    def before_predict(self) -> None:
        self._check_weights()
        set_input_shape = getattr(self.datamodule, "set_input_shape", None)
        if not callable(set_input_shape) or not callable(getattr(self.model, "input_shape", None)):
            return
        if self._checkpoint is not None:  # what the module keeps beside its weights (the training frame size)
            self.model.on_load_checkpoint(self._checkpoint)
        shape = self.model.input_shape()
        set_input_shape(shape)
        frames = getattr(getattr(self.datamodule, "dataset", None), "frames", None)
        if frames is not None:
            check_frames_fit(self.model, tuple(frames.shape[-3:]), shape)

    # -------------------------------------------------------------- after an error
    def _after_failure(self, err: BaseException) -> None:
        if isinstance(err, SIGTERMException) or (self.trainer is not None and self.trainer.received_sigterm):
            newest = newest_checkpoint(self.run_dir) if self.run_dir is not None else None
            rank_zero_info(f"stopped by SIGTERM (exit status {SIGTERM_EXIT}); newest checkpoint of this run: "
                           f"{newest or 'none yet'}; resume with --ckpt_path last")
            return
        failed = write_error(err)
        if failed is not None and not (failed.filename or failed.filename2) and self.run_dir is not None:
            failed.filename = str(self.run_dir)  # e.g. a write() that ran out of space names no file
        if user_error(err) is not None or failed is not None:
            _end_wandb_quietly()
            if user_error(err) is not None:
                self._remove_empty_run()

    def _remove_empty_run(self) -> None:
        """After a user error: remove the run folder this process created, unless a checkpoint was written
        into it (and the experiment folders it created, if they are empty then)."""
        if not self._created or self.run_dir is None or any(self.run_dir.rglob("*.ckpt")):
            return
        self._remove_run_folder()

    def _remove_run_folder(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for folder in reversed(self._created):  # the experiment folders this run created, if empty now
            if folder != self.run_dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


class _Parsed(Exception):
    """Ends `CLI(parse_only=True)` once the config is parsed."""


def _in_subcommand(config: Namespace, subcommand: str | None) -> Namespace:
    """The part of a (parsed or instantiated) config that belongs to the subcommand run."""
    return config.get(subcommand, config) if subcommand else config


def _imported(path: str):
    """The object a class path such as `lightning_modules.VAEModule` names, or None."""
    import importlib

    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None) if module else None
    except ImportError:
        return None


def _is_run_checkpoints(path: str | Path) -> bool:
    """`.../version_N/checkpoints`: the checkpoint folder of some run (what a saved config.yaml names)."""
    path = Path(path)
    return path.name == "checkpoints" and VERSION.match(path.parent.name) is not None


def check_model_values(model) -> None:
    """Numbers among the model's hyper-parameters must be finite, and a learning rate not negative (Adam refuses
    -1 only inside `trainer.fit`, and a NaN one trains nothing)."""
    hparams = dict(getattr(model, "hparams", {}) or {})

    def numbers(value, key):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            yield key, value
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from numbers(v, key)

    for key, value in hparams.items():
        for name, v in numbers(value, key):
            if not math.isfinite(v):
                raise InputError(f"--model.init_args.{name}={value}: expected finite numbers")
            if name == "lr" and v < 0:  # 0 is allowed: it freezes the weights (tests/test_ddp.py compares that way)
                raise InputError(f"--model.init_args.lr={v}: the learning rate must be a non-negative number")


def check_frames_fit(model, frame: tuple[int, int, int], trained: tuple) -> None:
    """One frame of the size predict will use must pass through the model (a UNet pads small frames by
    reflection, which needs a few pixels): else one line at start-up, not a traceback from the rollout."""
    import torch

    def probe(shape):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, *shape))
        finally:
            model.train(was)

    try:
        probe(frame)
    except (RuntimeError, ValueError) as err:
        c, h, w = frame
        own = (c, trained[1], trained[2]) if trained[1] is not None else None
        if own is not None and own != frame:
            probe(own)  # a failure at the training size itself is a bug: its traceback
        hint = f"; the checkpoint was trained on {own[1]}x{own[2]} frames" if own else ""
        raise InputError(f"predict frames of {h}x{w} (HxW) do not fit the checkpoint's network "
                         f"({str(err).splitlines()[0][:120]}){hint}: choose another --data.init_args.image_size") \
            from None


def _end_wandb_quietly() -> None:
    """End an open W&B run without its lines (a `wandb sync` hint for a run that failed, or, with a full
    disk, the errors of its own log writes)."""
    try:
        import wandb
    except ImportError:
        return
    logging.raiseExceptions = False  # a log handler that cannot write (full disk) stays silent
    for name in ("asyncio", "opentelemetry"):  # a lost service socket, telemetry the server refused
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if wandb.run is not None:
                wandb.finish(exit_code=1)
            wandb.teardown()  # its service process too: else it reports at exit (e.g. telemetry the server refused)
    except Exception:  # noqa: BLE001 - cleaning up must not hide the error being reported
        pass


# ---------------------------------------------------------------------- errors
def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def summarize_parse_error(message: str) -> str:
    """jsonargparse's multi-line report (a Union of types, a class_path's nested error) as one line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    key = re.match(r'Parser key "([^"]+)":?\s*(.*)$', lines[0])
    where = f"--{key.group(1)}" if key else lines[0]
    for i, line in enumerate(lines):  # a nested class: the lines under "Problem with given class_path"
        m = re.match(r"- Problem with given class_path '([^']+)':", line)
        if m:
            inner = []
            for nested in lines[i + 1:]:
                if nested.startswith("- "):
                    break
                inner.append(nested)
            return f"{where} ({m.group(1)}): {' '.join(inner)}"
    if "Errors:" in lines:
        errors = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
        given = next((line for line in lines if line.startswith("Given value:")), "")
        return f"{where}: {'; '.join(errors)}{'; ' + given if given else ''}"
    if key:
        rest = " ".join([key.group(2), *lines[1:]]).strip()
        return f"{where}: {rest}" if rest else where
    return " ".join(lines)


def user_error(err: BaseException) -> InputError | None:
    """The `InputError` in `err`'s chain, if any: the error is about the user's input."""
    return next((e for e in _chain(err) if isinstance(e, InputError)), None)


def write_error(err: BaseException) -> OSError | None:
    """An OSError in `err`'s chain that says a file could not be written (no space, quota, read-only, permission)."""
    return next((e for e in _chain(err) if isinstance(e, OSError) and not isinstance(e, InputError)
                 and e.errno in WRITE_ERRNOS), None)


def main(args=None, run: bool = True) -> CLI:
    """Build and (with `run`) run the CLI; `run=False` builds model, datamodule and trainer from a config."""
    return CLI(args=args, run=run)


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def run(argv=None) -> int:
    """`train.py`'s entry point: 0 on success; one line and 2 for a mistake in the user's input, 1 for a file that
    could not be written, 143 after SIGTERM (the run stopped at a batch boundary, its checkpoints complete)."""
    try:
        cli = main(argv)
    except SIGTERMException:  # the CLI said where the run stopped and what to resume from
        return SIGTERM_EXIT
    except Exception as err:  # noqa: BLE001
        found = user_error(err)
        if found is not None:
            print(f"error: {_one_line(found)}", file=sys.stderr)
            return 2
        failed = write_error(err)
        if failed is None:
            raise
        path = failed.filename2 or failed.filename or "a file"
        print(f"error: cannot write {path}: {failed.strerror or failed}", file=sys.stderr)
        return 1
    if cli.trainer is not None and cli.trainer.received_sigterm:  # SIGTERM after the last batch
        return SIGTERM_EXIT
    return 0
