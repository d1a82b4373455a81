"""The test guides in docs/ say only what exists: every kvswarm command's verb and options
(against each verb's own --help), every Compose profile and variable (against
docker-compose.yml), every file they name; and the rehearsal is the command CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.support.processes import REPO

GUIDES = sorted((REPO / "docs").glob("guide-*.md"))
COMPOSE = (REPO / "docker-compose.yml").read_text()


def commands(guide: Path) -> list[str]:
    """Each command of the guide's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", guide.read_text(), flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


@cache
def help_text(verb: str) -> str:
    args = (
        ["locust", "-f", str(REPO / "locustfiles"), "--help"]
        if verb == "locust"
        else [verb, "--help"]
    )
    completed = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_there_are_guides_for_a_small_model_and_for_large_ones() -> None:
    assert [guide.name for guide in GUIDES] == ["guide-large-models.md", "guide-small-model.md"]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda guide: guide.name)
def test_every_kvswarm_command_and_option_exists(guide: Path) -> None:
    kvswarm = [command for command in commands(guide) if "bin/kvswarm " in command]
    assert kvswarm
    for command in kvswarm:
        verb = command.split("bin/kvswarm ", 1)[1].split()[0]
        options = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command)
        text = help_text(verb)
        missing = [option for option in options if option not in text]
        assert not missing, f"{guide.name}: {command}: {missing} not in kvswarm {verb} --help"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda guide: guide.name)
def test_every_compose_profile_and_variable_exists(guide: Path) -> None:
    compose = [command for command in commands(guide) if "docker compose" in command]
    assert compose
    for command in compose:
        for profile in re.findall(r"--profile (\S+)", command):
            assert f'profiles: ["{profile}"]' in COMPOSE, command
        for variable in re.findall(r"(?<!\S)([A-Z_]+)=", command):
            assert "${" + variable in COMPOSE, command


@pytest.mark.parametrize("guide", GUIDES, ids=lambda guide: guide.name)
def test_every_file_the_guide_names_exists(guide: Path) -> None:
    text = guide.read_text()
    named = set(re.findall(r"(?:configs|docs|bench|scripts)/[\w./-]*\w", text))
    assert named
    assert [path for path in sorted(named) if not (REPO / path).exists()] == []


def test_the_rehearsal_is_the_demo_ci_runs() -> None:
    guide = REPO / "docs" / "guide-small-model.md"
    assert ".venv/bin/kvswarm demo --seconds 3 --users 1" in commands(guide)
    demo_test = (REPO / "tests" / "integration" / "test_demo.py").read_text()
    assert '"demo", "--seconds", "3", "--users", "1"' in demo_test
