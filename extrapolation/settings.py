"""Settings files: each method's extrapolation settings (paper A.6) per *profile*, one file per dataset.

A settings file (``configs/extrapolation/<dataset>.yaml``) holds ``steps`` and one or more profiles (``paper``:
appendix A.6; ``selected``: chosen on the selection videos), each mapping a registered method name
(`extrapolation.methods.METHODS`) to its settings. The training callback, ``predict``, the grids and Table 1 all
read these files through `load_settings`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .methods import Method, SettingsError, method_class


def parse_profile(data: Mapping[str, Any], steps: Any, where: str = "") -> dict[str, Method]:
    """{name: method} of one profile mapping such as {tangent: {eta: .., sigma: ..}, linear: {...}}."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}a profile must map method names to settings, got {data!r}")
    return {name: method_class(name, where).from_settings(values, steps, where) for name, values in data.items()}


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The parsed YAML of a settings file; one-line errors for a missing, empty or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"extrapolation settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SettingsError(f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, Mapping) or not data:
        raise SettingsError(f"{path} is empty or not a mapping: expected `steps` and profiles such as `paper:`")
    return dict(data)


def profiles(path: str | Path) -> list[str]:
    """The profile names of a settings file."""
    return [k for k, v in read_settings_file(path).items() if isinstance(v, Mapping)]


def load_settings(path: str | Path, profile: str = "selected") -> dict[str, Method]:
    """{method name: Method} of one profile of a settings file (see module doc)."""
    data = read_settings_file(path)
    if profile not in data or not isinstance(data[profile], Mapping):
        raise SettingsError(f"{path}: no profile {profile!r}; it has {profiles(path)}")
    if "steps" not in data:
        raise SettingsError(f"{path}: no `steps` (frames generated after the two given)")
    return parse_profile(data[profile], data["steps"], where=f"{path} [{profile}]: ")
