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
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
CONFIG_FOLDER = "config_folder"  # validation context: where a key file's relative name starts
_MAX_SECRET_CHARS = 4096
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# What the driver sets itself, or what would change where or how a request goes.
_OWN_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "accept",
        "accept-encoding",
        "transfer-encoding",
        "connection",
    }
)


def _endpoints(v: Any) -> Any:
    if not isinstance(v, dict):
        raise refuse(
            'must be a table of model = URL, like { "llama-3-8b" = "http://127.0.0.1:8000/" }'
        )
    # A model = "URL" is the short form of a table with only its url.
    return {m: {"url": _url(e, m)} if not isinstance(e, dict) else e for m, e in v.items()}


def _url(url: Any, *at: str) -> str:
    if not isinstance(url, str):
        raise refuse(f"must be a URL, not {url!r}", *at)
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed lazily: a bad port must fail here, not on the first task
    except ValueError as e:
        raise refuse(f"{url!r} is not a URL ({e})", *at) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(f"{url!r} must be an http:// or https:// URL with a host", *at)
    try:
        parts.hostname.encode("idna")  # as its name lookup will (an empty or long label fails)
    except UnicodeError:
        raise refuse(f"{parts.hostname[:80]!r} is not a host name", *at) from None
    if parts.username is not None or parts.password is not None:
        # A URL is logged and shown to the operator; a credential must not ride in it.
        raise refuse(
            "must hold no user or password: give a key as api_key_env or api_key_file", *at
        )
    return url


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
        raise refuse(
            f"{name[:64]!r} is not a header an endpoint may be sent (a name of letters, digits "
            f"and -, not one of {', '.join(sorted(_OWN_HEADERS))})"
        )
    return name


def _secret_value(value: str, source: str) -> str:
    """A credential as a header carries it: one line of visible ASCII (never quoted back)."""
    value = value.strip()
    if not value:
        raise refuse(f"{source} is empty")
    if len(value) > _MAX_SECRET_CHARS or not all(" " <= c <= "~" for c in value):
        raise refuse(
            f"{source} is not one line of at most {_MAX_SECRET_CHARS} printable ASCII "
            "characters, as an HTTP header must be"
        )
    return value


def _from_env(variable: str, *at: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise refuse(
            f"the environment variable {variable} is not set in the worker's environment", *at
        )
    try:
        return _secret_value(value, f"the environment variable {variable}")
    except PydanticCustomError as e:
        raise refuse(str(e), *at) from None


def _from_file(name: str, folder: Path | None) -> str:
    """The key in the file `name` (relative to the config's folder), which only the worker's
    user may read or write: like ssh with a private key, a file others can read is refused."""
    path = Path(name) if folder is None else folder / name
    try:
        # (non-blocking: a named pipe would otherwise hold the worker's start until written)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise refuse(f"cannot read {path} ({e.strerror or e})", "api_key_file") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(f"{path} is not a plain file", "api_key_file")
        if mode & 0o077:
            raise refuse(
                f"{path} is open to group or others (mode {stat.S_IMODE(mode):04o}); a key "
                f"file must be the worker's user's alone: chmod 600 {path}",
                "api_key_file",
            )
        data = f.read(_MAX_SECRET_CHARS + 2)
    try:
        return _secret_value(data.decode("ascii"), str(path))
    except UnicodeDecodeError:
        raise refuse(f"{path} is not ASCII text", "api_key_file") from None
    except PydanticCustomError as e:
        raise refuse(str(e), "api_key_file") from None


def _health_path(v: Any) -> Any:
    if v is not None and (not isinstance(v, str) or not re.fullmatch(r"/[!-~]{0,255}", v)):
        raise refuse(f'must be a path on the endpoint\'s server, like "/health", not {v!r}')
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


class HttpEndpoint(BaseModel):
    """[drivers.http.endpoints.NAME], or NAME = "URL": where a model is served, the
    credentials sent there (from the worker's environment or a key file, read when the
    config is), and what its health check asks (`health_path` on the URL's server; by default
    an OpenAI-compatible URL's `models` list, and any other URL is only reached).

    Its credentials are sent to this endpoint alone: they are kept out of the model's fields,
    so no repr, dump or comparison of a config shows them (`headers` gives them)."""

    model_config = TABLE

    url: Annotated[str, BeforeValidator(lambda v: _url(v))]
    api_key_env: str | None = None
    api_key_file: str | None = None
    headers_env: Mapping[Annotated[str, BeforeValidator(_header_name)], str] = Field(
        default_factory=dict
    )
    health_path: Annotated[str | None, BeforeValidator(_health_path)] = None
    _headers: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _credentials(self, info: ValidationInfo) -> HttpEndpoint:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise refuse("give the key once: api_key_env or api_key_file, not both")
        folder = (info.context or {}).get(CONFIG_FOLDER)
        headers = {n: _from_env(v, "headers_env", n) for n, v in self.headers_env.items()}
        key = None
        if self.api_key_env is not None:
            key = _from_env(self.api_key_env, "api_key_env")
        elif self.api_key_file is not None:
            key = _from_file(self.api_key_file, folder)
        if key is not None:
            if any(n.lower() == "authorization" for n in headers):
                raise refuse("an api key is sent as Authorization: leave it out of headers_env")
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        return self

    @property
    def headers(self) -> Mapping[str, str]:
        """What every request to this endpoint carries: its credentials (secret)."""
        return self._headers


class HttpDriverConfig(DriverTable):
    """[drivers.http]: where each model is served, and how long and large an answer may be."""

    endpoints: Annotated[Mapping[str, HttpEndpoint], BeforeValidator(_endpoints)] = Field(
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
