"""What keeps main green without a change of ours: CI runs the README's own test command, which
upgrades pip and setuptools and installs every package at the version constraints.txt pins;
every dependency pyproject.toml names is pinned there, and this venv holds those versions."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _name(requirement: str) -> str:
    """A requirement's project name, normalized as pip freeze writes it (PEP 503)."""
    bare = re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not pinned to one version"
            pins[_name(name)] = pinned
    return pins


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    ci_run = (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1]
    assert first_block[1] == ci_run
    assert "pip install -q -c constraints.txt --upgrade pip setuptools" in ci_run
    assert "pip install -q -c constraints.txt -e '.[dev]'" in ci_run


def test_every_dependency_is_pinned_and_installed_as_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    pins = _pins()
    assert named | {"pip", "setuptools"} <= set(pins), "run .ci/refresh-constraints"
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # (a dependency of another platform's)
        assert installed == pinned, f"{name} {installed}, pinned {pinned}: see README's set-up"
