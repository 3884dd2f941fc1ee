"""Optuna search spaces derived from the family declarations (define-by-run).

A user override per parameter is one of:
- `{"low": a, "high": b, "log": bool}`: a range, checked against the hard bounds, a < b;
- `{"value": v}`: a fixed value, checked like any parameter value;
- `{"choices": [...]}`: a subset of a choice or bool parameter's values.
Parameters without an override use the family's default search range; a parameter with no
default range stays at its default value.

Ordering constraints (`below`, e.g. cyclical base_lr < max_lr) are kept while sampling: the
upper parameter is sampled first and the lower one's range is capped under it. That is only
always possible when the lower range starts below the upper one, which `space()` checks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lrsearch.errors import ScheduleError
from lrsearch.schedules import validate
from lrsearch.schedules.base import (
    ParamSpec,
    _coerce,
    make,
    param_specs,
    registry,
)

FAMILY_PARAM = "family"


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool
    integer: bool


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]


Dimension = Fixed | Range | Choice


def _field(family: str, name: str) -> str:
    return f"search_space.{family}.{name}"


def _error(family: str, name: str, message: str) -> ScheduleError:
    return ScheduleError(f"{_field(family, name)}: {message}", field=_field(family, name))


def _default_dimension(family: str, p: ParamSpec, epochs: int) -> Dimension:
    m = p.meta
    if m.choices is not None and p.default is not None:
        return Choice(m.choices)
    if m.search is None:
        if p.required:
            raise _error(
                family,
                p.name,
                "has no default search range; give it as "
                '{"value": ...} or {"low": ..., "high": ...}',
            )
        return Fixed(p.default)
    low, high = m.search.resolve(epochs)
    if p.kind == "int":
        low = max(math.ceil(low), int(m.ge if m.ge is not None else low))
        high = max(low, round(high))
        if low == high:
            return Fixed(low)
    return Range(float(low), float(high), m.search.log, p.kind == "int")


def _override(family: str, p: ParamSpec, raw: Any) -> Dimension:
    if not isinstance(raw, Mapping):
        raise _error(
            family, p.name, f"must be an object with low/high, value or choices. Received: {raw!r}"
        )
    keys = set(raw)
    if keys == {"value"}:
        try:
            return Fixed(_coerce(family, p, raw["value"]))
        except ScheduleError as e:
            raise _error(family, p.name, str(e)) from None
    if keys == {"choices"}:
        return _choices(family, p, raw["choices"])
    if keys in ({"low", "high"}, {"low", "high", "log"}):
        return _range(family, p, raw["low"], raw["high"], raw.get("log", False))
    raise _error(
        family,
        p.name,
        "must have exactly `value`, `choices`, or `low` and `high` "
        f"(and optionally `log`). Received keys: {sorted(keys)}",
    )


def _choices(family: str, p: ParamSpec, raw: Any) -> Choice:
    allowed = (True, False) if p.kind == "bool" else p.meta.choices
    if allowed is None:
        raise _error(family, p.name, "is not a choice parameter; use low/high or value")
    if not isinstance(raw, list) or not raw:
        raise _error(family, p.name, f"choices must be a non-empty list. Received: {raw!r}")
    for c in raw:
        if not any(c is a or (c == a and type(c) is type(a)) for a in allowed):
            raise _error(family, p.name, f"choice {c!r} is not one of {list(allowed)}")
    return Choice(tuple(dict.fromkeys(raw)))


def _range(family: str, p: ParamSpec, low: Any, high: Any, log: Any) -> Range:
    if p.kind not in ("float", "int"):
        raise _error(family, p.name, f"a {p.kind} parameter cannot take a low/high range")
    if not isinstance(log, bool):
        raise _error(family, p.name, f"log must be true or false. Received: log={log!r}")
    try:
        lo, hi = _coerce(family, p, low), _coerce(family, p, high)
    except ScheduleError as e:
        raise _error(family, p.name, str(e)) from None
    if lo is None or hi is None:
        raise _error(family, p.name, "low and high are required")
    if not lo < hi:
        raise _error(family, p.name, f"low must be < high. Received: low={low!r}, high={high!r}")
    if log and lo <= 0:
        raise _error(family, p.name, f"a log range needs low > 0. Received: low={low!r}")
    return Range(float(lo), float(hi), log, p.kind == "int")


def space(
    family: str, overrides: Mapping[str, Any] | None = None, *, epochs: int
) -> dict[str, Dimension]:
    """The resolved search space of one family: a Dimension per parameter."""
    cls = registry.get(family)
    specs = {p.name: p for p in param_specs(cls)}
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in specs:
            raise _error(
                family,
                key,
                f"unknown parameter `{key}` of `{family}`. Known parameters: {', '.join(specs)}",
            )
    dims = {
        name: (
            _override(family, p, overrides[name])
            if name in overrides
            else _default_dimension(family, p, epochs)
        )
        for name, p in specs.items()
    }
    for name, p in specs.items():
        if p.meta.lt_epochs:
            d = dims[name]
            top = d.value if isinstance(d, Fixed) else d.high if isinstance(d, Range) else None
            if top is not None and top >= epochs:
                raise _error(
                    family, name, f"must be < `epochs`. Received: {name}={top!r}, epochs={epochs}"
                )
        if p.meta.below is not None:
            _check_order(family, name, dims[name], p.meta.below, dims[p.meta.below])
    _check_discrete(family, dims)
    return dims


DISCRETE_CHECKED = 64  # parameter sets built by _check_discrete, at most


def _check_discrete(family: str, dims: Mapping[str, Dimension]) -> None:
    """A space with no range is a few parameter sets: build each, so that one no trial could
    run (piecewise `values` that do not match its `boundaries_epochs`) is refused up front.
    Cross-parameter rules of spaces with ranges are checked by each trial's own parameters."""
    options: list[list[Any]] = []
    for d in dims.values():
        if isinstance(d, Range):
            return
        options.append([d.value] if isinstance(d, Fixed) else list(d.choices))
    for combination in itertools.islice(itertools.product(*options), DISCRETE_CHECKED):
        try:
            make(family, dict(zip(dims, combination, strict=True)))
        except ScheduleError as e:
            raise _error(family, e.field or "params", str(e)) from None


def grid(
    family: str, overrides: Mapping[str, Any] | None = None, *, epochs: int, points: int
) -> dict[str, list[Any]]:
    """The values per searched parameter of a grid search (what Optuna's GridSampler takes):
    a choice's values, or `points` values spread over a range (geometrically on a log range;
    whole numbers, deduplicated, on an integer one). Fixed parameters are not in the grid."""
    out: dict[str, list[Any]] = {}
    for name, d in space(family, overrides, epochs=epochs).items():
        if isinstance(d, Choice):
            out[name] = list(d.choices)
        elif isinstance(d, Range):
            values = (np.geomspace if d.log else np.linspace)(d.low, d.high, points)
            out[name] = (
                sorted({round(v) for v in values}) if d.integer else [float(v) for v in values]
            )
    return out


def grid_size(values: Mapping[str, Sequence[Any]]) -> int:
    """The number of grid points: the product of the values per parameter (the grid itself,
    which can be astronomically large, is never built)."""
    return math.prod(len(v) for v in values.values())


def _lowest(d: Dimension) -> Any:
    return d.value if isinstance(d, Fixed) else d.low if isinstance(d, Range) else None


def _check_order(
    family: str, name: str, lower: Dimension, upper_name: str, upper: Dimension
) -> None:
    lo, up = _lowest(lower), _lowest(upper)
    if lo is None or up is None:
        return
    if not lo < up:
        raise _error(
            family,
            name,
            f"must be able to stay < `{upper_name}`: its lowest value "
            f"{lo!r} must be < the lowest {upper_name} {up!r}",
        )


def distribution(d: Range | Choice, cap: float | None = None) -> BaseDistribution:
    """The Optuna distribution a searched dimension is sampled from. `cap`: the value of the
    parameter this one must stay below (`below`); it lowers a float range's top just under
    it (an integer range is not capped). Without `cap`: the declared range, which holds every
    value any trial of the space was given."""
    if isinstance(d, Choice):
        return CategoricalDistribution(list(d.choices))
    if d.integer:
        return IntDistribution(int(d.low), int(d.high), log=d.log)
    high = d.high if cap is None else min(d.high, cap * (1.0 - 1e-9))
    return FloatDistribution(d.low, high, log=d.log)


def distributions(
    family: str, overrides: Mapping[str, Any] | None = None, *, epochs: int
) -> dict[str, BaseDistribution]:
    """The searched parameters of one family (those that are not fixed), each with the
    Optuna distribution of its declared range (`distribution` without a cap), by the
    parameter's own name (no `family.` prefix)."""
    return {
        name: distribution(d)
        for name, d in space(family, overrides, epochs=epochs).items()
        if not isinstance(d, Fixed)
    }


def _sample(trial: Any, name: str, d: Dimension, cap: float | None) -> Any:
    if isinstance(d, Fixed):
        return d.value
    dist = distribution(d, cap)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def suggest(
    trial: Any,
    family: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Sample one family's parameters on an Optuna trial; returns every parameter's value.

    Optuna parameter names are `prefix + name`. Parameters that must stay below another are
    sampled after it, capped under its value.
    """
    dims = space(family, overrides, epochs=epochs)
    specs = {p.name: p for p in param_specs(registry.get(family))}
    order = sorted(dims, key=lambda n: specs[n].meta.below is not None)
    values: dict[str, Any] = {}
    for name in order:
        below = specs[name].meta.below
        cap = values.get(below) if below is not None else None
        values[name] = _sample(trial, prefix + name, dims[name], cap)
    params = {name: values[name] for name in dims}
    # Cross-parameter and training-length checks: a clear error instead of a bad trial.
    if steps_per_epoch is not None:
        validate(family, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    else:
        make(family, params)
    return params


def suggest_any(
    trial: Any,
    families: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Cross-family search: the family is a categorical choice, and each family's parameters are
    conditional on it (named `family.param` so that two families never share a distribution)."""
    overrides = dict(overrides or {})
    for name in overrides:
        if name not in families:
            raise ScheduleError(
                f"search_space: `{name}` is not one of the study's families {list(families)}",
                field=f"search_space.{name}",
            )
    family = trial.suggest_categorical(FAMILY_PARAM, list(families))
    return family, suggest(
        trial,
        family,
        overrides.get(family),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        prefix=f"{family}.",
    )
