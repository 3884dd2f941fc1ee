"""Dependencies point one way (ARCHITECTURE.md): `lrsearch` imports neither `service` nor
`worker`, `service` never imports `worker`, and no circle runs through `worker`'s modules.

The graph is read statically from every module's source with `ast`: every import counts, at
the top, inside a function or under TYPE_CHECKING. An import names one module: `import a.b`
and `from a import b` (b a module) name `a.b`; `from a import name` names `a`. Importing a
submodule does not count as importing its package's `__init__` (Python runs it first, but an
`__init__` that gathers its submodules, like a registry, would otherwise form a circle with
each of them). The command line is composed by entry-point group instead (pyproject.toml),
which is checked here too, with the names the API accepts for what only the worker builds.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from service.studies.schemas import PrunerSpec, SamplerSpec
from tests.processes import LRSEARCH
from worker import search
from worker.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lrsearch", "service", "worker")
FORBIDDEN = {"lrsearch": ("service", "worker"), "service": ("worker",)}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # path:line of the import

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.where})"


def module_files() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package by its `__init__`)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` starts with; None outside our packages."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a `from ... import` reads from, with relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def imports(module: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    """Every import of `module` (anywhere in its source) of a module of our packages."""
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        else:
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                edges.append(Edge(module, target, where))
    return edges


def graph() -> list[Edge]:
    known = module_files()
    return [edge for module, path in known.items() for edge in imports(module, path, known)]


def _top(module: str) -> str:
    return module.partition(".")[0]


def cycles(edges: list[Edge], within: str) -> list[list[str]]:
    """One circle (a path that comes back to its start) per strongly connected group of the
    modules of package `within`, found by depth-first search."""
    succ: dict[str, list[str]] = {}
    for e in edges:
        if _top(e.source) == within and _top(e.target) == within:
            succ.setdefault(e.source, []).append(e.target)
    found, done, seen = [], set(), set()

    def visit(node: str, stack: list[str]) -> None:
        stack.append(node)
        for nxt in succ.get(node, []):
            if nxt in stack:
                circle = [*stack[stack.index(nxt):], nxt]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    found.append(circle)
            elif nxt not in done:
                visit(nxt, stack)
        stack.pop()
        done.add(node)

    for node in sorted(succ):
        if node not in done:
            visit(node, [])
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader itself: lazy, TYPE_CHECKING-only and relative imports are all edges."""
    edges = {(e.source, e.target) for e in graph()}
    assert ("worker.loop", "worker.tasks") in edges  # top level, `from worker.tasks import X`
    assert ("worker.loop", "worker.search") in edges  # `from worker import search`
    assert ("worker.tasks.trial", "worker.context") in edges  # under TYPE_CHECKING
    assert ("worker.cli", "worker.loop") in edges  # inside a function
    assert ("lrsearch.cli", "lrsearch.cli.local") in edges  # inside a function
    assert len(module_files()) > 50


def test_no_circle_among_worker_modules() -> None:
    found = cycles(graph(), "worker")
    assert not found, "import circles among worker modules:\n" + "\n".join(
        "  " + " -> ".join(circle) for circle in found)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    bad = [e for e in graph()
           if _top(e.source) == package and _top(e.target) in FORBIDDEN[package]]
    assert not bad, (f"`{package}` must not import {' or '.join(FORBIDDEN[package])}; "
                     "these imports do:\n" + "\n".join(f"  {e}" for e in bad))


def test_a_circle_and_a_forbidden_edge_would_be_reported() -> None:
    edges = [Edge("worker.a", "worker.b", "a.py:1"), Edge("worker.b", "worker.c", "b.py:1"),
             Edge("worker.c", "worker.a", "c.py:1"), Edge("worker.c", "service.x", "c.py:2")]
    assert cycles(edges, "worker") == [["worker.a", "worker.b", "worker.c", "worker.a"]]
    assert cycles(edges[:2], "worker") == []


def test_the_api_accepts_the_names_the_worker_builds() -> None:
    """The API validates sampler and pruner names without importing the worker: its Literal
    names must be the worker's registries' names, or a study is accepted that no worker
    can run (or a sampler is built that nobody can ask for)."""
    def literal(model: type[BaseModel], field: str) -> set[str]:
        return set(typing.get_args(model.model_fields[field].annotation))

    assert literal(SamplerSpec, "name") == set(search.SAMPLERS.names())
    assert literal(PrunerSpec, "name") == set(search.PRUNERS.names())
    assert set(TASKS.names()) == {"trial", "range_test", "dataset"}  # the kinds jobs have


SPEC = {"families": ["cosine"], "search_space": {}, "epochs": 3,
        "sampler": {"seed": 7, "grid_points": 2}, "pruner": {}}


@pytest.mark.parametrize("name", search.SAMPLERS.names())
def test_every_sampler_builds(name: str) -> None:
    import optuna

    built = search.sampler({**SPEC, "sampler": {**SPEC["sampler"], "name": name}}, slot=1)
    assert isinstance(built, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", search.PRUNERS.names())
def test_every_pruner_builds(name: str) -> None:
    import optuna

    assert isinstance(search.pruner({**SPEC, "pruner": {"name": name}}),
                      optuna.pruners.BasePruner)


def test_an_unknown_sampler_names_the_known_ones() -> None:
    with pytest.raises(LookupError, match=r"Unknown sampler `sobol`\. Known samplers: tpe, "):
        search.sampler({**SPEC, "sampler": {**SPEC["sampler"], "name": "sobol"}}, slot=0)


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
SERVER_COMMANDS = {"migrate", "api", "keys", "serve"}
WORKER_COMMANDS = {"worker", "reaper"}


def listed(help_text: str) -> set[str]:
    """The command names of a click group's --help."""
    section = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines()
            if line.startswith("  ") and not line.startswith("   ")}


def test_the_installed_command_lists_the_server_and_worker_commands() -> None:
    out = subprocess.run([LRSEARCH, "--help"], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert SERVER_COMMANDS | WORKER_COMMANDS | {"submit", "schedules"} <= listed(out.stdout)
    assert out.stderr == ""


def test_without_the_worker_package_the_other_commands_work() -> None:
    """A package that is not installed adds no command and no noise; `serve`, which runs the
    worker's commands, says what is missing."""
    code = ("import sys; sys.modules['worker'] = None; from lrsearch.cli import main; "
            "sys.exit(main(sys.argv[1:]))")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env=ENV, timeout=120)

    helped = run("--help")
    assert helped.returncode == 0 and helped.stderr == ""
    names = listed(helped.stdout)
    assert names >= SERVER_COMMANDS and not names & WORKER_COMMANDS
    served = run("serve")
    assert served.returncode == 1
    assert "`lrsearch worker` and `lrsearch reaper`" in served.stderr, served.stderr
