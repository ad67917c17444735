"""Every command's help as `p2psched ... --help` prints it: what the command does in one line,
each option's default, `--json` explained, and examples that parse as written; the README
sections it refers to exist; and `p2psched --version`."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed
from pathlib import Path

import pytest

import p2psched
from p2psched.cli import app
from p2psched.cli.app import build_parser
from tests.harness.processes import p2psched as run

ROOT = Path(__file__).resolve().parents[2]
Words = tuple[str, ...]  # what follows `p2psched` to reach a command


def commands(
    parser: argparse.ArgumentParser, path: Words = ()
) -> Iterator[tuple[Words, argparse.ArgumentParser]]:
    """Every parser in the tree, by the words that reach it (`()` is `p2psched` itself)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


COMMANDS: dict[Words, argparse.ArgumentParser] = dict(commands(build_parser()))


@cache
def help_of(path: Words) -> str:
    """`p2psched PATH --help`, as printed on a 100-column terminal."""
    out = run(*path, "--help", env={**os.environ, "COLUMNS": "100"}, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def flat(text: str) -> str:
    return " ".join(text.split())


def option_entries(help_text: str) -> dict[str, str]:
    """Each option's entry in a help text, by its first option string: the line that names it
    and the lines below it indented deeper, as one line."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        named = re.match(r" {2}(-[-\w]+)", line)
        if named:
            current = named.group(1)
            entries[current] = line
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line
        else:
            current = None
    return {option: flat(entry) for option, entry in entries.items()}


def examples(parser: argparse.ArgumentParser) -> list[str]:
    return [
        line.strip()
        for line in (parser.epilog or "").splitlines()
        if line.startswith("  p2psched ")
    ]


def said_default(action: argparse.Action) -> str | None:
    """The default an option's help must show; None for one with nothing worth saying."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or default is False:
        return None
    if default in ("", []):
        return None
    return f"{default:g}" if isinstance(default, float) else str(default)


def test_version_is_the_installed_package_s() -> None:
    out = run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"p2psched {installed('p2psched')}\n"


def test_version_without_package_metadata_is_the_source_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.version", missing)
    assert app.version() == p2psched.__version__


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "p2psched")
def test_a_command_s_help_says_what_it_does_its_defaults_and_an_example(path: Words) -> None:
    parser = COMMANDS[path]
    shown = help_of(path)
    assert parser.description, "no description"
    assert flat(parser.description.splitlines()[0]) in flat(shown)
    given = examples(parser)
    assert given, "no example"
    heading, _, shown_examples = shown.rpartition("\n\n")[2].partition("\n  p2psched ")
    assert re.fullmatch(r"examples?( \(.+\))?:", flat(heading)), "no example heading"
    lines = [line.strip() for line in ("  p2psched " + shown_examples).splitlines()]
    assert all(e in lines for e in given), "an example is not shown as written"
    assert any(shlex.split(e)[1 : 1 + len(path)] == list(path) for e in given), (
        "no example of this command itself"
    )
    entries = option_entries(shown)
    for action in parser._actions:
        if not action.option_strings:
            continue
        entry = entries[action.option_strings[0]]
        default = said_default(action)
        if default is not None:
            assert default in entry and "default" in entry, entry
        if "--json" in action.option_strings:
            assert action.help and len(entry) > len("--json") + 5, entry


@pytest.mark.parametrize("path", [p for p in COMMANDS if p], ids=" ".join)
def test_a_command_has_its_line_in_its_parent_s_list(path: Words) -> None:
    parent = COMMANDS[path[:-1]]
    (subcommands,) = (a for a in parent._actions if isinstance(a, argparse._SubParsersAction))
    (listed,) = (a for a in subcommands._choices_actions if a.dest == path[-1])
    assert listed.help, f"{path[-1]} has no line in its parent's list"
    assert flat(listed.help) in flat(help_of(path[:-1]))


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "p2psched")
def test_every_example_parses_as_written(path: Words) -> None:
    """The examples' options exist and their values are accepted, the job files they submit
    exist, and the data dirs they use are the devnet's folder (not the user's home)."""
    for example in examples(COMMANDS[path]):
        argv = shlex.split(example)
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"example does not parse: {example}")
        for word in argv:
            if word.endswith(".yaml"):
                assert (ROOT / word).is_file(), example
        for option, value in zip(argv, argv[1:], strict=False):
            if option in ("--data-dir", "--dir"):
                assert value == ".devnet" or value.startswith(".devnet/"), example


def test_the_readme_sections_help_refers_to_exist() -> None:
    """Help refers to the README only as `(README: <heading>)`, and each such heading is one of
    README.md's (## or ###)."""
    readme = (ROOT / "README.md").read_text()
    headings = {h.strip() for h in re.findall(r"^#{2,3} (.+)$", readme, flags=re.MULTILINE)}
    shown = flat(" ".join(help_of(path) for path in COMMANDS))
    referred = re.findall(r"\(README: ([^)]+)\)", shown)
    assert referred, "help refers to no README section"
    assert shown.count("README") == len(referred), "a README reference not as (README: ...)"
    missing = sorted(set(referred) - headings)
    assert not missing, f"help refers to sections README.md does not have: {missing}"
