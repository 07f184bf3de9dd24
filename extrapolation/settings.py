"""Extrapolation settings of each method (paper A.6), validated once and read from one file per dataset.

A settings file (``configs/extrapolation/<dataset>.yaml``) holds ``steps`` and one or more *profiles*
(``paper``: appendix A.6; ``selected``: chosen on the selection videos), each mapping a method to its settings.
The training callback, ``predict``, the sweeps and the Table 1 script all read these files.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from errors import InputError

from .rollouts import STEP_METHODS
from .tangent import JACOBIANS

METHODS = ("tangent", "linear", "latent")
_SOLVER_KEYS = {"method", "tol", "max_iters", "track_iters", "oversample", "chunk_size", "symmetric", "jacobian",
                "fd_step", "power"}
_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


class SettingsError(InputError):
    """A setting out of range or of the wrong type; the message names the setting and what was expected."""


def number(value: Any, name: str) -> float:
    """A float from a number or a fraction string such as "25/255" (noise levels read best that way)."""
    if isinstance(value, str) and (m := _FRACTION.match(value)):
        value = float(m.group(1)) / float(m.group(2))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be finite, got {value!r}")
    return float(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class MethodSettings:
    """How one method extrapolates: Alg. 1 (tangent), Alg. 2 (linear) or Alg. 3 (latent), paper A.6."""

    method: str
    steps: int
    eta: float
    sigma: float = 0.0  # tangent, linear: noise level in units of a [0, 1] image
    k: int = 4  # tangent with an eigen-projection step
    solver: Mapping[str, Any] = field(default_factory=dict)  # tangent: `tangent_rollout` keywords
    reencode: bool = True  # latent: z_i = encode(u_i); False: a straight line in latent space

    def __post_init__(self):
        name = f"{self.method}."
        if self.method not in METHODS:
            raise SettingsError(f"method must be one of {METHODS}, got {self.method!r}")
        object.__setattr__(self, "steps", _positive_int(self.steps, name + "steps"))
        eta = number(self.eta, name + "eta")
        if eta <= 0:
            raise SettingsError(f"{name}eta must be > 0, got {eta}")
        object.__setattr__(self, "eta", eta)
        sigma = number(self.sigma, name + "sigma")
        if sigma < 0:
            raise SettingsError(f"{name}sigma must be >= 0, got {sigma}")
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "k", _positive_int(self.k, name + "k"))
        if not isinstance(self.reencode, bool):
            raise SettingsError(f"{name}reencode must be true or false, got {self.reencode!r}")
        solver = dict(self.solver or {})
        unknown = set(solver) - _SOLVER_KEYS
        if unknown:
            raise SettingsError(f"{name}solver: unknown keys {sorted(unknown)}; expected some of {sorted(_SOLVER_KEYS)}")
        if solver.get("method", "block") not in STEP_METHODS:
            raise SettingsError(f"{name}solver.method must be one of {STEP_METHODS}, got {solver['method']!r}")
        if solver.get("jacobian", "autodiff") not in JACOBIANS:
            raise SettingsError(f"{name}solver.jacobian must be one of {JACOBIANS}, got {solver['jacobian']!r}")
        for key in ("max_iters", "track_iters", "power", "chunk_size"):
            if solver.get(key) is not None:
                _positive_int(solver[key], f"{name}solver.{key}")
        for key in ("tol", "fd_step"):
            if key in solver and number(solver[key], f"{name}solver.{key}") <= 0:
                raise SettingsError(f"{name}solver.{key} must be > 0, got {solver[key]!r}")
        object.__setattr__(self, "solver", solver)

    @property
    def uses_k(self) -> bool:
        return self.method == "tangent" and self.solver.get("method", "block") != "filter"

    def check_frame(self, numel: int) -> "MethodSettings":
        """Check k against the frame size C*H*W (known once the data is set up)."""
        if self.uses_k and self.k > numel:
            raise SettingsError(f"{self.method}.k must be in [1, {numel}] (C*H*W of the frames), got {self.k}")
        return self

    def with_overrides(self, **overrides) -> "MethodSettings":
        """A copy with the given fields replaced (None values are ignored); validated again."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def step_name(self) -> str:
        """The tangent step in words, for tables: e.g. 'eigen-projection (block)' or 'A^2 v (fd)'."""
        if self.method != "tangent":
            return ""
        s = {"method": "block", **self.solver}
        if s["method"] == "filter":
            op = "A" if s.get("symmetric", True) else "J"
            return f"{op}^{s.get('power', 2)} v ({s.get('jacobian', 'fd')})"
        extra = ", fd" if s.get("jacobian") == "fd" else ""
        extra += f", {s['track_iters']} it/step" if s.get("track_iters") else ""
        return f"eigen-projection ({s['method']}{extra})"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["solver"] = dict(self.solver)
        if self.method == "latent":
            d.pop("sigma"), d.pop("k"), d.pop("solver")
        else:
            d.pop("reencode")
            if self.method == "linear":
                d.pop("k"), d.pop("solver")
            elif not self.uses_k:  # the A^m v step has no k
                d.pop("k")
        return d


def parse_profile(data: Mapping[str, Any], steps: int, where: str = "") -> dict[str, MethodSettings]:
    """{method: settings} of one profile mapping such as {tangent: {eta: .., sigma: ..}, linear: {...}}."""
    out = {}
    for method, values in data.items():
        if method not in METHODS:
            raise SettingsError(f"{where}unknown method {method!r}; expected some of {METHODS}")
        if not isinstance(values, Mapping):
            raise SettingsError(f"{where}{method} must be a mapping of settings, got {values!r}")
        try:
            out[method] = MethodSettings(method=method, steps=values.get("steps", steps),
                                         **{k: v for k, v in values.items() if k != "steps"})
        except TypeError as err:  # an unknown key
            raise SettingsError(f"{where}{method}: {err}") from None
        except SettingsError as err:
            raise SettingsError(f"{where}{err}") from None
    return out


def load_settings(path: str | Path, profile: str = "selected") -> dict[str, MethodSettings]:
    """{method: MethodSettings} of one profile of a settings file (see module doc)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"extrapolation settings file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if profile not in data or not isinstance(data[profile], Mapping):
        profiles = [k for k, v in data.items() if isinstance(v, Mapping)]
        raise SettingsError(f"{path}: no profile {profile!r}; it has {profiles}")
    return parse_profile(data[profile], data.get("steps"), where=f"{path} [{profile}]: ")
