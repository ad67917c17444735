"""A node's home: the data directory that holds its key, its store and its API's files, and how
anything private is written there.

Promises: a data directory this code makes is mode 0700, and one it finds looser (a group or
others may enter it) is tightened to 0700, with a warning; one another user owns is refused
(PermissionError); files written through `write_private` are mode 0600 from their first byte,
and replace the old one all at once; a data directory is run in by one process at a time
(`running_in` holds an flock on `node.lock` in it for as long as that process runs a node
there, and the kernel lets go of it when the process dies, however it dies).
Apart from `identity` (which imports `cryptography`) so that a command finds the directory of
the node it asks without paying for keys it never loads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_log = logging.getLogger("p2psched.home")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
LOCK_FILE = "node.lock"  # flocked by the process that runs a node here; holds its pid


class DataDirInUse(Exception):
    """Another running process runs a node in this data directory; the message names it."""


def default_data_dir() -> Path:
    """`$P2PSCHED_HOME` if set, else `~/.p2psched`."""
    env = os.environ.get("P2PSCHED_HOME")
    return Path(env).expanduser() if env else Path.home() / ".p2psched"


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter: made 0700 (its missing parents with the
    usual mode), or, if it is looser, tightened to 0700 with a warning; PermissionError if it
    is another user's."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    st = path.stat()
    if st.st_uid != os.geteuid():
        # Its owner could swap or read what we write there (a path another user made first).
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}): "
            "its owner could read or replace this node's files; use a directory of your own"
        )
    if st.st_mode & 0o077:
        # Another local user could read what an older version or a umask left readable.
        _log.warning(
            "%s was mode %o: tightened to 0700 (other local users could read its files)",
            path,
            st.st_mode & 0o777,
        )
        path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as mode 0600: through a new file renamed over the old one, so no
    reader sees it half written and no one else can open it even for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


@contextmanager
def running_in(data_dir: Path, role: str) -> Iterator[None]:
    """Hold `data_dir` for this process while it runs a node (`role` says which) there, or
    raise DataDirInUse naming the process that holds it. Two processes on one directory would
    each take the other's files for their own: delete its `api.json`, withdraw its ad."""
    path = private_dir(data_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise DataDirInUse(_in_use(data_dir, holder)) from None
    try:
        # (the file stays: unlinking it on exit would let a third process lock a new one
        # while a second still waits on the old)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({role})\n".encode())
        yield
    finally:
        os.close(fd)


def _in_use(data_dir: Path, holder: str) -> str:
    """Why a second process may not run a node on `data_dir`, and what to do instead: each
    piece of advice one that works as printed (a control API is named only if one answers
    there: a `submit`'s own node serves none)."""
    pid = re.match(r"pid (\d+)", holder)
    stop = f"`kill -TERM {pid[1]}`" if pid else "`kill -TERM` its pid"
    where = shlex.quote(str(data_dir))
    # (the API's `api.json`: there for as long as a control API serves on the data dir)
    ask = (
        f"ask it through its control API (`p2psched jobs --data-dir {where}`), "
        if (data_dir / "api.json").exists()
        else ""
    )
    return (
        f"{data_dir} is in use by {holder}: stop that one first (Ctrl-C, or {stop}), {ask}"
        "or give this one a --data-dir of its own"
    )
