"""The one grid engine: evaluate methods at grid points, one row schema for grid and table cells, one selection rule.

A *row* (`row`) is everything a grid cell or a Table 1 cell reports: the method (name, table label, step, settings),
every number of `Evaluation.summary()`, trials, rollouts, diverged rollouts, seconds and Jacobian applications, then
the caller's context (dataset, videos, checkpoint provenance, commit, machine, date, ...). Rows read back from a CSV
hold text: `value` and `settings_of` read both kinds.

`select` is the selection rule: the lowest `<criterion>_mean` (a reading: "cut" by default, "whole" the older
protocol); a cell where any rollout diverged ranks after every cell where none did; a NaN reading is never selected
(ValueError naming the method when every cell is NaN). `combine` merges the rows of one setting over several
checkpoints (training seeds): per reading the mean and std over the rows of each row's mean over trials (std NaN for
one row, NaN rows left out) and `<r>_trial_std`, the mean of the rows' std over trials; the other numbers are means,
the rollout counts sums. `flat` turns a row into a CSV record: nested mappings flattened (`checkpoint_sha256`),
settings and lists as JSON, None and NaN empty.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import Tensor

from .dtw import READINGS
from .evaluate import Evaluation, evaluate
from .methods import Method, Models


def row(method: Method, evaluation: Evaluation, /, **context) -> dict:
    """One grid or table cell: method, label, step, settings, every summary number, counts, cost and `context`."""
    out = {"method": method.name, "label": type(method).label, "step": method.step_name(),
           "settings": method.settings()}
    out.update(evaluation.summary())
    out.update(trials=int(evaluation.diverged.shape[0]), videos_count=int(evaluation.diverged.shape[1]),
               rollouts=int(evaluation.diverged.numel()), diverged_rollouts=int((evaluation.diverged >= 0).sum()),
               seconds=float(evaluation.seconds), applications=float(evaluation.applications))
    out.update(context)
    return out


def value(r: Mapping[str, Any], key: str) -> float:
    """A row's number as a float (text from a CSV too); NaN when missing, empty or not a number."""
    v = r.get(key)
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def settings_of(r: Mapping[str, Any]) -> dict:
    """A row's settings as a mapping (a CSV holds them as JSON)."""
    s = r.get("settings") or {}
    return json.loads(s) if isinstance(s, str) else dict(s)


def rank(r: Mapping[str, Any], criterion: str = "cut") -> tuple:
    """The selection key of a row: (NaN reading, any rollout diverged, `<criterion>_mean`)."""
    x = value(r, f"{criterion}_mean")
    nan = math.isnan(x)
    return (nan, value(r, "diverged") > 0, math.inf if nan else x)


def select(rows: Sequence[Mapping[str, Any]], criterion: str = "cut") -> Mapping[str, Any]:
    """The selection rule, the one place it lives (see the module doc): the row of the lowest `rank`."""
    if criterion not in READINGS:
        raise ValueError(f"criterion must be a reading, one of {READINGS}, got {criterion!r}")
    rows = list(rows)
    names = sorted({str(r.get("method")) for r in rows})
    if not rows:
        raise ValueError("no cells to select from")
    best = min(rows, key=lambda r: rank(r, criterion))
    if math.isnan(value(best, f"{criterion}_mean")):
        raise ValueError(f"every cell of {', '.join(names)} has a NaN {criterion} reading (all rollouts diverged): "
                         f"nothing to select")
    return best


def run_grid(points: Iterable[Method], models: Models, videos: Tensor, /, trials: int = 3, seed: int = 0,
             on_row: Callable[[dict], Any] | None = None, *, batch_size: int | None = None, **context) -> list[dict]:
    """Rows of each method of `points` on (V, T, C, H, W) `videos`, `on_row(row)` after each; all checked first."""
    points = list(points)
    for p in points:
        p.check_models(models)
        p.check_frame(videos[0, 0].numel())
    rows = []
    for p in points:
        rows.append(row(p, evaluate(models, videos, p, trials, seed, batch_size=batch_size), seed=seed, **context))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _nan_mean(xs: Sequence[float]) -> float:
    ok = [x for x in xs if not math.isnan(x)]
    return sum(ok) / len(ok) if ok else math.nan


def _nan_std(xs: Sequence[float]) -> float:
    ok = [x for x in xs if not math.isnan(x)]
    if len(ok) < 2:
        return math.nan
    m = sum(ok) / len(ok)
    return math.sqrt(sum((x - m) ** 2 for x in ok) / (len(ok) - 1))


def combine(rows: Sequence[Mapping[str, Any]], readings: Sequence[str] = READINGS) -> dict:
    """Rows of one setting over several checkpoints (training seeds) -> one (see the module doc)."""
    out: dict[str, Any] = {"checkpoints": len(rows)}
    for name in readings:
        means = [value(r, f"{name}_mean") for r in rows]
        out[f"{name}_mean"] = _nan_mean(means)
        out[f"{name}_std"] = _nan_std(means)
        out[f"{name}_trial_std"] = _nan_mean([value(r, f"{name}_std") for r in rows])
    for key in ("speed_ratio_median", "stalled", "diverged", "median_video", "worst_video"):
        out[key] = _nan_mean([value(r, key) for r in rows])
    for key in ("rollouts", "diverged_rollouts"):
        out[key] = int(sum(0 if math.isnan(value(r, key)) else value(r, key) for r in rows))
    return out


def flat(r: Mapping[str, Any], keep_json: Sequence[str] = ("settings",)) -> dict:
    """A row as a CSV record: nested mappings flattened, `keep_json` keys and lists as JSON, None and NaN empty."""
    out = {}
    for k, v in r.items():
        if isinstance(v, Mapping) and k not in keep_json:
            out.update({f"{k}_{kk}": vv for kk, vv in flat(v, ()).items()})
        elif isinstance(v, (Mapping, list, tuple)):
            out[k] = json.dumps(v)
        elif isinstance(v, float) and math.isnan(v):
            out[k] = ""
        else:
            out[k] = "" if v is None else v
    return out


__all__ = ["row", "select", "rank", "run_grid", "combine", "flat", "value", "settings_of"]
