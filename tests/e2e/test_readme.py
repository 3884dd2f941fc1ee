"""The README tells the truth: its `sh` blocks run, in order, in one shell, against a real
server (the five-minute walk-through and the curl examples), its `python` blocks run, and every
other command it shows is a real one: `lrsearch ...` lines parse with the real command line,
`make` targets exist, the compose files named exist, and `optuna-dashboard <storage>` is run by
tests/e2e/test_metrics_optuna.py. (`make run` is `lrsearch serve`, started by these tests;
`make test` is what .ci/run runs.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Server
from tests.test_deploy_files import parse_command

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.M | re.S)
DEFAULT_URL = "http://127.0.0.1:8000"


def env_for(server: Server) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # lrsearch, optuna-dashboard
    return {**server.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_the_walk_through_and_the_curl_examples_run(server: Server) -> None:
    script = "\n".join(body for lang, body in BLOCKS if lang == "sh")
    assert "lrsearch submit" in script and "curl" in script
    out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script.replace(
        DEFAULT_URL, server.url)], capture_output=True, text=True, env=env_for(server),
        cwd=server.folder, timeout=900)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "Suggested learning rates" in out.stdout
    assert "Best schedule: one_cycle" in out.stdout
    assert "Best per family" in out.stdout  # the cross-family study's leaderboard
    text = " ".join(out.stdout.split())  # rich wraps long lines
    assert "Against a tuned constant LR" in text  # the baseline, on by default
    assert "Paired gain over the constant:" in text  # the cross-family study's --confirm
    assert re.search(r'lrsearch_trials_finished_total\{state="complete"\} [1-9]', out.stdout)
    for png in ("one_cycle.png", "lr_find.png", "curves.png", "history.png"):
        assert (server.folder / png).read_bytes()[:4] == b"\x89PNG", png


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_blocks_run(server: Server, index: int) -> None:
    code = BLOCKS[index][1].replace(DEFAULT_URL, server.url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env_for(server), cwd=server.folder, timeout=900)
    assert out.returncode == 0, f"{code}\n{out.stderr[-3000:]}"


def commands() -> list[str]:
    """Every command line of the README outside the executed blocks: lines of the other
    code blocks, and `lrsearch ...` code spans in the prose."""
    lines = []
    for lang, body in BLOCKS:
        if lang in ("bash", ""):  # `sh` blocks are run above
            heredoc = None  # the word that ends a here-document being skipped
            for line in re.sub(r"\\\n\s*", " ", body).splitlines():  # `\` continuations
                if heredoc is not None:  # a file's contents, not commands
                    heredoc = None if line.strip() == heredoc else heredoc
                    continue
                if m := re.search(r"<<-?'?(\w+)'?", line):
                    heredoc = m.group(1)
                line = re.sub(r"\s+#.*$", "", line).strip()  # comments
                for part in re.split(r"\s+(?:&&|&)(?:\s+|$)", line):  # `a & b &`, `a && b`
                    if part and not part.startswith(("export ", "#")):
                        lines.append(part)
    lines += re.findall(r"`(lrsearch [^`]+)`", README)
    return lines


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "py"])
def test_py_blocks_compile(index: int) -> None:
    """`py` blocks need a host outside this machine (a webhook receiver on the internet): they
    are compiled, and the names they import from lrsearch exist."""
    code = BLOCKS[index][1]
    compile(code, f"README block {index}", "exec")
    for module, names in re.findall(r"^from (lrsearch[\w.]*) import (.+)$", code, re.M):
        imported = __import__(module, fromlist=["_"])
        for name in names.split(","):
            assert hasattr(imported, name.strip()), (module, name)


def test_every_other_command_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    makefile = (ROOT / "Makefile").read_text()
    monkeypatch.chdir(tmp_path)  # input files the commands name (FILE.npz) exist here
    seen = set()
    for line in commands():
        words = shlex.split(re.sub(r"\[[^\]]*\]", "", line))  # [optional] parts
        for word in words:
            if re.fullmatch(r"[\w-]+\.(npz|yaml|json|keras)", word):
                (tmp_path / word).touch()
        program = words[0]
        seen.add(program)
        if program == "lrsearch":
            parse_command(words[1:])
        elif program == "make":
            assert re.search(rf"^{words[1]}:", makefile, re.M), line
        elif program == "docker":
            assert words[1] in ("compose", "build", "push"), line
            files = [words[i + 1] for i, w in enumerate(words) if w == "-f"]
            assert all((ROOT / f).exists() for f in files), line
            assert words[1] != "build" or (ROOT / "Dockerfile").exists(), line
        elif program in ("kubectl", "helm"):
            # the deploy/ files they name exist; a command run in a pod is a real one
            named = [words[i + 1] for i, w in enumerate(words) if w in ("-f", "-k")]
            assert all((ROOT / f).exists() for f in named if f.startswith("deploy/")), line
            if "--" in words:
                inner = words[words.index("--") + 1:]
                assert inner[0] == "lrsearch", line
                parse_command(inner[1:])
        elif program in ("mkdir", "cat"):  # writing a file for the next command
            continue
        elif program == "optuna-dashboard":
            assert words[1].startswith(("sqlite:///", "postgresql+psycopg://")), line
        elif program in ("curl", "RT=$(lrsearch", "STUDY=$(lrsearch"):
            continue
        else:
            raise AssertionError(f"a README command no test covers: {line}")
    assert {"lrsearch", "make", "docker", "optuna-dashboard"} <= seen
