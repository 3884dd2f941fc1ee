"""The web page's forms: what they show (the catalog's families with their default search
spaces) and how a submitted form becomes the API's own request body (StudyCreate,
RangeTestCreate), whose validation, and the use case behind it, are then exactly the API's.

A form carries text; the body is built the way a JSON client would write it: empty fields are
left out (the API's defaults apply), whole numbers and finite decimals become numbers (so that
a message names `epochs=0`, not `'0'`), anything else is passed on as typed for the API's
validation to refuse by name. A family's search-space overrides are the JSON object the API
takes for `search_space.<family>`; text that is not JSON is the one error the form reports
itself. Errors come back as (form field, message): the API's field path (`epochs`,
`search_space.cosine.peak_lr`, `model.name`) is mapped to the form field that holds it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lrsearch import schedules
from service import errors
from service.range_tests.schemas import RangeTestCreate

FIELD_ALIASES = {"family": "families", "objective": "objective.metric",
                 "metric": "objective.metric", "direction": "objective.direction"}
UPLOAD_PREFIX = "upload:"  # a model field naming an uploaded model: {"upload": name}


@dataclass
class FormErrors:
    """Messages by form field, and those that name no field of the form (`general`)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def add(self, known: Iterable[str], api_field: str | None, message: str) -> None:
        """File `message` under the form field that holds `api_field`, or under general."""
        target = form_field(known, api_field)
        if target is None:
            self.general.append(message)
        else:
            self.fields.setdefault(target, []).append(message)

    def extend(self, other: FormErrors) -> None:
        """Add another set of messages to these."""
        for name, messages in other.fields.items():
            self.fields.setdefault(name, []).extend(messages)
        self.general.extend(other.general)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)


def form_field(known: Iterable[str], api_field: str | None) -> str | None:
    """The form field an API field path belongs to: the longest form field that is the path
    or a prefix of it (`search_space.cosine.peak_lr` -> `search_space.cosine`,
    `model.Named.name` -> `model`), after the aliases (`family` -> `families`)."""
    if not api_field:
        return None
    path = FIELD_ALIASES.get(api_field, api_field)
    best = None
    for name in known:
        if (path == name or path.startswith(name + ".")) and len(name) > len(best or ""):
            best = name
    return best


def validation_errors(known: Iterable[str], error: ValidationError) -> FormErrors:
    """Pydantic's errors, each worded as the API words it (service/errors.describe)."""
    found = FormErrors()
    names = list(known)
    for e in error.errors():
        loc = ".".join(str(part) for part in e["loc"])
        found.add(names, loc, errors.describe(e))
    return found


# -- reading the posted text -------------------------------------------------------------------


def text(form: Mapping[str, Any], name: str) -> str:
    """A text field, stripped; "" when absent or not text (a file part of a crafted post)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def number(raw: str, kind: type[int] | type[float]) -> Any:
    """`raw` as an int, or for a decimal field an int or a finite float, when it reads as one;
    else the text itself (the API's validation then refuses it, naming the value). A whole
    number stays whole, so a message names what was typed (`-1`, not `-1.0`)."""
    for each in (int, float) if kind is float else (int,):
        try:
            value = each(raw)
        except (ValueError, OverflowError):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return raw
        return value
    return raw


def put(body: dict[str, Any], name: str, value: Any) -> None:
    """Set a body key unless the field was left empty (then the API's default applies)."""
    if value != "" and value is not None:
        body[name] = value


def model_of(raw: str) -> dict[str, Any] | None:
    """The `model` object: a builder by name, or `upload:<name>` for an uploaded model."""
    if not raw:
        return None
    if raw.startswith(UPLOAD_PREFIX):
        return {"upload": raw[len(UPLOAD_PREFIX):]}
    return {"name": raw}


def training(form: Mapping[str, Any], body: dict[str, Any],
             ints: Sequence[str], floats: Sequence[str] = ()) -> None:
    """The fields every training form shares: dataset, model, optimizer, and numbers."""
    put(body, "dataset", text(form, "dataset"))
    put(body, "model", model_of(text(form, "model")))
    if optimizer := text(form, "optimizer"):
        body["optimizer"] = {"name": optimizer}
    for name in ints:
        put(body, name, number(text(form, name), int))
    for name in floats:
        put(body, name, number(text(form, name), float))


# -- the study form ----------------------------------------------------------------------------

STUDY_INTS = ("epochs", "batch_size", "n_trials")


def study_fields(families: Sequence[str]) -> list[str]:
    """Every field of the study form, by the API's field names."""
    return ["name", "families", "dataset", "model", "optimizer", *STUDY_INTS,
            "objective.metric", "objective.direction", "range_test_id", "baseline",
            *(f"search_space.{f}" for f in families)]


def study_body(form: Any, families: Sequence[str]) -> tuple[dict[str, Any], FormErrors]:
    """The StudyCreate body a study form describes, and the errors of its JSON fields."""
    found = FormErrors()
    body: dict[str, Any] = {}
    put(body, "name", text(form, "name"))
    chosen = [v for v in form.getlist("families") if isinstance(v, str)]
    if chosen:
        body["families"] = chosen
    training(form, body, STUDY_INTS)
    metric, direction = text(form, "objective.metric"), text(form, "objective.direction")
    if metric or direction:
        body["objective"] = {k: v for k, v in (("metric", metric), ("direction", direction))
                             if v}
    space: dict[str, Any] = {}
    known = study_fields(families)
    for family in families:
        raw = text(form, f"search_space.{family}")
        if not raw:
            continue
        try:
            space[family] = json.loads(raw)
        except ValueError as e:
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            found.add(known, f"search_space.{family}",
                      f"search_space.{family}: not valid JSON ({e}). Write an object such as "
                      f'{{"lr": {{"low": 0.001, "high": 0.1}}}}. Received: {shown!r}')
    if space:
        body["search_space"] = space
    put(body, "range_test_id", text(form, "range_test_id"))
    if "baseline" not in form:  # an unchecked box is not sent: the baseline is off
        body["baseline"] = {"enabled": False}
    return body, found


def study_values(form: Any) -> dict[str, Any]:
    """What the user typed, to show again with the errors."""
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["families"] = [v for v in form.getlist("families") if isinstance(v, str)]
    values["baseline"] = "baseline" in form
    return values


def study_defaults(range_test_id: str = "") -> dict[str, Any]:
    """The form as first shown: a small search on the bundled digits."""
    return {"dataset": "digits", "model": "mlp", "optimizer": "sgd", "epochs": "5",
            "batch_size": "32", "n_trials": "10", "families": [], "baseline": True,
            "range_test_id": range_test_id}


# -- the range-test form -----------------------------------------------------------------------

RANGE_TEST_INTS = ("batch_size", "num_iter", "repeats", "seed")
RANGE_TEST_FLOATS = ("min_lr", "max_lr", "diverge_threshold")
RANGE_TEST_FIELDS = ["dataset", "model", "optimizer", *RANGE_TEST_INTS, *RANGE_TEST_FLOATS,
                     "mode", "validation"]


def range_test_body(form: Any) -> dict[str, Any]:
    """The RangeTestCreate body a range-test form describes."""
    body: dict[str, Any] = {}
    training(form, body, RANGE_TEST_INTS, RANGE_TEST_FLOATS)
    put(body, "mode", text(form, "mode"))
    body["validation"] = "validation" in form
    return body


def range_test_values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["validation"] = "validation" in form
    return values


def range_test_defaults() -> dict[str, Any]:
    """The API's defaults (RangeTestCreate's, read from it), on the bundled digits."""
    fields = RangeTestCreate.model_fields
    shown = {name: _number(fields[name].default) if name in RANGE_TEST_FLOATS
             else str(fields[name].default) for name in (*RANGE_TEST_INTS, *RANGE_TEST_FLOATS,
                                                         "mode")}
    return {"dataset": "digits", "model": "mlp", "optimizer": "sgd", **shown,
            "validation": fields["validation"].default}


# -- the catalog as the study form shows it ----------------------------------------------------


def _number(value: float) -> str:
    return f"{value:g}"


def describe_param(p: Mapping[str, Any]) -> str:
    """One parameter's default search dimension, as `space()` resolves it without overrides."""
    search = p.get("search")
    if search:
        per = " × epochs" if search["per_epochs"] else ""
        log = ", log" if search["log"] else ""
        return f"{p['name']}: {_number(search['low'])} to {_number(search['high'])}{per}{log}"
    if p.get("choices") and p.get("default") is not None:
        return f"{p['name']}: one of {', '.join(map(str, p['choices']))}"
    if p.get("required"):
        return f"{p['name']}: required (give a value or a range)"
    return f"{p['name']} = {json.dumps(p.get('default'))}"


def placeholder(parameters: Sequence[Mapping[str, Any]]) -> str:
    """An override the family accepts, as an example: its first searched parameter's default
    range (or a value for its first required parameter)."""
    for p in parameters:
        search = p.get("search")
        if search and not search["per_epochs"]:
            dim: dict[str, Any] = {"low": search["low"], "high": search["high"]}
            if search["log"]:
                dim["log"] = True
            return json.dumps({p["name"]: dim})
    for p in parameters:
        if p.get("required"):
            return json.dumps({p["name"]: {"value": "..."}})
    return "{}"


def catalog() -> list[dict[str, Any]]:
    """Every schedule family: name, description, its default search space in words, and an
    example override."""
    out = []
    for name in schedules.names():
        spec = schedules.spec(name)
        out.append({"name": name, "description": spec["description"],
                    "default_space": [describe_param(p) for p in spec["parameters"]],
                    "placeholder": placeholder(spec["parameters"])})
    return out
