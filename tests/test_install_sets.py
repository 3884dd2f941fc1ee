"""What `make run` and `make test` install, checked against the package index: the run set is
the service alone (no PyTorch, schemathesis, pytest or other dev tools), the test set adds the
dev and bench extras.

The sets are read from the Makefile itself (`make -n`, with .venv pointed at a folder that does
not exist so that every install step is printed) and resolved by
`pip install --dry-run --ignore-installed --report`, which downloads metadata only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Seconds one resolution may take (tensorflow's and torch's dependency trees; about 20 s against
# a nearby index). A test runs at most one of them (the fixtures are per module).
RESOLVE_TIMEOUT_S = 420

# Development and benchmark tools that must never reach a `make run` install.
DEV_ONLY = {"torch", "jax", "jaxlib", "schemathesis", "pytest", "pytest-timeout",
            "pytest-rerunfailures", "hypothesis", "py-spy", "optuna-dashboard", "keras-tuner",
            "mypy", "ruff"}
# What serving, the workers and their training cannot do without.
SERVICE = {"lrsearch", "tensorflow", "keras", "numpy", "fastapi", "uvicorn", "optuna",
           "sqlalchemy", "alembic", "psycopg", "pydantic", "pydantic-settings", "click"}


def make_install_targets(goal: str, venv: Path) -> list[str]:
    """The requirement arguments of every `pip install` that `make GOAL` runs in a fresh
    checkout (VENV=`venv`, which must not exist), in order, `-e` dropped (the dry run needs no
    editable build); pip's own upgrade is left out. Raises AssertionError when make fails or a
    pip line has an option this reader does not know (so a changed Makefile is read, not
    guessed at)."""
    make = shutil.which("make")
    assert make is not None, "GNU make is needed to read the Makefile's install steps"
    assert not venv.exists(), f"VENV={venv} must not exist, or make would skip its steps"
    # A parent `make test` passes its flags down; this make only prints.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run([make, "-n", "--no-print-directory", "-C", str(ROOT), goal,
                          f"VENV={venv}"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, f"make -n {goal} failed:\n{out.stderr}"
    targets: list[str] = []
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        at = next((i for i in range(len(words) - 2)
                   if words[i:i + 3] == ["-m", "pip", "install"]), None)
        if at is None:
            continue
        args = words[at + 3:]
        if "--upgrade" in args and args[-1] == "pip":
            continue
        for word in args:
            if word in ("--quiet", "-q", "-e", "--editable"):
                continue
            assert not word.startswith("-"), f"unknown pip option {word!r} in: {line}"
            targets.append(word)
    assert targets, f"`make -n {goal}` runs no pip install:\n{out.stdout}"
    return targets


def project_copy(dest: Path) -> Path:
    """A copy of what building the package reads (pyproject.toml, README.md, the packages), so
    that resolving it writes no build metadata into the working tree. Returns `dest`."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        for package in ROOT.glob(pattern.rstrip("*")):
            shutil.copytree(package, dest / package.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def resolve(targets: list[str], work: Path) -> dict[str, str]:
    """Name -> version of every distribution pip would install into an empty environment for
    `targets` (the project itself is `.` or `.[extras]`, as the Makefile writes it), resolved
    against the configured package index without installing anything."""
    source = project_copy(work / "src")
    args: list[str] = []
    for target in targets:
        if target == "." or target.startswith(".["):
            target = str(source) + target[1:]
        args.append(target)
    report = work / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--report", str(report), "--quiet", *args],
        capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert out.returncode == 0, f"pip could not resolve {args}:\n{out.stderr[-4000:]}"
    installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in installs}


def declared(requirements: list[str]) -> set[str]:
    """The canonical project names of pyproject requirement strings."""
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.fixture(scope="module")
def run_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("run-set")
    return resolve(make_install_targets("run", work / "venv"), work)


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("test-set")
    return resolve(make_install_targets("test", work / "venv"), work)


@pytest.mark.timeout(RESOLVE_TIMEOUT_S + 60)
def test_make_run_installs_the_service_without_dev_tools(run_set: dict[str, str]) -> None:
    leaked = sorted(DEV_ONLY & run_set.keys())
    assert not leaked, f"`make run` would install dev tools: {leaked}"
    core = declared(PYPROJECT["project"]["dependencies"])
    missing = sorted((SERVICE | core) - run_set.keys())
    assert not missing, f"`make run` would not install {missing}"


@pytest.mark.timeout(RESOLVE_TIMEOUT_S + 60)
def test_make_test_adds_the_dev_and_bench_extras(run_set: dict[str, str],
                                                  dev_set: dict[str, str]) -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = DEV_ONLY | declared(extras["dev"]) | declared(extras["bench"])
    missing = sorted(wanted - dev_set.keys())
    assert not missing, f"`make test` would not install {missing}"
    dropped = sorted(run_set.keys() - dev_set.keys())
    assert not dropped, f"`make test` would leave out what `make run` installs: {dropped}"
