"""`train.py`: LightningCLI with one run folder per run, checked checkpoints and one-line user errors.

- Every run (fit, validate, test, predict) gets its own `runs/<experiment>/version_N/`, created atomically
  (`run_folders.new_version_dir`); the CSVLogger, the W&B logger, the checkpoints (`version_N/checkpoints/`),
  the media and `trainer.default_root_dir` all point at it. The experiment is the config's CSVLogger
  `save_dir/name`; without a logger, `runs/<experiment>`.
- Configs compose: `configs/base.yaml` (what every experiment shares) comes first, then each `--config` and
  option. Values may name other keys of the same config (`${dataset}`: omegaconf, resolved after merging), and
  the extrapolation callback is the `extrapolation:` key, so a config overrides single settings of it.
- `--ckpt_path last` is the newest complete checkpoint of the experiment (`run_folders.resolve_checkpoint`);
  a folder names the newest checkpoint in it. `validate`, `test` and `predict` refuse to run without a
  checkpoint; `fit --ckpt_path last` with none yet starts from random weights and says so. The run prints
  which file, run and epoch it loaded.
- `run()` turns every error about the user's input (`errors.InputError` anywhere in the exception chain, a
  ValueError raised by a constructor while the config is instantiated, a checkpoint that does not fit the
  model) into one `error: ...` line and exit status 2; anything else keeps its traceback. After such an error
  the run folder it created is removed, unless it holds a checkpoint.
"""
from __future__ import annotations

import logging
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
from lightning.pytorch.utilities import rank_zero_info

from callbacks import ExtrapolationCallback
from errors import InputError
from run_folders import (RUN_DIR_ENV, RUNS, checkpoint_info, describe, new_version_dir, newest_checkpoint,
                         resolve_checkpoint)

NEEDS_WEIGHTS = ("validate", "test", "predict")
BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "base.yaml"
# `${dataset}` in a config file names the key `dataset` of the same config, also in a subcommand's config
set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
_QUIET = ("💡 Tip:", "Loading `train_dataloader` to estimate number of stepping batches")


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


def _experiment_from_loggers(loggers: list) -> Path | None:
    for lg in loggers:  # the CSVLogger's save_dir/name (TensorBoard's has the same layout)
        if _is(lg, "CSVLogger") or _is(lg, "TensorBoardLogger"):
            args = lg.init_args
            save_dir = args.get("save_dir") or "."
            name = args.get("name")
            return Path(save_dir) / name if name else Path(save_dir)
    for lg in loggers:
        save_dir = lg.init_args.get("save_dir") if getattr(lg, "init_args", None) is not None else None
        if save_dir:
            return Path(save_dir)
    return None


def experiment_folder(cfg: Namespace) -> Path | None:
    """The experiment folder of a parsed config: its CSVLogger's `save_dir/name`, else `runs/<experiment>`."""
    trainer = cfg.get("trainer")
    found = _experiment_from_loggers(_entries(trainer.get("logger"))) if trainer is not None else None
    return found or (RUNS / cfg.experiment if cfg.get("experiment") else None)


def load_config(args) -> Namespace:
    """The config a `train.py` command line without a subcommand gives (`configs/base.yaml`, each `--config`,
    each option), resolved and validated; nothing is built and no folder is created."""
    return CLI(args=list(map(str, args)), run=False, parse_only=True).config


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
        self.checkpoint: Path | None = None
        self._created: list[Path] = []  # folders this process created (removed again after a user error)
        _quiet_first_screen()
        try:
            super().__init__(*args, **kwargs)
        except _Parsed:  # `load_config`: the config is all that was asked for
            return
        except BaseException as err:
            if user_error(err) is not None:
                self._remove_empty_run()
            raise
        else:  # e.g. fast_dev_run: no logger, no checkpoint, no config written
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
        parser.add_argument("--experiment", type=str, help="runs/<experiment>/ holds the runs; the W&B run name")
        # a key of its own (not an entry of trainer.callbacks): configs and options override single settings
        parser.add_lightning_class_args(ExtrapolationCallback, "extrapolation")

    def parse_arguments(self, parser, args) -> None:
        try:
            if self._parse_only:  # `load_config`: a script's own sys.argv is no mistake (LightningCLI warns)
                self.config = parser.parse_args(args)
                raise _Parsed
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise InputError(summarize_parse_error(str(err))) from None
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        self.experiment = experiment_folder(cfg)
        if self.experiment is None:  # neither a logger nor an experiment name: Lightning's own default folder
            trainer = cfg.get("trainer")
            root = (trainer.get("default_root_dir") if trainer is not None else None) or "."
            self.experiment = Path(root) / "lightning_logs"
        if sub:
            cfg.ckpt_path = self._checkpoint_for(sub, cfg.get("ckpt_path"))

    def _parse_ckpt_path(self) -> None:  # LightningCLI applies the checkpoint's hyperparameters to the config
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:
            raise InputError(f"--ckpt_path {self.checkpoint}: its hyperparameters do not fit this config: "
                             f"{summarize_parse_error(str(err))}") from None

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
        info = checkpoint_info(path)
        verb = "resuming from" if sub == "fit" else "loading"
        rank_zero_info(f"{sub}: {verb} {describe(path, info)}")
        self.checkpoint = path
        return str(path)

    # -------------------------------------------------------------- the run folder
    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
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
            loggers = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(
                save_dir=str(self.experiment.parent), name=self.experiment.name, version=self.run_dir.name))]
        kept = []
        for lg in loggers:
            args = lg.init_args
            if _is(lg, "WandbLogger"):
                if sub == "predict":  # predict writes files and logs nothing: no W&B run
                    continue
                args.save_dir = run_dir
                if "dir" in args:
                    args.dir = None
            elif "version" in args and "save_dir" in args:
                name = args.get("name")
                folder = Path(args.get("save_dir") or ".") / name if name else Path(args.get("save_dir") or ".")
                if folder == self.experiment:
                    args.version = self.run_dir.name
            kept.append(lg)
        trainer.logger = kept or False  # --trainer.logger=false (or only W&B in predict): no logger

        callbacks = _entries(trainer.get("callbacks"))
        if not kept and any(_is(c, "LearningRateMonitor") for c in callbacks):  # it refuses to run without one
            callbacks = [c for c in callbacks if not _is(c, "LearningRateMonitor")]
            rank_zero_info("no logger: LearningRateMonitor left out")
        for cb in callbacks:
            if _is(cb, "ModelCheckpoint") and cb.init_args.get("dirpath") is None:
                cb.init_args.dirpath = str(self.run_dir / "checkpoints")
        if trainer.get("callbacks") is not None or callbacks:
            trainer.callbacks = callbacks

    def instantiate_classes(self) -> None:
        InputError.latest = None
        try:
            super().instantiate_classes()
        except Exception as err:
            # a constructor's InputError inside a list (loggers, callbacks) reaches us only as text in
            # jsonargparse's report of the Union types it tried
            latest = InputError.latest
            if latest is not None and user_error(err) is None and any(str(latest) in str(e) for e in _chain(err)):
                raise latest from err
            cause = _config_value_error(err)
            if cause is None:
                raise
            raise InputError(cause) from err

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except RuntimeError as err:
            if "Error(s) in loading state_dict" not in str(err) or self.checkpoint is None:
                raise
            detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            raise InputError(f"--ckpt_path {self.checkpoint} does not fit the config's model ({detail}); "
                             f"pass the training config of that checkpoint") from err

    def _remove_empty_run(self) -> None:
        """After a user error: remove the run folder this process created, unless a checkpoint was written
        into it (and the experiment folders it created, if they are empty then)."""
        if not self._created or self.run_dir is None or any(self.run_dir.rglob("*.ckpt")):
            return
        try:  # end the W&B run first: its process writes into the folder
            import contextlib
            import io

            import wandb

            if wandb.run is not None:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    wandb.finish(exit_code=2)  # quietly: its `wandb sync` hint is for a run about to go
        except Exception:  # noqa: BLE001 - cleaning up must not hide the user's error
            pass
        self._remove_run_folder()

    def _remove_run_folder(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for folder in reversed(self._created):  # the experiment folders this run created, if empty now
            if folder != self.run_dir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


class _Parsed(Exception):
    """Ends `CLI(parse_only=True)` once the config is parsed."""


# ---------------------------------------------------------------------- errors
def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _config_value_error(err: BaseException) -> str | None:
    """The message of a ValueError (or missing file) a constructor raised while the config was instantiated,
    prefixed with the class, or None for anything else."""
    root = list(_chain(err))[-1]
    if isinstance(root, InputError):
        return str(root)
    if not isinstance(root, (ValueError, FileNotFoundError)) or "values to unpack" in str(root):
        return None
    owner = None
    tb = root.__traceback__
    while tb is not None:  # the innermost constructor on the stack names the class
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            owner = type(frame.f_locals["self"]).__name__
        tb = tb.tb_next
    if owner is None:  # not raised under a constructor (e.g. jsonargparse's own report): no config value
        return None
    message = str(root)
    return message if message.startswith(owner) else f"{owner}: {message}"


def summarize_parse_error(message: str) -> str:
    """jsonargparse's multi-line report (a Union of types, a class_path's nested error) as one line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    key = re.match(r'Parser key "([^"]+)":?', lines[0])
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
    return f"{where} {' '.join(lines[1:])}".strip() if key else " ".join(lines)


def user_error(err: BaseException) -> InputError | None:
    """The `InputError` in `err`'s chain, if any: the error is about the user's input."""
    return next((e for e in _chain(err) if isinstance(e, InputError)), None)


def main(args=None, run: bool = True) -> CLI:
    """Build and (with `run`) run the CLI; `run=False` builds model, datamodule and trainer from a config."""
    return CLI(args=args, run=run)


def run(argv=None) -> int:
    """`train.py`'s entry point: 0 on success, 2 with one `error:` line for a mistake in the user's input."""
    try:
        main(argv)
    except Exception as err:  # noqa: BLE001
        found = user_error(err)
        if found is None:
            raise
        message = re.sub(r"\s*\n\s*", " ", str(found)).strip()
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
