"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command they
run is a real `lrsearch` command with valid options, every LRSEARCH_ variable they set is a
real setting, and the pieces the deployment relies on are there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from lrsearch.cli import cli
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` / `!override` tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_mapping(node))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)
    return data


COMPOSE = load("docker-compose.yml")
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("lrsearch")}


def parse_command(args: list[str]) -> click.Context:
    """What `lrsearch ARGS` would run, parsed by the real command line (raises UsageError on
    an unknown command or option, BadParameter on a bad value)."""
    command: click.Command = cli
    rest, name = list(args), "lrsearch"
    while isinstance(command, click.Group):
        if command.invoke_without_command and (
                not rest or command.get_command(click.Context(command), rest[0]) is None):
            break  # a group that also runs on its own (`lrsearch range-test --dataset ...`)
        if not rest:
            raise click.UsageError(f"`{name}` needs a sub-command")
        name = rest.pop(0)
        found = command.get_command(click.Context(command), name)
        if found is None:
            raise click.UsageError(f"no such command `{name}`")
        command = found
    return command.make_context(name, rest)


def duration(text: str) -> float:
    seconds = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * seconds[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def test_every_service_of_ours_runs_a_real_command() -> None:
    assert set(OURS) == {"migrate", "api", "worker"}
    commands = {name: parse_command(s["command"]) for name, s in OURS.items()}
    assert {name: ctx.command.name for name, ctx in commands.items()} == {
        "migrate": "migrate", "api": "api", "worker": "worker"}
    assert commands["api"].params["host"] == "0.0.0.0" and commands["api"].params["port"] == 8000
    assert SERVICES["api"]["ports"] == ["8000:8000"]


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_command(["api", "--hots", "0.0.0.0"])
    with pytest.raises(click.UsageError):
        parse_command(["wroker"])


def test_every_variable_set_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    seen = set()
    for service in OURS.values():
        for key in service["environment"]:
            assert key.startswith("LRSEARCH_"), key
            assert key.removeprefix("LRSEARCH_").lower() in fields, key
            seen.add(key)
    assert {"LRSEARCH_DATABASE_URL", "LRSEARCH_DATA_DIR"} <= seen
    url = OURS["api"]["environment"]["LRSEARCH_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url


def test_order_health_and_shutdown() -> None:
    db = SERVICES["db"]
    assert db["image"].startswith("postgres:") and "pg_isready" in " ".join(
        db["healthcheck"]["test"])
    assert SERVICES["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    worker = SERVICES["worker"]
    grace = float(worker["environment"]["LRSEARCH_GRACE_SECONDS"])
    assert duration(worker["stop_grace_period"]) > grace  # SIGKILL only after the grace time
    assert "container_name" not in worker  # `--scale worker=N` needs distinct names
    assert "ports" not in worker
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    cpu = load("docker-compose.cpu.yml")["services"]["worker"]
    assert cpu["deploy"] is None  # the override resets the reservation
    dashboard = SERVICES["optuna-dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert "search_path%3Doptuna" in dashboard["command"][0]  # our Optuna schema


def test_dockerfile_entrypoint_and_default_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.M)
    command = re.search(r"^CMD (.+)$", text, re.M)
    assert entrypoint is not None and command is not None
    assert yaml.safe_load(entrypoint.group(1)) == ["lrsearch"]
    assert parse_command(yaml.safe_load(command.group(1))).command.name == "api"
    assert "ARG VARIANT=cpu" in text and '".[gpu]"' in text
    for line in re.findall(r"^COPY (.+) \./", text, re.M):
        for path in shlex.split(line):
            assert (ROOT / path).exists(), path
