"""The extrapolation settings of the callbacks: a settings file's profile (`configs/extrapolation/<dataset>.yaml`)
with the callbacks' flat overrides, validated once (`extrapolation.settings`, `extrapolation.methods`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from extrapolation import Method, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def settings_path(path: str | Path) -> Path:
    """A settings file path as given, or, when relative and missing there, relative to the project root (so
    `configs/extrapolation/rot.yaml` works from any working directory)."""
    path = Path(path)
    return path if path.is_absolute() or path.is_file() or not (ROOT / path).is_file() else ROOT / path


def load_method_settings(path: str | Path, profile: str, methods: Sequence[str], owner: str,
                         **overrides) -> dict[str, Method]:
    """{name: Method} of one profile of a settings file with the flat `overrides` applied to every method they
    concern (`Method.overrides`: e.g. `sigma` to the denoiser methods, `vae_eta` to latent; None: the file's).
    Raises one-line `SettingsError`s naming `owner`."""
    try:
        loaded = load_settings(settings_path(path), profile)
        missing = [m for m in methods if m not in loaded]
        if missing:
            raise SettingsError(f"{path} [{profile}] has no settings for {missing}; it has {sorted(loaded)}")
        return {name: s.override(**overrides) for name, s in loaded.items()}
    except SettingsError as err:
        raise SettingsError(f"{owner}: {err}") from None
