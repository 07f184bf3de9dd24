"""Lightning's WandbLogger that goes offline by itself when no W&B credentials are configured.

Without a key and without ``WANDB_MODE``, wandb fails after a few seconds ("No API key
configured") or prompts; offline it writes ``<save_dir>/wandb/offline-run-*`` to sync later.
"""
from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


def has_wandb_credentials() -> bool:
    """True if an API key is configured (env, netrc or wandb settings); reads files only, no network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = [os.environ.get("WANDB_BASE_URL"), "https://api.wandb.ai"]
    try:
        from wandb.sdk import wandb_setup

        settings = wandb_setup.singleton().settings  # loads settings files; starts no service
        if settings.api_key:
            return True
        hosts.insert(0, settings.base_url)  # recent wandb defaults to a CoreWeave host
    except Exception:  # a wandb without these internals: fall back to the netrc alone
        pass
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:
        read_netrc_auth = None
    for host in filter(None, hosts):
        try:
            if read_netrc_auth is not None and read_netrc_auth(host=host):
                return True
        except Exception:  # malformed netrc or key: wandb itself would fail too
            pass
    return False


class WandbLogger(_WandbLogger):
    """``lightning.pytorch.loggers.WandbLogger``, offline by itself when there are no credentials.

    An explicit ``WANDB_MODE`` (online, offline, disabled), ``mode=...`` or ``offline=True`` wins.
    The mode goes to ``wandb.init(mode=...)`` rather than through Lightning's ``offline``, which
    sets ``WANDB_MODE=dryrun`` in the environment after wandb may already have read it.
    """

    def __init__(self, *args, offline: bool = False, log_model: bool | str = False, **kwargs):
        # LightningCLI passes every wandb.init argument, unset ones as None (mode=None included)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        for key in ("save_dir", "dir"):  # wandb's service process has its own cwd: pass absolute paths
            if key in kwargs:
                kwargs[key] = os.path.abspath(os.fspath(kwargs[key]))
        self._auto_offline = (not offline and "mode" not in kwargs and "WANDB_MODE" not in os.environ
                              and not has_wandb_credentials())
        env_mode = os.environ.get("WANDB_MODE")
        if env_mode and "mode" not in kwargs and not offline:
            # explicit: wandb reads its environment once per process, so a later change would be missed
            kwargs["mode"] = "offline" if env_mode == "dryrun" else env_mode
        if offline or self._auto_offline:
            if log_model:
                raise ValueError("log_model needs an online W&B run (offline, or no credentials configured)")
            kwargs.setdefault("mode", "offline")
        super().__init__(*args, log_model=log_model, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb: warns even when None
        self._announced = False

    @property
    def experiment(self):
        run = super().experiment
        if self._auto_offline and not self._announced:
            self._announced = True
            self._announce(run)
        return run

    @rank_zero_only
    def _announce(self, run) -> None:
        run_dir = getattr(run, "dir", None)  # .../wandb/offline-run-<time>-<id>/files
        if run_dir:
            folder = Path(run_dir).parent
            rank_zero_info(f"W&B: no credentials configured, logging offline to {folder}; "
                           f"upload later with `wandb sync {folder}`")
