"""The schedule-family protocol, its parameter declarations and the registry.

A family is a frozen dataclass: its fields are its parameters, each declared once with
`param(...)` (default, hard bounds, default search range, description). The class's
`schedule` method is the pure formula. The API schema, the stored JSON, the Optuna search
space and the Keras adapter all derive from that one declaration.

Conventions (shared by every family):
- `s` is the 0-based optimizer step; the first batch of training uses s = 0, as in Keras.
- `spe` = steps per epoch, `E` = epochs, `S = E * spe` total steps.
- A duration in epochs becomes `round(x * spe)` steps (rounded half up).
- `schedule(s, t, xp)` works on float64 arrays with `xp` = numpy, and on float64 tensors with
  `xp` = keras.ops: the same code computes `curve()` and the Keras schedule, so they cannot drift.
  It must only use names both provide (floor, exp, log, cos, sqrt, power, where, minimum,
  maximum) and must never divide by zero in a branch `where` discards (both are evaluated).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from lrsearch.errors import ScheduleError, require_int
from lrsearch.registry import Registry as GenericRegistry

Kind = Literal["float", "int", "bool", "choice", "float_list"]
# A range-test role says how a range test's suggestions become this parameter's bounds
# (lrsearch.range_test.suggest.bounds_for_role states each rule).
Role = Literal["start", "peak", "base"]

_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class SearchRange:
    """Default search range of a parameter.

    `per_epochs=True` means low/high are fractions of the training length in epochs
    (a warm-up of 0-30 % of the run), resolved when the epochs are known.
    """

    low: float
    high: float
    log: bool = False
    per_epochs: bool = False

    def resolve(self, epochs: int | None) -> tuple[float, float]:
        if not self.per_epochs:
            return self.low, self.high
        if epochs is None:
            raise ScheduleError("This search range is relative to `epochs`; pass epochs.")
        return self.low * epochs, self.high * epochs


@dataclass(frozen=True)
class ParamMeta:
    """Everything known about one parameter besides its name, type and default."""

    description: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    search: SearchRange | None = None  # None: not searched by default (stays at its default)
    below: str | None = None  # this parameter must be < the named one (checked and sampled so)
    role: Role | None = None
    lt_epochs: bool = False  # a duration in epochs that must be shorter than the training
    max_items: int | None = None  # a list parameter's longest length (its cost grows with it)


def param(
    default: Any = _MISSING,
    *,
    description: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    search: SearchRange | None = None,
    below: str | None = None,
    role: Role | None = None,
    lt_epochs: bool = False,
    max_items: int | None = None,
) -> Any:
    """Declare a family parameter (a dataclass field carrying its ParamMeta)."""
    meta = ParamMeta(
        description, gt, ge, lt, le, choices, search, below, role, lt_epochs, max_items
    )
    if default is _MISSING:
        return field(metadata={"param": meta})
    return field(default=default, metadata={"param": meta})


@dataclass(frozen=True)
class ParamSpec:
    """A parameter as the outside world sees it (plain data; `as_dict` is JSON-ready)."""

    name: str
    kind: Kind
    default: Any
    required: bool
    nullable: bool
    meta: ParamMeta

    def as_dict(self, epochs: int | None = None) -> dict[str, Any]:
        m = self.meta
        bounds = {k: v for k, v in (("gt", m.gt), ("ge", m.ge), ("lt", m.lt), ("le", m.le))}
        search = None if m.search is None else dataclasses.asdict(m.search)
        return {
            "name": self.name,
            "type": self.kind,
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
            "required": self.required,
            "nullable": self.nullable,
            "bounds": {k: v for k, v in bounds.items() if v is not None},
            "choices": list(m.choices) if m.choices else None,
            "search": search,
            "below": m.below,
            "shorter_than_training": m.lt_epochs,
            "max_items": m.max_items,
            "description": m.description,
        }


def round_half_up(x: float) -> int:
    """round(x) with halves going up (Python's round() goes to even: round(2.5) == 2)."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Timeline:
    """The training length a schedule is laid out on."""

    steps_per_epoch: int
    epochs: int

    def __post_init__(self) -> None:
        for name in ("steps_per_epoch", "epochs"):
            require_int(name, getattr(self, name), 1, ScheduleError)

    @property
    def total_steps(self) -> int:
        """S = epochs * steps_per_epoch."""
        return self.steps_per_epoch * self.epochs

    def steps(self, epochs: float) -> int:
        """A duration in epochs as a whole number of steps: round(x * spe), halves up."""
        return round_half_up(epochs * self.steps_per_epoch)

    def epoch(self, s: Any, xp: Any, per_epoch: bool = True) -> Any:
        """e = floor(s / spe) (per-epoch) or s / spe (continuous)."""
        e = s / self.steps_per_epoch
        return xp.floor(e) if per_epoch else e


F = TypeVar("F", bound="Family")


@dataclass(frozen=True, kw_only=True)
class Family:
    """Base class of every schedule family. Subclasses are frozen dataclasses of parameters.

    Class attributes: `name` (stable ID stored in rows), `formula` (human-readable), and
    `adaptive` (the LR reacts to metrics, so the curve is only known after training).
    """

    name: ClassVar[str]
    formula: ClassVar[str]
    adaptive: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for spec in param_specs(type(self)):
            object.__setattr__(self, spec.name, _coerce(self.name, spec, getattr(self, spec.name)))
        for spec in param_specs(type(self)):
            other = spec.meta.below
            mine = getattr(self, spec.name)
            if other is not None and mine is not None and not mine < getattr(self, other):
                raise ScheduleError(
                    f"{self.name}: argument `{spec.name}` must be < `{other}`. Received: "
                    f"{spec.name}={mine!r}, {other}={getattr(self, other)!r}",
                    field=spec.name,
                )
        self.check_params()

    def check_params(self) -> None:
        """Cross-parameter checks that need no training length (override when needed)."""

    def check(self, t: Timeline) -> None:
        """Checks that need the training length: declared durations (`lt_epochs`) must be
        shorter than the training, then the family's own `check_timeline`."""
        for spec in param_specs(type(self)):
            value = getattr(self, spec.name)
            if spec.meta.lt_epochs and t.steps(value) >= t.total_steps:
                raise self.fail(
                    spec.name, "must be < `epochs`", **{spec.name: value, "epochs": t.epochs}
                )
        self.check_timeline(t)

    def check_timeline(self, t: Timeline) -> None:
        """Family-specific checks that need the training length (override when needed)."""

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        """The learning rate at steps `s` (float64 array or tensor): the family's formula."""
        raise NotImplementedError

    def momentum(self, s: Any, t: Timeline, xp: Any) -> Any | None:
        """The momentum (SGD momentum or Adam beta_1) at steps `s`, or None to leave it alone."""
        return None

    def pieces(self) -> int:
        """How many pieces the formula is made of: evaluating n steps costs n * pieces terms in
        the Keras form, which computes every piece at every step (override when it grows with
        the parameters, as piecewise's knots do)."""
        return 1

    def params(self) -> dict[str, Any]:
        """The parameters as JSON-ready plain data (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def fail(self, argument: str, requirement: str, **received: Any) -> ScheduleError:
        """Build the standard error: what must hold, and the values received."""
        got = ", ".join(f"{k}={v!r}" for k, v in received.items())
        return ScheduleError(
            f"{self.name}: argument `{argument}` {requirement}. Received: {got}", field=argument
        )

    def require_steps(self, argument: str, steps: int, t: Timeline, value: float) -> None:
        """A duration converted to steps must be at least one step."""
        if steps < 1:
            raise self.fail(
                argument,
                f"must span at least one step ({t.steps_per_epoch} steps per epoch)",
                **{argument: value, "steps_per_epoch": t.steps_per_epoch},
            )


def _kind_of(annotation: Any) -> tuple[Kind, bool]:
    """Map a field annotation to (kind, nullable)."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = True
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is tuple:
        return "float_list", nullable
    if annotation is bool:
        return "bool", nullable
    if annotation is int:
        return "int", nullable
    if annotation is float:
        return "float", nullable
    if annotation is str:
        return "choice", nullable
    raise TypeError(f"unsupported parameter annotation {annotation!r}")


def param_specs(cls: type[Family]) -> tuple[ParamSpec, ...]:
    """The parameters of a family class, in declaration order."""
    cached = cls.__dict__.get("_lrsearch_specs")
    if cached is not None:
        return typing.cast(tuple[ParamSpec, ...], cached)
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        kind, nullable = _kind_of(hints[f.name])
        required = f.default is dataclasses.MISSING
        specs.append(
            ParamSpec(
                f.name,
                kind,
                None if required else f.default,
                required,
                nullable,
                f.metadata["param"],
            )
        )
    result = tuple(specs)
    type.__setattr__(cls, "_lrsearch_specs", result)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(family: str, spec: ParamSpec, value: Any) -> Any:
    """Check one value's type and hard bounds; return it in canonical form."""
    name = spec.name

    def bad(requirement: str) -> ScheduleError:
        return ScheduleError(
            f"{family}: argument `{name}` {requirement}. Received: {name}={value!r}", field=name
        )

    if value is None:
        if spec.nullable:
            return None
        raise bad("is required")
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if spec.kind == "choice":
        assert spec.meta.choices is not None
        if value not in spec.meta.choices:
            raise bad(f"must be one of {', '.join(spec.meta.choices)}")
        return value
    if spec.kind == "float_list":
        if not isinstance(value, list | tuple) or not value:
            raise bad("must be a non-empty list of numbers")
        most = spec.meta.max_items
        if most is not None and len(value) > most:  # the count, not the (long) list
            raise ScheduleError(
                f"{family}: argument `{name}` must have at most {most} entries. "
                f"Received: {len(value)} entries",
                field=name,
            )
        return tuple(_check_number(bad, spec, v, as_int=False) for v in value)
    return _check_number(bad, spec, value, as_int=spec.kind == "int")


def _check_number(
    bad: Callable[[str], ScheduleError], spec: ParamSpec, value: Any, *, as_int: bool
) -> float | int:
    if not _is_number(value):
        raise bad("must be a number")
    if not math.isfinite(value):
        raise bad("must be finite")
    if as_int:
        if float(value) != int(value):
            raise bad("must be a whole number")
        value = int(value)
    else:
        value = float(value)
    m = spec.meta
    for bound, ok, op in (
        (m.gt, lambda b: value > b, ">"),
        (m.ge, lambda b: value >= b, ">="),
        (m.lt, lambda b: value < b, "<"),
        (m.le, lambda b: value <= b, "<="),
    ):
        if bound is not None and not ok(bound):
            raise bad(f"must be {op} {bound}")
    return typing.cast(float | int, value)


class Registry(GenericRegistry[type[Family]]):
    """Families by stable name (lrsearch.registry's shape): duplicate names raise; unknown
    names raise ScheduleError listing the known ones."""

    def __init__(self) -> None:
        super().__init__("schedule family", error=ScheduleError, field="family",
                         plural="families")

    def register(self, cls: type[F]) -> type[F]:  # type: ignore[override]
        """Class decorator: add a family under its `name`."""
        param_specs(cls)  # fail at import time on an undeclared or untyped parameter
        self.add(cls.name, cls)
        return cls


registry = Registry()
register = registry.register


def make(name: str, params: Mapping[str, Any] | None = None) -> Family:
    """Build a validated family instance from plain data (unknown parameters raise)."""
    cls = registry.get(name)
    params = dict(params or {})
    known = [s.name for s in param_specs(cls)]
    for key in params:
        if key not in known:
            raise ScheduleError(
                f"{name}: unknown parameter `{key}`. Known parameters: {', '.join(known)}",
                field=key,
            )
    for spec in param_specs(cls):
        if spec.required and spec.name not in params:
            raise ScheduleError(f"{name}: argument `{spec.name}` is required.", field=spec.name)
    return cls(**params)
