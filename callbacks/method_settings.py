"""The extrapolation settings of the callbacks: a settings file's profile (`configs/extrapolation/<dataset>.yaml`)
with the callbacks' overrides, validated once (`extrapolation.settings`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from extrapolation import MethodSettings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def settings_path(path: str | Path) -> Path:
    """A settings file path as given, or, when relative and missing there, relative to the project root (so
    `configs/extrapolation/rot.yaml` works from any working directory)."""
    path = Path(path)
    return path if path.is_absolute() or path.is_file() or not (ROOT / path).is_file() else ROOT / path


def load_method_settings(path: str | Path, profile: str, methods: Sequence[str], owner: str, *,
                         steps: int | None = None, eta: float | str | None = None, sigma: float | str | None = None,
                         k: int | None = None, solver: Mapping[str, Any] | None = None,
                         vae_eta: float | str | None = None) -> dict[str, MethodSettings]:
    """{method: MethodSettings} of one profile of a settings file, with the overrides applied (None: the file's):
    `steps` to every method, `eta` and `sigma` to tangent and linear, `k` and `solver` (which replaces the
    file's solver) to tangent, `vae_eta` to latent. Raises one-line `SettingsError`s naming `owner`."""
    try:
        try:
            loaded = load_settings(settings_path(path), profile)
        except yaml.YAMLError as err:  # the parser's report spans lines: where it stopped, in one
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise SettingsError(f"{path}: not valid YAML{where}: {problem}") from None
        except ZeroDivisionError:  # a fraction such as "40/0"
            raise SettingsError(f"{path} [{profile}]: a fraction divides by zero") from None
        missing = [m for m in methods if m not in loaded]
        if missing:
            raise SettingsError(f"{path} [{profile}] has no settings for {missing}")
        out = {}
        for name, s in loaded.items():
            if name == "latent":
                out[name] = s.with_overrides(steps=steps, eta=vae_eta)
            else:
                s = s.with_overrides(steps=steps, eta=eta, sigma=sigma)
                out[name] = s.with_overrides(k=k, solver=solver) if name == "tangent" else s
        return out
    except SettingsError as err:
        raise SettingsError(f"{owner}: {err}") from None
