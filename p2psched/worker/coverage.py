"""What a worker's config advertises that its enabled drivers cannot serve: the http driver
with no endpoint for a model it lists, the command driver with no program, a model no driver
serves. Such a worker is found by schedulers and then fails every task it takes.

Promises: each gap is one line naming the driver, the model and what to add to the config;
a config whose drivers serve all it advertises has none. Pure: the caller says them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from p2psched.worker.driver_config import ANY_MODEL

if TYPE_CHECKING:
    from p2psched.worker.config import WorkerConfig

_log = logging.getLogger(__name__)

_ENDPOINT = '"{model}" = "http://127.0.0.1:8000/v1/completions"'


def gaps(config: WorkerConfig) -> list[str]:
    """Each thing `config` advertises that its drivers cannot serve, with the fix."""
    found: list[str] = []
    endpoints = config.http_driver.endpoints
    if "http" in config.drivers:
        if not endpoints:
            example = _ENDPOINT.format(model=(config.models or ("MODEL",))[0])
            found.append(
                'driver "http" is enabled but [drivers.http] has no endpoints, so every http '
                f"task fails: add [drivers.http] endpoints = {{ {example} }} (a model's name, "
                f'or "{ANY_MODEL}" for any), or take "http" out of [worker] drivers'
            )
        elif ANY_MODEL not in endpoints:
            found.extend(
                f'model "{m}" is advertised but driver "http" has no endpoint for it, so its '
                f"tasks fail: add {_ENDPOINT.format(model=m)} to [drivers.http] endpoints, or "
                "take it out of [worker] models"
                for m in config.models
                if m not in endpoints
            )
    elif config.models:
        found.append(
            f"models {', '.join(config.models)} are advertised but no enabled driver serves a "
            'model (the http driver does): add "http" to [worker] drivers and [drivers.http] '
            f"endpoints = {{ {_ENDPOINT.format(model=config.models[0])} }}, or take them out "
            "of [worker] models"
        )
    if "command" in config.drivers and not config.command_driver.programs:
        found.append(
            'driver "command" is enabled but declares no program, so every command task fails: '
            'add one, like [drivers.command.programs.wc] argv = ["/usr/bin/wc"], or take '
            '"command" out of [worker] drivers'
        )
    return found


def warn_of_gaps(config: WorkerConfig) -> None:
    """Log a warning for each gap, as the worker starts."""
    for gap in gaps(config):
        _log.warning("%s", gap)
