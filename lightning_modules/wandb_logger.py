"""Lightning's WandbLogger that goes offline by itself when no W&B credentials are configured, or
when the W&B server cannot be reached.

Without a key and without ``WANDB_MODE``, wandb fails after a few seconds ("No API key
configured") or prompts; with a key but no reachable server it retries for about 100 s and then
fails. Offline it writes ``<save_dir>/wandb/offline-run-*`` to sync later. A ``WANDB_MODE`` wandb does
not know, or a server that refuses the run (a bad key), raises one ``errors.InputError`` that says
what to set, instead of wandb's traceback.
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.parse
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


WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # what wandb.init(mode=...) accepts
PROBE_SECONDS = 3.0  # how long a TCP connection to the W&B server may take before the run goes offline


def wandb_base_url() -> str:
    """The W&B server this process would talk to (``WANDB_BASE_URL``, wandb's settings, else api.wandb.ai)."""
    url = os.environ.get("WANDB_BASE_URL")
    if not url:
        try:
            from wandb.sdk import wandb_setup

            url = wandb_setup.singleton().settings.base_url
        except Exception:  # noqa: BLE001 - a wandb without these internals
            url = None
    return url or "https://api.wandb.ai"


def unreachable(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why no TCP connection to `url`'s host opens within `timeout` seconds (name lookup included), or None."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host:
        return f"not a URL: {url!r}"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad port in {url!r}"
    result: list[str | None] = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(e.strerror or type(e).__name__)

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores the socket's timeout
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"no answer within {timeout:.0f} s"
    return result[0]


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
        if kwargs.get("mode") is not None and kwargs["mode"] not in WANDB_MODES:
            from errors import InputError

            given = f"WANDB_MODE={env_mode}" if env_mode == kwargs["mode"] else f"mode={kwargs['mode']!r}"
            raise InputError(f"{given} is not a W&B mode: set it to online, offline (logs to sync later with "
                             f"`wandb sync`) or disabled, or unset it (offline by itself without credentials)")
        self._offline_reason = "no credentials configured"
        if offline or self._auto_offline:
            if log_model:
                from errors import InputError

                raise InputError("log_model needs an online W&B run (offline, or no credentials configured)")
            kwargs.setdefault("mode", "offline")
        super().__init__(*args, log_model=log_model, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb: warns even when None
        self._announced = False

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:
            save_dir = self._wandb_init.get("dir")
            if save_dir:
                os.makedirs(save_dir, exist_ok=True)  # else wandb warns "git root ... does not exist"
            self._check_server()
        try:
            run = super().experiment
        except Exception as err:
            refused = self._refused(err)
            if refused is None:
                raise
            raise refused from err
        if self._auto_offline and not self._announced:
            self._announced = True
            self._announce(run)
        return run

    def _check_server(self) -> None:
        """An online run whose server does not answer within seconds: offline instead (or, when online was
        asked for explicitly, one clear error) rather than wandb's 100 s of retries."""
        mode = self._wandb_init.get("mode", "online")
        if mode != "online" or self._auto_offline:
            return
        url = wandb_base_url()
        why = unreachable(url)
        if why is None:
            return
        if "mode" in self._wandb_init:  # WANDB_MODE=online or mode: online
            from errors import InputError

            raise InputError(f"W&B server {url} cannot be reached ({why}); set WANDB_MODE=offline "
                             f"to log offline and upload later with `wandb sync`")
        self._wandb_init["mode"] = "offline"
        self._auto_offline = True
        self._offline_reason = f"cannot reach {url} ({why})"

    def _refused(self, err: Exception):
        """An InputError when wandb.init failed with one of wandb's own errors, such as a
        server that refuses the key (401): what to set, in one line; else None."""
        try:
            from wandb.errors import Error as WandbError
        except ImportError:
            return None
        if not isinstance(err, WandbError):
            return None
        from errors import InputError

        what = " ".join(str(err).split())
        what = what if len(what) <= 160 else what[:157] + "..."
        return InputError(f"W&B run could not start at {wandb_base_url()} ({type(err).__name__}: {what}): check "
                          f"WANDB_API_KEY (`wandb login --relogin`) and WANDB_BASE_URL, or set WANDB_MODE=offline "
                          f"to log offline and upload later with `wandb sync`")

    @rank_zero_only
    def _announce(self, run) -> None:
        run_dir = getattr(run, "dir", None)  # .../wandb/offline-run-<time>-<id>/files
        if run_dir:
            folder = Path(run_dir).parent
            rank_zero_info(f"W&B: {self._offline_reason}, logging offline to {folder}; "
                           f"upload later with `wandb sync {folder}`")
