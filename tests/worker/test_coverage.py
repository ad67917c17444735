"""A worker that would advertise what its drivers cannot serve warns as it starts, naming the
driver, the model and the fix; the README's worker config, copied, warns of nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from p2psched.worker.config import load_config
from p2psched.worker.coverage import gaps
from tests.harness.processes import gate_and_worker

README = Path(__file__).resolve().parents[2] / "README.md"


def config_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return gaps(load_config(path))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '[worker]\ndrivers = ["http"]\nmodels = ["llama-3-8b"]\n',
            'add [drivers.http] endpoints = { "llama-3-8b" = "http://',
        ),
        (
            '[worker]\ndrivers = ["http"]\nmodels = ["a", "b"]\n'
            '[drivers.http]\nendpoints = { "a" = "http://127.0.0.1:8000/" }\n',
            'model "b" is advertised but driver "http" has no endpoint for it',
        ),
        (
            '[worker]\ndrivers = ["echo"]\nmodels = ["llama-3-8b"]\n',
            "models llama-3-8b are advertised but no enabled driver serves a model",
        ),
        (
            '[worker]\ndrivers = ["command"]\n[drivers.command]\nsandbox = "none"\n',
            'driver "command" is enabled but declares no program',
        ),
    ],
)
def test_each_gap_names_the_driver_the_model_and_the_fix(
    tmp_path: Path, text: str, says: str
) -> None:
    found = config_of(tmp_path, text)
    assert len(found) == 1 and says in found[0], found


@pytest.mark.parametrize(
    "text",
    [
        "",  # echo alone, no models
        '[worker]\ndrivers = ["http"]\nmodels = ["m"]\n[drivers.http]\nendpoints = { "*" = '
        '"http://127.0.0.1:8000/" }\n',
        '[worker]\ndrivers = ["command"]\n[drivers.command]\nsandbox = "none"\n'
        '[drivers.command.programs.wc]\nargv = ["/usr/bin/wc"]\n',
    ],
)
def test_a_worker_that_serves_what_it_advertises_has_no_gaps(tmp_path: Path, text: str) -> None:
    assert config_of(tmp_path, text) == []


def test_the_readme_worker_config_serves_what_it_advertises(tmp_path: Path) -> None:
    readme = README.read_text()
    block = readme.split("The worker config (TOML", 1)[1].split("```toml\n", 1)[1]
    tables = tomllib.loads(block.split("```", 1)[0])
    assert tables["worker"]["models"] and "http" in tables["worker"]["drivers"]
    # As a newcomer copies it, but for [schedulers], which names ids and a file of their own.
    kept = block.split("```", 1)[0].split("\n[")
    text = "\n[".join(t for t in kept if not t.startswith("schedulers]"))
    assert "[drivers.http]" in text and "[network]" in text
    assert config_of(tmp_path, text) == []


def test_worker_join_warns_on_stderr_and_still_serves(tmp_path: Path) -> None:
    config = '[worker]\ndrivers = ["echo", "http"]\nmodels = ["llama-3-8b"]\n'
    with gate_and_worker(tmp_path, config) as (_, address, _, worker):
        assert address  # it joined and serves its echo tasks
        worker.terminate()
        _, err = worker.communicate(timeout=20)
    assert 'driver "http" is enabled but [drivers.http] has no endpoints' in err
    assert 'add [drivers.http] endpoints = { "llama-3-8b" = "http://' in err
    assert "WARNING" in err.upper()
