"""Extrapolation methods as classes in one registry (paper Alg. 1-3, and the references and variants beside them).

A method is a frozen dataclass: its fields are its settings (validated at construction), and it knows the models
it needs (`needs`), how to roll out a batch of videos from their first two frames (`rollout`), its table label,
its selection grid around the paper's settings (`grid`) and which flat overrides (`--extrapolation.sigma=...`)
apply to it. Settings files (`configs/extrapolation/<dataset>.yaml`) name methods by their registry key. A new
method is one class here, decorated with `@register`, plus one entry in a settings file; nothing else switches
on method names.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor

from errors import InputError

from .rollouts import VELOCITIES, RolloutInfo, latent_rollout, linear_rollout, paced_rollout, tangent_rollout
from .tangent import STEPS, EigenProjection, PowerFilter, TangentStep

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")
SIGMA_GRID = (5, 10, 15, 25, 40, 60)  # selection grid of noise levels, in units of 1/255 (5: translated winners sat at 10)
ETA_SCALES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)  # selection grid of step sizes, as multiples of the paper's
SUBSTEPS_GRID = (1, 2)  # selection grid of the paced methods' steps per frame


class SettingsError(InputError):
    """A setting out of range or of the wrong type; the message names the setting and what was expected."""


@dataclass
class Models:
    """The callables methods need: `denoise` (tangent, linear), `encode` and `decode` (latent)."""

    denoise: Callable[[Tensor], Tensor] | None = None
    encode: Callable[[Tensor], Tensor] | None = None
    decode: Callable[[Tensor], Tensor] | None = None


def number(value: Any, name: str) -> float:
    """A finite float from a number or a fraction string such as "25/255" (noise levels read best that way)."""
    if isinstance(value, str) and (m := _FRACTION.match(value)):
        num, den = float(m.group(1)), float(m.group(2))
        if den == 0:
            raise SettingsError(f"{name} must be a number, got {value!r} (division by zero)")
        value = num / den
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be finite, got {value!r}")
    return float(value)


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{name} must be a positive integer, got {value!r}")
    return value


METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available to settings files under `cls.name`."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a method needs a new registry name, got {cls.name!r}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str, where: str = "") -> type["Method"]:
    if name not in METHODS:
        raise SettingsError(f"{where}unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True, kw_only=True)
class Method:
    """Base class: `steps` frames generated after the two given ones."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # its row in tables
    needs: ClassVar[tuple[str, ...]] = ()  # fields of `Models` it calls
    overrides: ClassVar[Mapping[str, str]] = {"steps": "steps"}  # flat override -> field
    selected_by_grid: ClassVar[bool] = True  # False: nothing to select (a reference)
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "steps", positive_int(self.steps, f"{self.name}.steps"))

    # -------------------------------------------------------------- running
    def rollout(self, models: Models, first: Tensor, generators: Sequence[torch.Generator] | None
                ) -> tuple[Tensor, RolloutInfo]:
        """(B, 2, C, H, W) first frames -> ((B, steps + 2, C, H, W), `RolloutInfo`)."""
        raise NotImplementedError

    def check_models(self, models: Models) -> None:
        missing = [n for n in self.needs if getattr(models, n) is None]
        if missing:
            raise ValueError(f"method {self.name!r} needs Models({', '.join(f'{n}=...' for n in missing)})")

    def check_frame(self, numel: int) -> "Method":
        """Check the settings against the frame size C*H*W (known once the data is set up)."""
        return self

    # -------------------------------------------------------------- settings
    def with_overrides(self, **overrides) -> "Method":
        """A copy with fields replaced (None values ignored); validated again."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def override(self, **flat) -> "Method":
        """Apply the flat overrides that concern this method (`overrides` maps their names to fields)."""
        return self.with_overrides(**{self.overrides[k]: v for k, v in flat.items() if k in self.overrides})

    def settings(self) -> dict[str, Any]:
        """The settings as plain values (tables, JSON cells, `info.json`), `method` first."""
        out = {"method": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = step_settings(value) if isinstance(value, TangentStep) else value
        return out

    def step_name(self) -> str:
        """How it steps, in words, for tables ('' where there is nothing to say)."""
        return ""

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        """The selection grid of this method around the paper's settings `paper` (None: a method the paper does
        not have; around its own settings), with this method's own step."""
        return [self]

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], steps: Any, where: str = "") -> "Method":
        """A method from a settings file's mapping (plus the file's `steps`), with one-line errors."""
        if not isinstance(values, Mapping):
            raise SettingsError(f"{where}{cls.name} must be a mapping of settings, got {values!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise SettingsError(f"{where}{cls.name}: unknown settings {unknown}; expected some of {sorted(fields)}")
        values = dict(values)
        if "step" in values:
            values["step"] = parse_step(values["step"], f"{where}{cls.name}.")
        try:
            return cls(**{"steps": steps, **values})
        except TypeError as err:  # a required setting missing
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and f.name != "steps"
                       and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            raise SettingsError(f"{where}{cls.name}: missing settings {missing or err}") from None
        except SettingsError as err:
            raise SettingsError(f"{where}{err}") from None


def parse_step(value: Any, where: str = "") -> TangentStep:
    """A tangent step from `{type: filter, power: 2}` / `{type: eigen, k: 4, solver: block}` or a bare type name."""
    if isinstance(value, TangentStep):
        return value
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping) or value.get("type") not in STEPS:
        raise SettingsError(f"{where}step must be a mapping with `type` one of {sorted(STEPS)}, got {value!r}")
    cls = STEPS[value["type"]]
    args = {k: v for k, v in value.items() if k != "type"}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise SettingsError(f"{where}step ({value['type']}): unknown settings {unknown}; expected some of {sorted(known)}")
    for key in ("tol", "fd_step"):
        if key in args and args[key] is not None:
            args[key] = number(args[key], f"{where}step.{key}")
    try:
        return cls(**args)
    except ValueError as err:
        raise SettingsError(f"{where}{err}") from None


def step_settings(step: TangentStep) -> dict[str, Any]:
    """A step as the settings-file mapping that `parse_step` reads back, defaults left out."""
    out = {"type": step.name}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if value != f.default:
            out[f.name] = value
    return out


# ------------------------------------------------------------------------------------------------- the methods
@dataclass(frozen=True, kw_only=True)
class DenoiserMethod(Method):
    """A method that walks with a denoiser at noise level `sigma` (units of a [0, 1] image) and step size `eta`."""

    needs: ClassVar[tuple[str, ...]] = ("denoise",)
    overrides: ClassVar[Mapping[str, str]] = {"steps": "steps", "eta": "eta", "sigma": "sigma"}
    eta: float
    sigma: float

    def __post_init__(self):
        super().__post_init__()
        eta = number(self.eta, f"{self.name}.eta")
        if eta <= 0:
            raise SettingsError(f"{self.name}.eta must be > 0, got {eta}")
        sigma = number(self.sigma, f"{self.name}.sigma")
        if sigma < 0:
            raise SettingsError(f"{self.name}.sigma must be >= 0, got {sigma}")
        object.__setattr__(self, "eta", eta)
        object.__setattr__(self, "sigma", sigma)

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        eta = (paper or self).eta
        return [self.with_overrides(sigma=s / 255, eta=round(eta * e, 4)) for s, e in itertools.product(SIGMA_GRID, ETA_SCALES)]


@register
@dataclass(frozen=True, kw_only=True)
class Tangent(DenoiserMethod):
    """Paper Alg. 1: steps along the tangent direction `step` of the noisy velocity, rescaled to its norm."""

    name: ClassVar[str] = "tangent"
    label: ClassVar[str] = "Ours: tangent (Alg. 1)"
    overrides: ClassVar[Mapping[str, str]] = {"steps": "steps", "eta": "eta", "sigma": "sigma", "step": "step", "k": "k"}
    step: TangentStep = EigenProjection()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.step, TangentStep):
            raise SettingsError(f"{self.name}.step must be a tangent step, got {self.step!r}")

    def with_overrides(self, **overrides) -> "Method":
        k = overrides.pop("k", None)
        if "step" in overrides and overrides["step"] is not None:
            overrides["step"] = parse_step(overrides["step"], f"{self.name}.")
        out = super().with_overrides(**overrides)
        if k is not None:
            if not isinstance(out.step, EigenProjection):
                raise SettingsError(f"{self.name}: k applies to an eigen-projection step, not {out.step.describe()}")
            try:
                out = dataclasses.replace(out, step=dataclasses.replace(out.step, k=k))
            except ValueError as err:
                raise SettingsError(f"{self.name}.{err}") from None
        return out

    def check_frame(self, numel: int) -> "Method":
        try:
            self.step.check_frame(numel)
        except ValueError as err:
            raise SettingsError(f"{self.name}.{err}") from None
        return self

    def rollout(self, models, first, generators):
        return tangent_rollout(models.denoise, first[:, 0], first[:, 1], self.steps, self.eta, self.sigma, self.step,
                               generators)

    def step_name(self) -> str:
        return self.step.describe()

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        points = super().grid(paper)
        if isinstance(self.step, EigenProjection):  # k is a dimension only for an eigen-projection
            return [p.with_overrides(k=k) for p in points for k in (2, 4, 8)]
        return points


@register
@dataclass(frozen=True, kw_only=True)
class Linear(DenoiserMethod):
    """Paper Alg. 2, the denoiser baseline: a linear step in noisy space, then denoise."""

    name: ClassVar[str] = "linear"
    label: ClassVar[str] = "Denoiser baseline (Alg. 2)"

    def rollout(self, models, first, generators):
        return linear_rollout(models.denoise, first[:, 0], first[:, 1], self.steps, self.eta, self.sigma, generators)


def _check_pace(method) -> None:
    gain = number(method.gain, f"{method.name}.gain")
    if not 0 <= gain <= 1:
        raise SettingsError(f"{method.name}.gain must be in [0, 1], got {gain}")
    object.__setattr__(method, "gain", gain)
    if method.velocity not in VELOCITIES:
        raise SettingsError(f"{method.name}.velocity must be one of {VELOCITIES}, got {method.velocity!r}")
    if isinstance(method.substeps, bool) or not isinstance(method.substeps, int) or method.substeps < 1:
        raise SettingsError(f"{method.name}.substeps must be a positive integer, got {method.substeps!r}")


def _paced_grid(points: list) -> list:
    """The paced methods' selection grid: their sigma x eta grid at each number of substeps per frame."""
    return [p.with_overrides(substeps=n) for n in SUBSTEPS_GRID for p in points]


@register
@dataclass(frozen=True, kw_only=True)
class TangentPaced(Tangent):
    """Alg. 1 with its pace from the two given frames, not from the noise (ours, not the paper's): steps of
    eta ||u1 - u0|| along the tangent direction `step` of the previous step's direction, held at that pace
    (`paced_rollout`)."""

    name: ClassVar[str] = "tangent_paced"
    label: ClassVar[str] = "Ours: tangent, pace from the given frames"
    eta: float = 1.0  # a multiple of the given clean displacement ||u1 - u0||
    step: TangentStep = PowerFilter()
    gain: float = 0.5  # pace controller: 0 for none
    velocity: str = "transport"  # what the step projects: the previous direction (transport), or "clean" / "noisy"
    substeps: int = 1  # steps walked per generated frame, each 1/substeps of the frame's step

    def __post_init__(self):
        super().__post_init__()
        _check_pace(self)

    def rollout(self, models, first, generators):
        return paced_rollout(models.denoise, first[:, 0], first[:, 1], self.steps, self.sigma, self.step, generators,
                             eta=self.eta, gain=self.gain, velocity=self.velocity, substeps=self.substeps)

    def step_name(self) -> str:
        return f"{self.step.describe()}, pace of the given frames"

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        return _paced_grid(super().grid(paper))


@register
@dataclass(frozen=True, kw_only=True)
class LinearPaced(Linear):
    """Alg. 2 with the pace of the two given frames (ours, the baseline for `tangent_paced`): steps of
    eta ||u1 - u0|| along the last clean displacement (or the first one, `velocity: transport`), then denoise."""

    name: ClassVar[str] = "linear_paced"
    label: ClassVar[str] = "Denoiser baseline, pace from the given frames"
    eta: float = 1.0
    gain: float = 0.5
    velocity: str = "clean"
    substeps: int = 1

    def __post_init__(self):
        super().__post_init__()
        _check_pace(self)

    def rollout(self, models, first, generators):
        return paced_rollout(models.denoise, first[:, 0], first[:, 1], self.steps, self.sigma, None, generators,
                             eta=self.eta, gain=self.gain, velocity=self.velocity, substeps=self.substeps)

    def step_name(self) -> str:
        return "pace of the given frames"

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        return _paced_grid(super().grid(paper))


@register
@dataclass(frozen=True, kw_only=True)
class Latent(Method):
    """Paper Alg. 3, the VAE baseline: a linear step in latent space; `reencode` rebuilds z_i from the frame."""

    name: ClassVar[str] = "latent"
    label: ClassVar[str] = "VAE (Alg. 3)"
    needs: ClassVar[tuple[str, ...]] = ("encode", "decode")
    overrides: ClassVar[Mapping[str, str]] = {"steps": "steps", "vae_eta": "eta"}
    eta: float
    reencode: bool = True

    def __post_init__(self):
        super().__post_init__()
        eta = number(self.eta, f"{self.name}.eta")
        if eta <= 0:
            raise SettingsError(f"{self.name}.eta must be > 0, got {eta}")
        object.__setattr__(self, "eta", eta)
        if not isinstance(self.reencode, bool):
            raise SettingsError(f"{self.name}.reencode must be true or false, got {self.reencode!r}")

    def rollout(self, models, first, generators):
        return latent_rollout(models.encode, models.decode, first[:, 0], first[:, 1], self.steps, self.eta,
                              reencode=self.reencode)

    def step_name(self) -> str:
        return "re-encode" if self.reencode else "straight line"

    def grid(self, paper: "Method | None" = None) -> list["Method"]:
        return [self.with_overrides(eta=round((paper or self).eta * e, 4), reencode=r)
                for e, r in itertools.product(ETA_SCALES, (True, False))]


@register
@dataclass(frozen=True, kw_only=True)
class Static(Method):
    """Reference, not in the paper: the second given frame held (no motion); needs no model."""

    name: ClassVar[str] = "static"
    label: ClassVar[str] = "Reference, not in the paper: frame 2 held"
    selected_by_grid: ClassVar[bool] = False

    def rollout(self, models, first, generators):
        frames = torch.cat([first, first[:, 1:2].expand(-1, self.steps, *first.shape[2:])], 1)
        return frames, RolloutInfo(torch.full((first.shape[0],), -1, dtype=torch.long, device=first.device))


__all__ = ["METHODS", "Method", "DenoiserMethod", "Tangent", "Linear", "TangentPaced", "LinearPaced", "Latent", "Static", "Models", "SettingsError",
           "register", "method_class", "parse_step", "step_settings", "number", "positive_int", "PowerFilter",
           "EigenProjection"]
