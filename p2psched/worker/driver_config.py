"""The worker config's `[drivers.NAME]` tables, which the drivers and the task manager take as
they are: every driver's caps on what a task may ask of it (its timeout, the size of its
input), the command driver's programs, sandbox and limits, the http driver's endpoints.

Promises: a table is checked whole before the worker starts (a program's argv names an
executable file by its absolute path; a flag has its option; a URL has a scheme and a host);
a cap is never above what the wire carries (a week's timeout, `MAX_INPUT_BYTES` of input).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from p2psched.resources.driver_inputs import ParamRule
from p2psched.wire.deal import MAX_INPUT_BYTES, MAX_RESULT_BYTES
from p2psched.wire.messages import MAX_TASK_TIMEOUT_S
from p2psched.worker.config_values import TABLE, byte_cap, refuse, seconds
from p2psched.worker.policy import DEFAULT_MAX_TIMEOUT_S, DriverCaps

ANY_MODEL = "*"  # the [drivers.http] endpoint for models not listed by name
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# A result travels back in one message of at most MAX_RESULT_BYTES: stdout and stderr
# together, or a parsed HTTP answer, must fit.
_MAX_OUTPUT_BYTES = MAX_RESULT_BYTES // 3
_MAX_RESPONSE_BYTES = MAX_RESULT_BYTES * 2 // 3
_FITS_RESULT = "a result must fit one message"


def _endpoints(v: Any) -> Any:
    if not isinstance(v, dict):
        raise refuse(
            'must be a table of model = URL, like { "llama-3-8b" = "http://127.0.0.1:8000/" }'
        )
    for model, url in v.items():
        if not isinstance(url, str):
            raise refuse(f"must be a URL, not {url!r}", model)
        try:
            parts = urlsplit(url)
            _ = parts.port  # parsed lazily: a bad port must fail here, not on the first task
        except ValueError as e:
            raise refuse(f"{url!r} is not a URL ({e})", model) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise refuse(f"{url!r} must be an http:// or https:// URL with a host", model)
    return v


def _devices(v: Any) -> Any:
    if not isinstance(v, dict):
        raise refuse('must be a table of model = GPU index or list of them, like { "m" = 0 }')
    out = {}
    for model, said in v.items():
        indexes = said if isinstance(said, list | tuple) else [said]
        if not indexes or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 64 for i in indexes
        ):
            raise refuse(f"must be a GPU index 0..63 or a list of them, not {said!r}", model)
        out[model] = tuple(sorted(set(indexes)))
    return out


def _program(name: str, v: Any) -> Any:
    if not _PROGRAM_NAME.fullmatch(name):
        raise refuse("a program's name is 1-64 letters, digits, '.', '_', '+', '-'", name)
    if isinstance(v, CommandProgram):  # from code that builds a config
        v = v.model_dump()
    if not isinstance(v, dict):
        raise refuse(f"must be a table like {_PROGRAM_EXAMPLE}", name)
    argv = v.get("argv")
    # A tuple is what code that builds a config passes; the file gives a list.
    if (
        not isinstance(argv, list | tuple)
        or not argv
        or not all(isinstance(a, str) and "\0" not in a for a in argv)
    ):
        raise refuse(f'must be a list like ["/usr/bin/wc"], not {argv!r}', name, "argv")
    program = Path(argv[0])
    # An absolute path: what runs must not depend on the PATH the worker was started with.
    if not program.is_absolute():
        raise refuse(f"{argv[0]!r} must be an absolute path, like /usr/bin/wc", name, "argv")
    if not program.is_file():
        raise refuse(f"{argv[0]} does not exist (or is not a file)", name, "argv")
    if not os.access(program, os.X_OK):
        raise refuse(f"{argv[0]} is not executable", name, "argv")
    return {**v, "argv": tuple(argv)}


def _programs(v: Any) -> Any:
    if not isinstance(v, dict):
        raise refuse(f"must hold tables like [drivers.command.programs.wc]: {_PROGRAM_EXAMPLE}")
    return {name: _program(name, program) for name, program in v.items()}


def _no_allowlist(v: Any) -> None:
    raise refuse(
        "free arguments are no longer run (a task could pass any option to the program); "
        "declare each program with its typed parameters instead, like "
        f"[drivers.command.programs.wc] {_PROGRAM_EXAMPLE}; task inputs then give "
        "{program: wc, params: {lines: true, file: in.txt}, files: {in.txt: ...}}"
    )


def _option(v: Any) -> str:
    if not isinstance(v, str) or not 1 < len(v) <= 64 or not v.startswith("-") or "\0" in v:
        raise refuse(
            f'must be an option of 2-64 characters starting with "-", like "-l", not {v!r}'
        )
    return v


_PROGRAM_EXAMPLE = (
    'argv = ["/usr/bin/wc"], params = { lines = { type = "flag", arg = "-l" }, '
    'file = { type = "file" } }'
)


class DriverTable(BaseModel):
    """[drivers.NAME], what every driver's table may say: a task whose timeout or input is
    over these caps is refused (in its quote, its commitment, and when it is sent). The
    echo and sleep drivers' tables say nothing else."""

    model_config = TABLE

    max_timeout_s: Annotated[float, seconds(MAX_TASK_TIMEOUT_S)] = DEFAULT_MAX_TIMEOUT_S
    max_input_bytes: Annotated[
        int, byte_cap(MAX_INPUT_BYTES, "a task's input must fit one message")
    ] = MAX_INPUT_BYTES

    def caps(self) -> DriverCaps:
        return DriverCaps(self.max_timeout_s, self.max_input_bytes)


class CommandParam(BaseModel):
    """A parameter of a program: a flag, a whole number in a range, text of bounded length that
    cannot start with '-', or a file of the task's scratch directory. With `arg` it is written
    as an option (`arg`, then its value; a flag alone); without, after `--`."""

    model_config = TABLE

    type: Literal["flag", "integer", "string", "file"]
    arg: Annotated[str, BeforeValidator(_option)] | None = None
    min: int = 0
    max: int = 2**31 - 1
    max_length: Annotated[int, Field(ge=1, le=4096)] = 256

    @model_validator(mode="after")
    def _range(self) -> CommandParam:
        if self.min > self.max:
            raise refuse(f"min ({self.min}) is more than max ({self.max})", "min")
        return self

    def rule(self) -> ParamRule:
        return ParamRule(self.type, self.arg, self.min, self.max, self.max_length)


class CommandProgram(BaseModel):
    """[drivers.command.programs.NAME]: its fixed argv and the parameters a task may give it."""

    model_config = TABLE

    argv: tuple[str, ...]
    params: Mapping[str, CommandParam] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _flags_are_options(self) -> CommandProgram:
        for name, param in self.params.items():
            if param.type == "flag" and param.arg is None:
                raise refuse('a flag needs its option, like arg = "-l"', "params", name, "arg")
        return self


class CommandLimits(BaseModel):
    """[drivers.command] limits: what one task's processes may use (set with setrlimit)."""

    model_config = TABLE

    cpu_s: Annotated[int, Field(ge=1)] = 60
    memory_mb: Annotated[int, Field(ge=16)] = 1024  # address space, per process
    processes: Annotated[int, Field(ge=2)] = 64  # of the user the tasks run as
    file_size_mb: Annotated[int, Field(ge=1)] = 256
    # All a task writes, in its /task and its /tmp each: they are memory (tmpfs), not the disk.
    disk_mb: Annotated[int, Field(ge=1)] = 256
    open_files: Annotated[int, Field(ge=16)] = 256


class CommandDriverConfig(DriverTable):
    """[drivers.command]: the programs a task may run, by name, with their typed parameters; the
    sandbox they run in and its limits; and what of their output comes back."""

    programs: Annotated[Mapping[str, CommandProgram], BeforeValidator(_programs)] = Field(
        default_factory=dict
    )
    allow: Annotated[None, BeforeValidator(_no_allowlist)] = None
    sandbox: Literal["bwrap", "none"] = "bwrap"
    network: bool = False
    stderr: bool = False  # stdout comes back; stderr only when the operator says so
    limits: CommandLimits = CommandLimits()
    max_output_bytes: Annotated[int, byte_cap(_MAX_OUTPUT_BYTES, _FITS_RESULT)] = 1 << 20


class HttpDriverConfig(DriverTable):
    """[drivers.http]: where each model is served, and how long and large an answer may be."""

    endpoints: Annotated[Mapping[str, str], BeforeValidator(_endpoints)] = Field(
        default_factory=dict
    )
    # The GPUs (NVML's indexes, as nvidia-smi numbers them) each model's server runs on: its
    # tasks count as using them, so no command task is given them meanwhile.
    devices: Annotated[Mapping[str, tuple[int, ...]], BeforeValidator(_devices)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _devices_of_endpoints(self) -> HttpDriverConfig:
        for model in self.devices:
            if model not in self.endpoints:
                raise refuse(f"{model!r} has no endpoint in this table", "devices", model)
        return self

    timeout_s: Annotated[float, seconds(MAX_TASK_TIMEOUT_S)] = 120.0
    max_response_bytes: Annotated[int, byte_cap(_MAX_RESPONSE_BYTES, _FITS_RESULT)] = 4 << 20
