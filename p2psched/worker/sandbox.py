"""Where a command runs: the argv that starts a task's program under its resource limits
(`launch.py`) inside a bubblewrap sandbox, and the check that a worker can build one.

Promises: in the sandbox the system is read-only (/usr, /lib*, /bin, /sbin and a few files of
/etc), its input files are in its cwd (`/task`, read-only), /task and /tmp are its only
writable places, each a tmpfs of `disk_mb` (so what a task writes is bounded in all, not only
per file, and leaves nothing on the host's disk), nothing else of the host exists (the
worker's data dir and home are not there; of the GPUs, only the device nodes of those the
task was given, which CUDA_VISIBLE_DEVICES names by UUID), every namespace is new (the network
too, unless `network = true`), the environment is a fixed minimal one, and the sandbox dies
with the worker. A task's processes run under its limits (CPU seconds, address space,
processes, file size, open files), as `nobody` when the worker is root.
`check` raises `SandboxError` (a `ConfigError`: the worker refuses to start) when bwrap is
missing or cannot make its namespaces.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from p2psched.resources.detect import Device
from p2psched.worker import launch
from p2psched.worker.config import CommandDriverConfig, ConfigError

_log = logging.getLogger(__name__)

TASK_DIR = "/task"  # where the scratch directory is, seen from inside the sandbox
# A fixed PATH, not the worker's: a task's behaviour must not depend on how the worker was started.
PATH = "/usr/local/bin:/usr/bin:/bin"
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs read of /etc (the loader, alternatives, names of users, time zone, locale); the
# network's files only with the network.
_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "locale.alias",
)
_ETC_NETWORK = ("resolv.conf", "hosts", "ssl", "ca-certificates", "gai.conf")
# What CUDA opens besides a GPU's own /dev/nvidiaN: bound only for a task that has a GPU.
_NVIDIA_SHARED = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
_FIX_MISSING = "install bubblewrap (apt-get install bubblewrap)"
_FIX_NAMESPACES = (
    "let it create namespaces (sysctl -w kernel.unprivileged_userns_clone=1, "
    "user.max_user_namespaces > 0, and on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0; "
    "or in a container, run it with user namespaces allowed)"
)
_NO_SANDBOX = 'or set sandbox = "none" in [drivers.command] to run tasks unconfined (unsafe)'


class SandboxError(ConfigError):
    """The worker cannot sandbox commands; the message says how to fix that."""


def task_user() -> tuple[int, int]:
    """Who a task runs as: a root worker hands it to `nobody` (-1: the worker's own user)."""
    if os.geteuid() != 0:
        return -1, -1
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin")


def command_line(
    config: CommandDriverConfig,
    scratch: Path,
    argv: list[str],
    info_fd: int = -1,
    devices: tuple[Device, ...] = (),
) -> list[str]:
    """What to start for `argv` (its files relative to the scratch directory) on `devices`
    (its GPUs): the launcher with the limits, then the sandbox, then the program. bwrap writes
    its sandbox's init (`child-pid`, as JSON) to `info_fd` (-1: not asked); killing that init
    kills every process of the task, and the launcher ends once all of them are reaped."""
    lim = config.limits
    uid, gid = task_user()
    launcher = [
        sys.executable, "-I", "-S", launch.__file__,
        str(lim.cpu_s), str(lim.memory_mb << 20), str(lim.processes),
        str(lim.file_size_mb << 20), str(lim.open_files), str(uid), str(gid),
    ]  # fmt: skip
    if config.sandbox == "none":
        return [*launcher, "exec", "--", *argv]
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxError(f"bwrap is not installed: {_FIX_MISSING}")
    info = ["--info-fd", str(info_fd)] if info_fd >= 0 else []
    options = _bwrap_options(config, scratch, devices)
    return [*launcher, "reap", "--", bwrap, *info, *options, "--", *argv]


def visible_devices(devices: tuple[Device, ...]) -> str:
    """CUDA_VISIBLE_DEVICES for a task on `devices`: their UUIDs, since CUDA numbers GPUs
    its own way (fastest first, unless CUDA_DEVICE_ORDER says otherwise), not as NVML does;
    empty (no GPU at all) for a task given none."""
    return ",".join(d.uuid for d in devices)


def _gpu_options(devices: tuple[Device, ...]) -> list[str]:
    """The device nodes of the task's GPUs (and what CUDA needs besides), none of the others."""
    if not devices:
        return []
    nodes = [f"/dev/nvidia{d.minor}" for d in devices if d.minor is not None]
    nodes += [f"/dev/{name}" for name in _NVIDIA_SHARED]
    return [word for node in nodes for word in ("--dev-bind-try", node, node)]


def _bwrap_options(
    config: CommandDriverConfig, scratch: Path, devices: tuple[Device, ...]
) -> list[str]:
    options: list[str] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    etc = _ETC + (_ETC_NETWORK if config.network else ())
    for name in etc:
        options += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    size = _sized(config.limits.disk_mb << 20)
    options += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", TASK_DIR]
    for entry in sorted(os.scandir(scratch), key=lambda e: e.name):  # the task's input files
        if entry.is_file(follow_symlinks=False):
            options += ["--ro-bind", entry.path, f"{TASK_DIR}/{entry.name}"]
    options += [
        "--proc", "/proc", "--dev", "/dev", *_gpu_options(devices), "--chdir", TASK_DIR,
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", PATH, "--setenv", "HOME", TASK_DIR,
        "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
        "--setenv", VISIBLE_DEVICES, visible_devices(devices),
    ]  # fmt: skip
    if config.network:
        options.append("--share-net")
    return options


@cache
def _sized(size: int) -> list[str]:
    """bwrap's words for a tmpfs of `size` bytes; none where bwrap is too old to say it (before
    0.8: its tmpfs is then bounded by the kernel's default, half the memory, and said so)."""
    said = subprocess.run(
        [bwrap_path() or "bwrap", "--help"], capture_output=True, text=True, check=False
    )
    if "--size" in said.stdout + said.stderr:
        return ["--size", str(size)]
    _log.warning(
        "bwrap here cannot size a tmpfs (bubblewrap 0.8 or later can): a task's /task and /tmp "
        "are bounded per file only (file_size_mb), not in all (disk_mb)"
    )
    return []


def init_pid(info: bytes) -> int | None:
    """The host pid of the sandbox's init, from what bwrap wrote to its info fd."""
    try:
        pid = json.loads(info)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def environment(scratch: Path, devices: tuple[Device, ...] = ()) -> dict[str, str]:
    """The environment of an unsandboxed command (in the sandbox, bwrap sets its own)."""
    return {
        "PATH": PATH,
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        VISIBLE_DEVICES: visible_devices(devices),
    }


def check(config: CommandDriverConfig) -> None:
    """Refuse to run commands unsandboxed unless the operator said so (then warn, every start)."""
    if config.sandbox == "none":
        _log.warning(
            'the command driver runs tasks WITHOUT a sandbox ([drivers.command] sandbox = "none"):'
            " a task can read and change whatever this worker's user can"
        )
        return
    if bwrap_path() is None:
        raise SandboxError(
            f"the command driver needs bubblewrap (bwrap) and it is not installed: {_FIX_MISSING}, "
            f"{_NO_SANDBOX}"
        )
    for name, program in config.programs.items():
        real = os.path.realpath(program.argv[0])
        if not any(real.startswith(f"{root}/") for root in _SYSTEM):
            raise SandboxError(
                f"[drivers.command] programs.{name}: {program.argv[0]} is outside what the sandbox "
                f"shows of this machine ({', '.join(_SYSTEM[:4])}, /lib*): install it under "
                "/usr/local"
            )
    problem = _probe(config.network)
    if problem is not None:
        raise SandboxError(
            f"bwrap cannot build the command driver's sandbox here ({problem}): "
            f"{_FIX_NAMESPACES}, {_NO_SANDBOX}"
        )


@cache
def _probe(network: bool) -> str | None:
    """None if a sandbox like a task's starts here; else bwrap's own words (once per process)."""
    config = CommandDriverConfig(network=network)
    with tempfile.TemporaryDirectory(prefix="p2psched-probe-") as scratch:
        uid, gid = task_user()
        if uid >= 0:
            os.chown(scratch, uid, gid)
        argv = command_line(config, Path(scratch), ["/bin/true"])
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
    if done.returncode == 0:
        return None
    said = done.stderr.decode(errors="replace").strip().splitlines()
    return said[-1] if said else f"exit status {done.returncode}"
