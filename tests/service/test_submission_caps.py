"""Work is bounded at submission, by the rules that will use each value: model parameters (by
the model's own checks and its parameter count), a grid search's size, piecewise knots, and a
preview's evaluations; /best and the study page evaluate at most 1000 steps of the curve.
Every refusal is a 422 naming the field, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from lrsearch import datasets, models, schedules
from lrsearch.schedules.search import grid, grid_size
from service.config import Settings
from service.jobs.models import Job
from service.main import create_app
from service.range_tests.models import RangeTest
from service.studies.models import Study
from tests.service.helpers import count, run_trial

EPOCHS = 5
STUDY: dict[str, Any] = {"family": "one_cycle", "dataset": "digits", "epochs": EPOCHS,
                         "n_trials": 3}
RANGE_TEST: dict[str, Any] = {"dataset": "digits", "min_lr": 1e-5, "max_lr": 1.0,
                              "num_iter": 50}
ENDPOINTS = {"studies": ("/v1/studies", STUDY, Study),
             "range-tests": ("/v1/range-tests", RANGE_TEST, RangeTest)}
DIGITS = datasets.SOURCES.get("digits")
BIG_BODY = 1_000_000  # the default body limit (the test settings use less)


@contextmanager
def app(settings: Settings, **changes: Any) -> Iterator[TestClient]:
    """A client of an API with some settings changed, on the test's database."""
    with TestClient(create_app(settings.model_copy(update=changes))) as c:
        yield c


def stored(engine: Engine) -> tuple[int, int, int]:
    return count(engine, Study), count(engine, RangeTest), count(engine, Job)


def assert_refused(r: Any, field: str, *fragments: str) -> None:
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["field"] == field, data
    for fragment in fragments:
        assert fragment in data["detail"], data


def knots(n: int, epochs: int) -> list[float]:
    """n strictly increasing boundaries inside (0, epochs)."""
    return [round((i + 1) * epochs / (n + 1), 6) for i in range(n)]


def piecewise(n: int, epochs: int) -> dict[str, Any]:
    return {"boundaries_epochs": knots(n, epochs),
            "values": [round(0.1 / (1 + i / 100), 6) for i in range(n + 1)],
            "interpolation": "linear"}


# The submissions found on main, stored and queued although no worker could run them.
BAD_MODELS = [
    ({"name": "mlp", "params": {"hidden": [65536] * 1000}}, "model.params.hidden", "1000 layers"),
    ({"name": "mlp", "params": {"activation": "bogus"}}, "model.params.activation", "'bogus'"),
    ({"name": "mlp", "params": {"dropout": 7}}, "model.params.dropout", "dropout=7"),
    ({"name": "mlp", "params": {"dropout": True}}, "model.params.dropout", "dropout=True"),
    ({"name": "mlp", "params": {"hidden": "64"}}, "model.params.hidden", "'64'"),
    ({"name": "mlp", "params": {"hidden": [65536] * 8}}, "model.params.hidden", "parameters"),
    ({"name": "small_cnn", "params": {"dropout_dense": 1}}, "model.params.dropout_dense",
     "dropout_dense=1"),
    ({"name": "resnet20", "params": {"weight_decay": -1e-4}}, "model.params.weight_decay",
     "weight_decay=-0.0001"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model,field,received", BAD_MODELS)
def test_models_no_worker_could_build_are_refused_and_nothing_is_stored(
        client: TestClient, engine: Engine, endpoint: str, model: dict[str, Any], field: str,
        received: str) -> None:
    path, body, _ = ENDPOINTS[endpoint]
    assert_refused(client.post(path, json={**body, "model": model}), field, received)
    assert stored(engine) == (0, 0, 0)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_model_cap_the_largest_allowed_passes_one_more_parameter_is_refused(
        settings: Settings, engine: Engine, endpoint: str) -> None:
    path, body, _ = ENDPOINTS[endpoint]
    hidden = {"hidden": [100, 50]}
    model = {"name": "mlp", "params": hidden}
    n = models.count_params("mlp", hidden, DIGITS.input_shape, DIGITS.head)
    assert n == (64 + 1) * 100 + (100 + 1) * 50 + (50 + 1) * 10
    with app(settings, max_model_params=n) as c:
        assert c.post(path, json={**body, "model": model}).status_code == 201
    before = stored(engine)
    with app(settings, max_model_params=n - 1) as c:
        assert_refused(c.post(path, json={**body, "model": model}), "model.params.hidden",
                       f"{n:,} parameters", f"at most {n - 1:,}")
    assert stored(engine) == before


def test_the_model_cap_names_the_model_when_no_parameter_sets_its_size(
        settings: Settings, engine: Engine) -> None:
    n = models.count_params("small_cnn", {}, DIGITS.input_shape, DIGITS.head)
    with app(settings, max_model_params=n - 1) as c:
        assert_refused(c.post("/v1/studies", json={**STUDY, "model": {"name": "small_cnn"}}),
                       "model", f"{n:,} parameters for input shape (8, 8, 1) and 10 classes")
    assert stored(engine) == (0, 0, 0)


def test_a_grid_of_ten_billion_points_is_refused(client: TestClient, engine: Engine) -> None:
    body = {**STUDY, "family": "cosine_restarts",
            "sampler": {"name": "grid", "grid_points": 100}}
    assert_refused(client.post("/v1/studies", json=body), "sampler.grid_points",
                   "= 10000000000 points", "grid_points=100", "<= 10000")
    assert stored(engine) == (0, 0, 0)


def test_grid_cap_the_largest_allowed_passes_one_point_more_is_refused(
        settings: Settings, engine: Engine) -> None:
    fixed = {"div_factor": {"value": 25.0}, "final_div_factor": {"value": 1e4}}
    body = {**STUDY, "search_space": {"one_cycle": fixed},
            "sampler": {"name": "grid", "grid_points": 5}}
    # max_lr and pct_start on 5 values each, times the 2 annealing shapes
    total = grid_size(grid("one_cycle", fixed, epochs=EPOCHS, points=5))
    assert total == 5 * 5 * 2
    with app(settings, max_grid_points=total) as c:
        assert c.post("/v1/studies", json=body).status_code == 201
    with app(settings, max_grid_points=total - 1) as c:
        assert_refused(c.post("/v1/studies", json=body), "sampler.grid_points",
                       f"= {total} points")
    assert stored(engine)[0] == 1


def test_a_grid_over_several_families_is_refused(client: TestClient, engine: Engine) -> None:
    body = {**STUDY, "family": None, "families": ["constant", "cosine"],
            "sampler": {"name": "grid"}}
    assert_refused(client.post("/v1/studies", json=body), "sampler.name", "one family")
    assert stored(engine) == (0, 0, 0)


def test_piecewise_knots_are_capped_at_submission(settings: Settings, engine: Engine) -> None:
    def study(n: int) -> dict[str, Any]:
        space = {k: {"value": v} for k, v in piecewise(n, 100).items()}
        return {**STUDY, "family": "piecewise", "epochs": 100,
                "search_space": {"piecewise": space}}

    with app(settings, max_body_bytes=BIG_BODY) as c:
        assert_refused(c.post("/v1/studies", json=study(40_000)),
                       "search_space.piecewise.boundaries_epochs", "Received: 40000 entries")
        assert_refused(c.post("/v1/studies", json=study(1001)),
                       "search_space.piecewise.boundaries_epochs", "at most 1000 entries")
        mismatched = study(3)
        mismatched["search_space"]["piecewise"]["values"] = {"value": [0.1, 0.01]}
        assert_refused(c.post("/v1/studies", json=mismatched),
                       "search_space.piecewise.values", "one more entry")
        assert stored(engine) == (0, 0, 0)
        assert c.post("/v1/studies", json=study(1000)).status_code == 201


def preview(c: TestClient, family: str, params: dict[str, Any], epochs: int, spe: int,
            points: int) -> Any:
    return c.post(f"/v1/schedules/{family}/preview",
                  json={"params": params, "epochs": epochs, "steps_per_epoch": spe,
                        "points": points})


def test_a_preview_of_40000_knots_over_a_million_steps_is_refused(settings: Settings,
                                                                   engine: Engine) -> None:
    with app(settings, max_body_bytes=BIG_BODY) as c:
        r = preview(c, "piecewise", piecewise(40_000, 100), 100, 10_000, 1000)
        assert_refused(r, "params.boundaries_epochs", "at most 1000 entries",
                       "Received: 40000 entries")
        assert len(r.text) < 1000  # the count, not the list


def test_preview_cap_the_largest_allowed_passes_one_evaluation_more_is_refused(
        settings: Settings, engine: Engine) -> None:
    params, epochs, spe = piecewise(1000, 100), 100, 10_000  # 1001 pieces over 10^6 steps
    points = Settings().max_curve_evaluations // 1001  # the defaults' largest preview
    with app(settings, max_body_bytes=BIG_BODY, max_curve_evaluations=points * 1001) as c:
        r = preview(c, "piecewise", params, epochs, spe, points)
        assert r.status_code == 200, r.text
        data = r.json()
        assert len(data["step"]) == points and data["step"][-1] == epochs * spe - 1
        full = schedules.curve("piecewise", params, steps_per_epoch=spe, epochs=epochs)
        np.testing.assert_array_equal(np.array(data["lr"]), full[data["step"]])
        assert_refused(preview(c, "piecewise", params, epochs, spe, points + 1), "points",
                       f"= {(points + 1) * 1001}", f"<= {points * 1001}")
    with app(settings, max_curve_evaluations=999) as c:  # one piece: the points count
        assert preview(c, "cosine", {}, 10, 100, 999).status_code == 200
        assert_refused(preview(c, "cosine", {}, 10, 100, 1000), "points", "= 1000")
        assert preview(c, "cosine", {}, 1, 500, 1000).status_code == 200  # 500 steps only


def test_best_and_the_study_page_evaluate_a_thousand_steps_of_the_largest_schedule(
        settings: Settings, engine: Engine) -> None:
    """The largest piecewise schedule a study accepts, over a million steps: the export and the
    page's plots evaluate 1000 of them (one knot more was refused at submission, above)."""
    params, epochs, spe = piecewise(1000, 100), 100, 10_000
    body = {**STUDY, "family": "piecewise", "epochs": epochs, "n_trials": 1,
            "search_space": {"piecewise": {k: {"value": v} for k, v in params.items()}}}
    with app(settings, max_body_bytes=BIG_BODY) as c:
        sid = c.post("/v1/studies", json=body).json()["id"]
        run_trial(engine, sid, 0, "piecewise", params, 0.5, epochs=2, spe=spe)
        r = c.get(f"/v1/studies/{sid}/best")
        assert r.status_code == 200, r.text
        curve = r.json()["curve"]
        assert len(curve["step"]) == 1000
        assert curve["step"][0] == 0 and curve["step"][-1] == epochs * spe - 1
        full = schedules.curve("piecewise", params, steps_per_epoch=spe, epochs=epochs)
        np.testing.assert_array_equal(np.array(curve["lr"]), full[curve["step"]])
        page = c.get(f"/ui/studies/{sid}")
        assert page.status_code == 200 and sid in page.text
        png = c.get(f"/ui/studies/{sid}/plots/lr_curves.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
